// Every wake-up that a blocked call depends on, measured with the test hook
// FBUF_TEST_UNSLICED_SLEEP=1 (set by main() below, before the first fbuf
// call): every sleep then lasts until its deadline, so a missing wake-up
// shows as a waiter stuck for its whole timeout (5 s here) instead of being
// rescued by the next 20 or 50 ms slice. Each waiter must be woken within
// kWakeBound of the event it waits for.
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/base/wake.h"
#include "fbuf/fbuf.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/handshake.capnp.h"
#include "ipc/layout.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = 5s;           // what the waiters would sleep without a wake-up
constexpr auto kWakeBound = 300ms;      // how late a wake-up may be
constexpr auto kBeforeEvent = 100ms;    // the waiter is asleep by then

std::string service_name(const char* what) {
  return std::string("wake/") + what + "/" + std::to_string(::getpid());
}

// Runs `wait` on another thread and records when it returned.
class Waiter {
 public:
  template <class F>
  explicit Waiter(F wait)
      : thread_([this, wait = std::move(wait)]() mutable {
          ok_ = wait();
          done_at_ = Clock::now();
          done_.store(true);
        }) {}
  ~Waiter() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_.load(); }
  // Joins, and returns how long after `event` the waiter returned.
  std::chrono::milliseconds latency_after(Clock::time_point event) {
    thread_.join();
    return std::chrono::duration_cast<std::chrono::milliseconds>(done_at_ - event);
  }
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  Clock::time_point done_at_{};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

void send_filled(Sender& tx, int n) {
  for (int i = 0; i < n; ++i) {
    auto b = tx.try_allocate(64);
    ASSERT_TRUE(b);
    std::memset(b->data(), 'w', 64);
    ASSERT_FALSE(tx.send(std::move(*b), 64, 1s));
  }
}

TEST(TestHook, MakesEverySleepLastUntilItsDeadline) {
  // Otherwise the tests below could pass with a wake-up missing.
  EXPECT_EQ(detail::sleep_slice(20ms), std::chrono::nanoseconds::max());
}

TEST(Doorbell, AnAllocateWaiterWakesWhenARemoteReceiverReturnsAView) {
  Pool pool(PoolOptions{.name = "wake-return", .classes = {{4096, 2}}});
  const std::string service = service_name("return");
  Sender tx(pool, service);
  Receiver rx = Receiver::connect(service);  // the socket path, as from another process
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_filled(tx, 2);
  std::vector<View> held;
  for (int i = 0; i < 2; ++i) {
    auto v = rx.receive(1s);
    ASSERT_TRUE(v);
    held.push_back(std::move(*v));
  }
  Waiter w([&] { return static_cast<bool>(pool.allocate(64, kTimeout)); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  const auto event = Clock::now();
  held.pop_back();
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
}

// An in-process View's release takes no lock: it is pushed on the pool's
// list of local returns, which the waiter's next try collects.
TEST(Doorbell, AnAllocateWaiterWakesWhenAnInProcessReceiverReleasesAView) {
  Pool pool(PoolOptions{.name = "wake-local", .classes = {{4096, 2}}});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  send_filled(tx, 2);
  std::vector<View> held;
  for (int i = 0; i < 2; ++i) {
    auto v = rx.receive(1s);
    ASSERT_TRUE(v);
    held.push_back(std::move(*v));
  }
  Waiter w([&] { return static_cast<bool>(pool.allocate(64, kTimeout)); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  const auto event = Clock::now();
  std::thread releaser([&] { held.pop_back(); });
  releaser.join();
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
}

TEST(Doorbell, AnAllocateWaiterWakesWhenAReceiverHoldingBuffersIsKilled) {
  const std::string service = service_name("killed");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  // Forked before this process starts any thread.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      Receiver rx = Receiver::connect(service, {.connect_timeout = 10s});
      std::vector<View> held;
      while (held.size() < 2) {
        auto v = rx.receive(10s);
        if (!v) ::_exit(5);
        held.push_back(std::move(*v));
      }
      if (::write(ready[1], "h", 1) != 1) ::_exit(2);
      for (;;) ::pause();
    } catch (...) {
      ::_exit(2);
    }
  }
  ::close(ready[1]);
  // Killed and reaped however the test ends.
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{pid};
  Pool pool(PoolOptions{.name = "wake-killed", .classes = {{4096, 2}}});
  Sender tx(pool, service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
  send_filled(tx, 2);
  pollfd p{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  Waiter w([&] { return static_cast<bool>(pool.allocate(64, kTimeout)); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  reap.pid = -1;
  // Measured from when the process is gone for good, its sockets closed:
  // tearing down a large address space (a sanitizer's shadow) takes time.
  const auto event = Clock::now();
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
  ::close(ready[0]);
}

// A receiver that takes nothing and detaches (shuts its socket for
// writing): the sender takes back what was queued for it.
TEST(Doorbell, AnAllocateWaiterWakesWhenAReceiverDetachesLeavingBuffersUnconsumed) {
  Pool pool(PoolOptions{.name = "wake-detach", .classes = {{4096, 2}}});
  const std::string service = service_name("detach");
  Sender tx(pool, service);
  detail::UniqueFd sock = ipc::connect_service(service, 5s);
  {
    capnp::MallocMessageBuilder m;
    m.initRoot<ipc::proto::ControlMessage>().initHello().setVersion(ipc::kProtocolVersion);
    ASSERT_FALSE(ipc::send_message(sock.get(), m, {}));
    ipc::Datagram welcome;
    ASSERT_FALSE(ipc::receive_message(sock.get(), welcome, 5s));
    ASSERT_EQ(welcome.fds.size(), ipc::kWelcomeFds);
  }
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_filled(tx, 2);
  Waiter w([&] { return static_cast<bool>(pool.allocate(64, kTimeout)); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  const auto event = Clock::now();
  ASSERT_EQ(::shutdown(sock.get(), SHUT_WR), 0);
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
}

TEST(RingWake, AReceiveWaiterWakesWhenSomethingIsSent) {
  Pool pool(PoolOptions{.name = "wake-receive", .classes = {{4096, 2}}});
  const std::string service = service_name("receive");
  Sender tx(pool, service);
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  Waiter w([&] { return static_cast<bool>(rx.receive(kTimeout)); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  const auto event = Clock::now();
  send_filled(tx, 1);
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
}

TEST(RingWake, ASendBlockedOnAFullRingWakesWhenTheReceiverTakesOne) {
  Pool pool(PoolOptions{.name = "wake-send", .classes = {{4096, 4}}});
  const std::string service = service_name("send");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 2});
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_filled(tx, 2);
  auto b = tx.try_allocate(64);
  ASSERT_TRUE(b);
  Waiter w([&] { return !tx.send(std::move(*b), 64, kTimeout); });
  std::this_thread::sleep_for(kBeforeEvent);
  ASSERT_FALSE(w.done());
  const auto event = Clock::now();
  auto v = rx.receive(1s);
  ASSERT_TRUE(v);
  const auto late = w.latency_after(event);
  EXPECT_TRUE(w.ok());
  EXPECT_LT(late, kWakeBound);
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  // Before the first fbuf call: sleep_slice() reads it once.
  ::setenv("FBUF_TEST_UNSLICED_SLEEP", "1", 1);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

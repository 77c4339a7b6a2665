// kill -9 of either side at random moments: nothing already sent is lost,
// nothing lent to a dead receiver stays lent, and the survivor carries on.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <atomic>
#include <optional>
#include <random>
#include <thread>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "frame.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using fbuf::testing::Child;

std::string service_name(const char* what) {
  return std::string("fault/") + what + "/" + std::to_string(getpid());
}

// Sends `count` frames starting at *seq.
void stream(Sender& tx, std::uint64_t& seq, std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i, ++seq) {
    const std::size_t len = test::frame_length(seq, seq % 8 == 0 ? 65536 : 4096);
    auto b = tx.allocate(len, 10s);
    ASSERT_TRUE(b) << b.error().message();
    test::fill_frame(b->data(), len, seq);
    ASSERT_FALSE(tx.send(std::move(*b), len, 10s));
  }
}

// Waits for the pool to be all free again (returns are drained lazily, so
// this asks for stats, which drains, until it is or time runs out).
bool pool_all_free(Pool& pool, std::chrono::seconds within = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = pool.stats();
    if (s.free == s.total) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

TEST(KillReceiver, PoolReturnsToAllFreeAfterEachOfTwentyKills) {
  Pool pool(PoolOptions{.name = "kill-receiver", .classes = {{4096, 32}, {65536, 8}}});
  const std::string service = service_name("kill-receiver");
  std::optional<Sender> sender(std::in_place, pool, service);
  Sender& tx = *sender;
  // A receiver that lives through all the kills and must miss nothing.
  Child steady(FBUF_FAULT_PEER, {"consume", service});
  ASSERT_EQ(steady.line(), "ready");
  ASSERT_TRUE(tx.wait_for_receivers(1, 10s));

  std::mt19937 rng(12345);
  std::uint64_t seq = 0;
  for (int round = 0; round < 24; ++round) {
    // The victim holds up to 12 views when it dies, and has more in its ring.
    Child victim(FBUF_FAULT_PEER, {"consume", service, "12"});
    ASSERT_EQ(victim.line(), "ready");
    ASSERT_TRUE(tx.wait_for_receivers(2, 10s));
    stream(tx, seq, 1 + rng() % 400);
    victim.kill(SIGKILL);
    // Keep sending while the sender has not yet noticed: the ring to the
    // dead receiver fills and send() must neither fail nor hang.
    stream(tx, seq, rng() % 200);
    victim.wait(10s);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (tx.receiver_count() != 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(tx.receiver_count(), 1u) << "round " << round;
    EXPECT_TRUE(pool_all_free(pool)) << "round " << round << ": " << pool.stats().free << " of "
                                     << pool.stats().total << " free";
  }
  EXPECT_EQ(tx.stats().receivers_lost, 24u);
  stream(tx, seq, 100);
  // Closing the sender ends the steady receiver's stream; it checks it
  // saw every frame, in order, intact.
  sender.reset();
  EXPECT_EQ(steady.line(), "received " + std::to_string(seq) + " last " + std::to_string(seq - 1));
  int status = steady.wait(60s).raw;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(pool_all_free(pool));
}

TEST(KillSender, ReceiverGetsEveryCompletedSendThenPeerGone) {
  std::mt19937 rng(777);
  for (int round = 0; round < 6; ++round) {
    const std::string service = service_name("kill-sender") + "/" + std::to_string(round);
    int counter_fd = memfd_create("completed", 0);
    ASSERT_GE(counter_fd, 0);
    ASSERT_EQ(ftruncate(counter_fd, 4096), 0);
    auto* completed = static_cast<std::atomic<std::uint64_t>*>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, counter_fd, 0));
    ASSERT_NE(static_cast<void*>(completed), MAP_FAILED);

    Child producer(FBUF_FAULT_PEER, {"produce", service, std::to_string(counter_fd)},
                   {{counter_fd, counter_fd}});
    ASSERT_TRUE(producer.started());
    Receiver rx = Receiver::connect(service, {.connect_timeout = 10s});

    // Receive slowly enough that the ring and pool fill up, so the kill
    // lands both while the sender blocks and while it runs.
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(5 + rng() % 60);
    std::uint64_t received = 0, last = 0;
    bool killed = false;
    std::uint64_t sent_before_kill = 0;
    for (;;) {
      if (!killed && std::chrono::steady_clock::now() >= kill_at) {
        producer.kill(SIGKILL);
        producer.wait(10s);
        killed = true;
        // acquire: pairs with the producer's release store.
        sent_before_kill = completed->load(std::memory_order_acquire);
      }
      auto v = rx.receive(killed ? 10s : 1ms);
      if (!v) {
        if (v.error() == make_error_code(Errc::kTimedOut) && !killed) continue;
        ASSERT_EQ(v.error(), make_error_code(Errc::kPeerGone)) << v.error().message();
        break;
      }
      std::uint64_t seq = 0;
      ASSERT_TRUE(test::check_frame(v->data(), v->size(), &seq)) << "torn frame after " << last;
      ASSERT_EQ(seq, received) << "gap or duplicate";
      last = seq;
      ++received;
      if (!killed && rng() % 4 == 0) std::this_thread::sleep_for(50us);
    }
    // Every send that completed before the kill arrived; at most one more
    // (completed, but killed before it stored its count) may have too.
    EXPECT_GE(received, sent_before_kill) << "round " << round;
    EXPECT_LE(received, sent_before_kill + 1) << "round " << round;
    EXPECT_GT(received, 0u);
    munmap(completed, 4096);
    close(counter_fd);
  }
}

TEST(RestartedSender, ReceiversReconnectToTheNewOne) {
  Pool pool(PoolOptions{.name = "restart", .classes = {{4096, 16}, {65536, 4}}});
  const std::string service = service_name("restart");
  Child rx(FBUF_FAULT_PEER, {"reconnect", service, "3"});
  std::uint64_t total = 0;
  for (int round = 0; round < 3; ++round) {
    // A new sender under the same name: the old one's socket is gone with
    // it (abstract namespace), so the name is free at once.
    Sender tx(pool, service);
    ASSERT_TRUE(tx.wait_for_receivers(1, 10s)) << "round " << round;
    std::uint64_t seq = 0;
    stream(tx, seq, 500);
    total += seq;
    // ~Sender: the receiver drains, sees kPeerGone and reconnects.
  }
  for (int round = 0; round < 3; ++round) EXPECT_EQ(rx.line(), "round " + std::to_string(round) + " received 500");
  int status = rx.wait(60s).raw;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(total, 1500u);
  EXPECT_TRUE(pool_all_free(pool));
}

}  // namespace
}  // namespace fbuf

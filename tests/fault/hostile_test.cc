// Hostile peers found by review: a receiver that rewrites its ring slots
// while it detaches, peers that rewrite the ring geometry in the shared
// header, floods of idle or half-closed connections, a producer out of fds,
// a service that never accepts, a receiver that dies after its Sender is
// gone. Each attack costs the honest side nothing: no crash, no buffer
// freed while held, none stuck in flight, no spinning, no missed timeout.
//
// Peers that may crash run in a child process (fork, before the parent
// starts any thread), so a crash shows as a wait status instead of ending
// the test binary.
#include <capnp/message.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/handshake.capnp.h"
#include "ipc/receiver_core.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using detail::Mapping;
using detail::UniqueFd;
using Clock = std::chrono::steady_clock;
// Where the ring types and the doorbell live.
namespace rg = fbuf::detail;

std::string service_name(const char* what) {
  return std::string("hostile/") + what + "/" + std::to_string(getpid());
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds within = 5000ms) {
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return p();
}

std::uint64_t checksum(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

// A child process running `body` (its return value is the exit status).
// Killed and reaped when it goes out of scope, so a failed assertion never
// leaves a child behind.
class ChildProcess {
 public:
  explicit ChildProcess(const std::function<int()>& body) : pid_(::fork()) {
    if (pid_ == 0) {
      int rc = 2;
      try {
        rc = body();
      } catch (...) {
        rc = 2;
      }
      ::_exit(rc);
    }
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  // True while it runs; otherwise its wait status goes to *status.
  bool running(int* status) {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, status, WNOHANG) == 0) return true;
    pid_ = -1;
    return false;
  }
  // Waits for it to end and returns its wait status.
  int wait() {
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  void kill() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    wait();
  }

 private:
  pid_t pid_;
};

// A description of how a child ended, for assertion messages.
std::string describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

int count_open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

// Waits for one byte on `fd`; false on timeout or EOF.
bool wait_byte(int fd, std::chrono::milliseconds timeout = 10s) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  char c;
  return ::read(fd, &c, 1) == 1;
}

void send_hello(int sock) {
  capnp::MallocMessageBuilder m;
  m.initRoot<ipc::proto::ControlMessage>().initHello().setVersion(ipc::kProtocolVersion);
  ASSERT_FALSE(ipc::send_message(sock, m, {}));
}

// A receiver that speaks the protocol by hand, so it can lie: it writes
// its rings and its channel header as it pleases.
struct Hostile {
  // `early`, if given, gets the channel header the moment the Welcome
  // arrives, before anything else is looked at.
  explicit Hostile(const std::string& service, const std::function<void(ipc::ChannelHeader*)>& early = {}) {
    sock = ipc::connect_service(service, 5s);
    send_hello(sock.get());
    ipc::Datagram dg;
    EXPECT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
    if (early && dg.fds.size() == ipc::kWelcomeFds) {
      early_map = Mapping::map(dg.fds[1].get(), detail::page_size(), PROT_READ | PROT_WRITE, "early");
      early(reinterpret_cast<ipc::ChannelHeader*>(early_map.data()));
    }
    info = ipc::decode_welcome(dg.words);
    EXPECT_EQ(dg.fds.size(), ipc::kWelcomeFds);
    ring = Mapping::map(dg.fds[1].get(), info.ring_bytes, PROT_READ | PROT_WRITE, "ring");
    bell = Mapping::map(dg.fds[2].get(), detail::page_size(), PROT_READ | PROT_WRITE, "bell");
    if (dg.fds.size() == ipc::kWelcomeFds) ready = std::move(dg.fds[3]);
    header = reinterpret_cast<ipc::ChannelHeader*>(ring.data());
    send_slots = reinterpret_cast<ipc::Descriptor*>(ring.data() + ipc::ChannelHeader::send_slots_offset());
    return_slots = reinterpret_cast<ipc::Descriptor*>(
        ring.data() + ipc::ChannelHeader::return_slots_offset(info.send_capacity));
    in = rg::RingConsumer(&header->send, send_slots, info.send_capacity);
    out = rg::RingProducer(&header->ret, return_slots, info.return_capacity);
  }
  // The next descriptor, waiting up to a second for it.
  ipc::Descriptor take() {
    ipc::Descriptor d{};
    EXPECT_TRUE(eventually([&] { return in.pop(d) == rg::RingStatus::kOk; }, 1000ms));
    return d;
  }
  void give_back(const ipc::Descriptor& d) {
    EXPECT_TRUE(out.push(d));
    rg::ring_doorbell(reinterpret_cast<rg::DoorbellHeader*>(bell.data()));
  }

  UniqueFd sock;
  UniqueFd ready;  // the receiver's end of its readiness pair
  ipc::WelcomeInfo info;
  Mapping early_map;
  Mapping ring;
  Mapping bell;
  ipc::ChannelHeader* header = nullptr;
  ipc::Descriptor* send_slots = nullptr;
  ipc::Descriptor* return_slots = nullptr;
  rg::RingConsumer in;
  rg::RingProducer out;
};

// --- 1. Detach takes back only what the owner itself queued. ---

// Each round has a fresh pool, so every buffer is at generation 1 and a
// descriptor's index alone says which buffer it names. The liar takes a
// few of the buffers sent to it and gives them back (so those are held by
// the honest receiver alone), leaves the rest unconsumed in its ring, shuts
// its socket for writing and keeps flipping the index in each unconsumed
// slot between the buffer queued there and one it gave back. Detach must
// take back exactly the unconsumed buffers, from the owner's own record:
// the honest receiver's views never change and are never handed out again
// while held, and when everyone has gone every buffer is free.
TEST(DetachRace, AReceiverRewritingItsUnconsumedSlotsCannotFreeWhatAnotherReceiverHolds) {
  constexpr std::uint32_t kBuffers = 128, kPerRound = 112, kTaken = 16;
  constexpr int kRounds = 200;
  // A buffer handed out again is overwritten whole; its start is enough.
  constexpr std::size_t kChecked = 256;
  for (int round = 0; round < kRounds && !HasFailure(); ++round) {
    Pool pool(PoolOptions{.name = "detach-race", .classes = {{4096, kBuffers}}});
    const std::string service = service_name("detach-race") + "/" + std::to_string(round);
    Sender tx(pool, service, SenderOptions{.ring_capacity = 128});
    Receiver honest = Receiver::connect(service);
    auto liar = std::make_unique<Hostile>(service);
    ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
    for (std::uint32_t i = 0; i < kPerRound; ++i) {
      auto b = tx.allocate(4096, 1s);
      ASSERT_TRUE(b);
      std::memset(b->data(), (round * 31 + static_cast<int>(i) * 7) & 0xff, 4096);
      std::memcpy(b->data(), &i, sizeof i);
      ASSERT_FALSE(tx.send(std::move(*b), 4096, 1s));
    }
    std::vector<View> held;
    std::vector<std::uint64_t> sums;
    std::set<std::uint32_t> held_index;
    for (std::uint32_t i = 0; i < kPerRound; ++i) {
      auto v = honest.receive(1s);
      ASSERT_TRUE(v) << v.error().message();
      sums.push_back(checksum(v->data(), kChecked));
      held_index.insert(v->index());
      held.push_back(std::move(*v));
    }
    std::vector<std::uint32_t> given_back, queued;
    for (std::uint32_t i = 0; i < kTaken; ++i) {
      const ipc::Descriptor d = liar->take();
      given_back.push_back(d.index);
      liar->give_back(d);
    }
    const std::uint32_t mask = liar->info.send_capacity - 1;
    for (std::uint32_t p = kTaken; p < kPerRound; ++p) queued.push_back(liar->send_slots[p & mask].index);
    tx.stats();  // collect the returns: the given-back buffers are the honest receiver's alone now

    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> passes{0};
    std::thread scribbler([&] {
      for (std::uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        for (std::uint32_t p = kTaken; p < kPerRound; ++p) {
          const std::uint32_t index = (n + p) % 2 == 0 ? queued[p - kTaken] : given_back[(p + n) % kTaken];
          std::atomic_ref<std::uint32_t>(liar->send_slots[p & mask].index).store(index, std::memory_order_relaxed);
        }
        passes.store(n + 1, std::memory_order_relaxed);
      }
    });
    while (passes.load() < 16) std::this_thread::yield();
    ASSERT_EQ(::shutdown(liar->sock.get(), SHUT_WR), 0);
    const bool detached = eventually([&] { return tx.receiver_count() == 1; }, 2000ms);
    std::this_thread::sleep_for(2ms);
    stop = true;
    scribbler.join();
    ASSERT_TRUE(detached) << "round " << round;

    for (std::size_t i = 0; i < held.size(); ++i)
      ASSERT_EQ(checksum(held[i].data(), kChecked), sums[i]) << "round " << round << ": a held view changed";
    // Every buffer nobody holds is free, and none that is held is.
    std::vector<Buffer> fresh;
    while (auto b = pool.try_allocate(4096)) {
      EXPECT_EQ(held_index.count(b->index()), 0u) << "round " << round << ": buffer " << b->index()
                                                  << " handed out while the honest receiver holds it";
      std::memset(b->data(), 0xee, b->capacity());
      fresh.push_back(std::move(*b));
    }
    EXPECT_EQ(fresh.size(), kBuffers - kPerRound) << "round " << round;
    for (std::size_t i = 0; i < held.size(); ++i)
      ASSERT_EQ(checksum(held[i].data(), kChecked), sums[i]) << "round " << round << ": a held view changed";
    fresh.clear();
    held.clear();
    liar.reset();
    honest = Receiver();
    ASSERT_TRUE(eventually([&] { return pool.stats().free == kBuffers && tx.receiver_count() == 0; }, 2000ms))
        << "round " << round << ": " << pool.stats().in_flight << " buffers stuck in flight after everyone left";
  }
}

// --- 2. Geometry agreed at the handshake is never read back. ---

// A producer in a child process that sends to whoever connects, tolerating
// every error a lying receiver can cause, until `stop_fd` reads EOF.
int produce_until_stopped(const std::string& service, int ready_fd, int stop_fd) {
  Pool pool(PoolOptions{.name = "geometry-producer", .classes = {{4096, 16}}});
  Sender tx(pool, service, SenderOptions{.ring_capacity = 8});
  if (::write(ready_fd, "r", 1) != 1) return 2;
  for (;;) {
    pollfd p{stop_fd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) return 0;
    auto b = tx.allocate(64, 10ms);
    if (b) {
      std::memset(b->data(), 'p', 64);
      (void)tx.send(std::move(*b), 64, 10ms);
    }
    tx.stats();  // collect returns
    (void)pool.stats();
  }
}

TEST(RingGeometry, AProducerSurvivesAReceiverThatRewritesTheSharedCapacities) {
  const std::string service = service_name("geometry-producer");
  int ready[2], stop[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(stop, O_CLOEXEC), 0);
  ChildProcess producer([&] {
    ::close(stop[1]);
    return produce_until_stopped(service, ready[1], stop[0]);
  });
  ASSERT_TRUE(producer.started());
  ::close(stop[0]);
  ::close(ready[1]);
  ASSERT_TRUE(wait_byte(ready[0]));
  // The capacities are rewritten as soon as the Welcome arrives (while the
  // producer may still be setting up its end of the channel), then a
  // return is published.
  auto absurd = [](ipc::ChannelHeader* h) {
    h->send_capacity = 0x80000000u;
    h->return_capacity = 0x80000000u;
  };
  for (int attempt = 0; attempt < 40; ++attempt) {
    {
      Hostile liar(service, absurd);
      absurd(liar.header);
      liar.header->ret.tail.store(1);
      rg::ring_doorbell(reinterpret_cast<rg::DoorbellHeader*>(liar.bell.data()));
      std::this_thread::sleep_for(10ms);
    }
    std::this_thread::sleep_for(5ms);
    int status = 0;
    ASSERT_TRUE(producer.running(&status)) << "attempt " << attempt << ": the producer died, " << describe(status);
  }
  ::close(stop[1]);
  const int status = producer.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe(status);
  ::close(ready[0]);
}

// A Welcome for a 4 x 4 KiB pool with an 8-slot send ring and a 4-slot
// return ring, and the memfds that go with it.
struct FakeChannel {
  static constexpr std::uint32_t kSend = 8, kReturn = 4;
  UniqueFd pool = detail::make_sealed_memfd("fake-pool", 4 * 4096);
  UniqueFd ring = detail::make_sealed_memfd("fake-ring", ipc::ChannelHeader::bytes(kSend, kReturn));
  UniqueFd bell = detail::make_sealed_memfd("fake-bell", detail::page_size());
  Mapping ring_map = Mapping::map(ring.get(), ipc::ChannelHeader::bytes(kSend, kReturn), PROT_READ | PROT_WRITE, "r");
  Mapping bell_map = Mapping::map(bell.get(), detail::page_size(), PROT_READ | PROT_WRITE, "b");
  rg::ReadyPair ready = rg::make_ready_pair();
  ipc::ChannelHeader* header = nullptr;

  FakeChannel() {
    header = detail::init_channel_header(ring_map.data(), kSend, kReturn);
    auto* d = new (bell_map.data()) rg::DoorbellHeader{};
    d->magic = rg::kDoorbellMagic;
    d->version = rg::kDoorbellVersion;
  }
  void welcome(int sock) {
    capnp::MallocMessageBuilder m;
    auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
    w.setVersion(ipc::kProtocolVersion);
    w.setPoolName("fake");
    w.setPoolSize(4 * 4096);
    auto c = w.initClasses(1);
    c[0].setBufferSize(4096);
    c[0].setCount(4);
    w.setSendCapacity(kSend);
    w.setReturnCapacity(kReturn);
    w.setRingBytes(ipc::ChannelHeader::bytes(kSend, kReturn));
    const int fds[ipc::kWelcomeFds] = {pool.get(), ring.get(), bell.get(), ready.receiver.get()};
    ASSERT_FALSE(ipc::send_message(sock, m, fds));
  }
};

// The consumer runs in a child: it connects `kRounds` times and receives
// and releases until each stream ends. The parent is a fake sender that,
// from before each Welcome until it closes the channel, keeps toggling the
// header's capacities between the agreed values and absurd ones while it
// publishes valid descriptors and collects the returns. The consumer may
// refuse a handshake whose header it sees wrong (kProtocol); it must never
// crash.
TEST(RingGeometry, AConsumerSurvivesASenderThatTogglesTheSharedCapacities) {
  constexpr int kRounds = 200;
  const std::string service = service_name("geometry-consumer");
  ChildProcess consumer([&] {
    for (int r = 0; r < kRounds; ++r) {
      std::optional<Receiver> rx;
      try {
        rx.emplace(Receiver::connect(service, {.connect_timeout = 10s}));
      } catch (const Error& e) {
        if (e.code() != make_error_code(Errc::kProtocol)) return 2;
        continue;  // refused the header: fine
      }
      std::vector<View> kept;
      for (;;) {
        auto v = rx->receive(200ms);
        if (v) {
          kept.push_back(std::move(*v));
          if (kept.size() > 2) kept.erase(kept.begin());  // releases the oldest
          continue;
        }
        if (v.error() == make_error_code(Errc::kBadDescriptor)) continue;
        break;  // kPeerGone, kCorrupt, kTimedOut: this round is over
      }
    }
    return 0;
  });
  ASSERT_TRUE(consumer.started());
  UniqueFd listener = ipc::listen_service(service);
  for (int round = 0; round < kRounds; ++round) {
    int status = 0;
    pollfd p{listener.get(), POLLIN, 0};
    while (::poll(&p, 1, 100) == 0 && consumer.running(&status)) {
    }
    if (!consumer.running(&status)) {
      // It refused some handshakes, so it has used up its rounds early.
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe(status);
      return;
    }
    UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(conn);
    ipc::Datagram hello;
    ASSERT_FALSE(ipc::receive_message(conn.get(), hello, 5s));
    FakeChannel ch;
    std::atomic<bool> stop{false};
    std::thread toggler([&] {
      for (std::uint32_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const bool absurd = (i % 2) == 1;
        ch.header->send_capacity = absurd ? 0x80000000u : FakeChannel::kSend;
        ch.header->return_capacity = absurd ? 0x80000000u : FakeChannel::kReturn;
      }
    });
    ch.welcome(conn.get());
    auto* slots = reinterpret_cast<ipc::Descriptor*>(ch.ring_map.data() + ipc::ChannelHeader::send_slots_offset());
    auto* ret_slots = reinterpret_cast<ipc::Descriptor*>(
        ch.ring_map.data() + ipc::ChannelHeader::return_slots_offset(FakeChannel::kSend));
    rg::RingProducer out(&ch.header->send, slots, FakeChannel::kSend);
    rg::RingConsumer returns(&ch.header->ret, ret_slots, FakeChannel::kReturn);
    bool alive = true;
    const auto until = Clock::now() + 20ms;
    for (std::uint32_t i = 0; alive && Clock::now() < until; ++i) {
      (void)out.push(ipc::Descriptor{0, i % 4, 1, 0, 16, 0, i});
      ipc::Descriptor d;
      while (returns.pop(d) == rg::RingStatus::kOk) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      alive = consumer.running(&status);
    }
    stop = true;
    toggler.join();
    if (!alive) {
      // A consumer that refused some handshakes uses its rounds up early.
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "round " << round << ": the consumer died, " << describe(status);
      return;
    }
    ch.header->sender_closed.store(1);
  }
  const int status = consumer.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe(status);
}

// The order inside Receiver::arm(): a publish() whose descriptor the
// receiver had already taken may still take the receiver's next arming
// (its load of consumer_armed comes after its tail store) and send a
// record for it. arm() must not drain that record: it belongs to the
// arming that is about to sleep. The fake owner plays exactly that
// publish() from inside arm(), through the test hook, at the moment the
// word is set; the fd must then be readable, and the next publish (which
// finds the word taken) must not be needed to wake the loop. With the
// drain after the word is set, the record is eaten, the fd stays silent
// and the consumer sleeps on a ring that the next publish() will not
// signal (a lost wake-up peer_bench found).
TEST(ReadinessOrder, ARecordForTheNewArmingIsNeverDrainedByThatArming) {
  const std::string service = service_name("arm-order");
  UniqueFd listener = ipc::listen_service(service);
  FakeChannel ch;
  std::thread owner([&] {
    pollfd p{listener.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(conn);
    ipc::Datagram hello;
    ASSERT_FALSE(ipc::receive_message(conn.get(), hello, 5s));
    ch.welcome(conn.get());
    // Kept open until the test ends: a closed control socket would read
    // as a hang-up.
    std::this_thread::sleep_for(3s);
  });
  Receiver rx = Receiver::connect(service, {.connect_timeout = 5s});
  auto* slots = reinterpret_cast<ipc::Descriptor*>(ch.ring_map.data() + ipc::ChannelHeader::send_slots_offset());
  rg::RingProducer out(&ch.header->send, slots, FakeChannel::kSend);

  // One ordinary round first, so the receiver comes to the racy arm() as
  // an event loop does: armed, woken by a record, the buffer taken.
  ASSERT_TRUE(rx.arm());
  ASSERT_EQ(out.reserve(), rg::RingStatus::kOk);
  out.write(ipc::Descriptor{0, 0, 1, 0, 16, 0, 0});
  ASSERT_TRUE(out.publish());  // armed: this publish signals
  rg::signal_ready(ch.ready.owner.get());
  pollfd woke{rx.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&woke, 1, 2000), 1);
  auto first = rx.try_receive();
  ASSERT_TRUE(first) << first.error().message();

  // That same publish() now reaches its load of consumer_armed, after the
  // receiver set it: it takes the arming and signals.
  struct Late {
    FakeChannel* ch;
    int taken = 0;
  } late{&ch};
  detail::set_arm_hook_for_tests(
      [](void* c) {
        auto* l = static_cast<Late*>(c);
        if (l->ch->header->send.consumer_armed.exchange(0) != 0) {
          ++l->taken;
          rg::signal_ready(l->ch->ready.owner.get());
        }
      },
      &late);
  const bool sleeps = rx.arm();
  detail::set_arm_hook_for_tests(nullptr, nullptr);
  ASSERT_EQ(late.taken, 1);
  ASSERT_TRUE(sleeps) << "the ring is empty: the receiver should wait";

  // The loop waits on the fd: the record of its arming must be there.
  pollfd p{rx.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 2000), 1) << "the record sent for this arming was drained by arm(): a lost wake-up";

  // And the stream goes on: the next buffer is received after the wake-up.
  ASSERT_EQ(out.reserve(), rg::RingStatus::kOk);
  out.write(ipc::Descriptor{0, 1, 1, 0, 16, 0, 1});
  if (out.publish()) rg::signal_ready(ch.ready.owner.get());
  auto second = rx.try_receive();
  EXPECT_TRUE(second) << second.error().message();
  owner.join();
}

// --- 4. The control plane cannot be denied to honest receivers. ---

// Opens `n` connections to `service` and keeps them open, saying nothing.
std::vector<UniqueFd> open_idle(const std::string& service, int n) {
  std::vector<UniqueFd> socks;
  for (int i = 0; i < n; ++i) {
    try {
      socks.push_back(ipc::connect_service(service, 5s));
    } catch (const Error&) {
      break;
    }
  }
  return socks;
}

TEST(ControlPlane, IdleConnectionsFromStrangersAndFromOneUserCannotLockOutAReceiver) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  const std::string service = service_name("idle");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  std::vector<std::unique_ptr<ChildProcess>> children;
  // Forked before the Sender starts its control thread; each retries until
  // the service appears, opens its idle connections, reports, and waits.
  auto idle_child = [&](bool stranger, int n) {
    return std::make_unique<ChildProcess>([&, stranger, n] {
      if (stranger && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 3;
      auto socks = open_idle(service, n);
      if (::write(ready[1], "r", 1) != 1) return 2;
      ::pause();
      return 0;
    });
  };
  children.push_back(idle_child(true, 70));
  children.push_back(idle_child(true, 70));
  children.push_back(idle_child(false, 70));  // one process of this user, many connections
  for (int i = 0; i < 20; ++i) children.push_back(idle_child(false, 4));
  Pool pool(PoolOptions{.name = "idle", .classes = {{4096, 4}}});
  Sender tx(pool, service);
  for (std::size_t i = 0; i < children.size(); ++i) ASSERT_TRUE(wait_byte(ready[0])) << "child " << i;
  std::this_thread::sleep_for(100ms);  // let the control thread take them all in
  const auto start = Clock::now();
  try {
    Receiver rx = Receiver::connect(service, {.connect_timeout = 3s});
    EXPECT_TRUE(rx);
  } catch (const Error& e) {
    ADD_FAILURE() << "an honest receiver was locked out: " << e.what();
  }
  EXPECT_LT(Clock::now() - start, 3s);
  ::close(ready[0]);
  ::close(ready[1]);
}

// Connections that shut their socket for writing and hold nothing leave
// the sender's books at once: its fds stay bounded and max_receivers still
// admits honest receivers (and no more than that).
TEST(ControlPlane, ReceiversThatDetachHoldingNothingAreDroppedAndMaxReceiversHolds) {
  constexpr int kRounds = 60;
  Pool pool(PoolOptions{.name = "detached", .classes = {{4096, 4}}});
  const std::string service = service_name("detached");
  Sender tx(pool, service, SenderOptions{.max_receivers = 2});
  pool.stats();
  const int fds_before = count_open_fds();
  std::vector<UniqueFd> kept;  // the detached receivers' sockets: 1 fd each, on our side
  for (int i = 0; i < kRounds; ++i) {
    Hostile h(service);
    ASSERT_EQ(::shutdown(h.sock.get(), SHUT_WR), 0);
    kept.push_back(std::move(h.sock));
    // One at a time, so max_receivers is never the reason for a refusal.
    ASSERT_TRUE(eventually([&] { return tx.receiver_count() == 0; }, 2000ms)) << "round " << i;
  }
  pool.stats();  // drops the finished return inlets
  const int sender_fds = count_open_fds() - fds_before - kRounds;
  EXPECT_LE(sender_fds, 4) << "the sender kept the detached receivers' connections";
  {
    Receiver a = Receiver::connect(service, {.connect_timeout = 2s});
    Receiver b = Receiver::connect(service, {.connect_timeout = 2s});
    EXPECT_TRUE(tx.wait_for_receivers(2, 2s));
    EXPECT_THROW(Receiver::connect(service, {.connect_timeout = 500ms}), Error);
  }
}

// A producer out of fds (RLIMIT_NOFILE reached) cannot accept; the
// connections wait in the backlog. Its control thread must not spin on the
// level-triggered listening socket meanwhile.
TEST(ControlPlane, AProducerOutOfFdsDoesNotSpinOnPendingConnections) {
  const std::string service = service_name("emfile");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ChildProcess producer([&] {
    Pool pool(PoolOptions{.name = "emfile", .classes = {{4096, 4}}});
    Sender tx(pool, service);
    rlimit lim{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 2;
    while (::fcntl(0, F_DUPFD_CLOEXEC, 0) >= 0) {
    }
    if (errno != EMFILE) return 2;
    if (::write(ready[1], "r", 1) != 1) return 2;
    for (;;) ::pause();
  });
  ASSERT_TRUE(producer.started());
  ::close(ready[1]);
  ASSERT_TRUE(wait_byte(ready[0]));
  std::vector<UniqueFd> waiting;
  for (int i = 0; i < 4; ++i) waiting.push_back(ipc::connect_service(service, 2s));
  auto cpu_ticks = [&] {
    std::ifstream f("/proc/" + std::to_string(producer.pid()) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    std::istringstream rest(s.substr(s.rfind(')') + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15; ++i) {  // fields 14 and 15: utime, stime
      rest >> field;
      if (i == 14) utime = std::stol(field);
      if (i == 15) stime = std::stol(field);
    }
    return utime + stime;
  };
  std::this_thread::sleep_for(100ms);
  const long before = cpu_ticks();
  const auto start = Clock::now();
  std::this_thread::sleep_for(1s);
  const long used = cpu_ticks() - before;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double share = static_cast<double>(used) / static_cast<double>(::sysconf(_SC_CLK_TCK)) / seconds;
  EXPECT_LT(share, 0.1) << "the producer used " << share * 100 << "% of a CPU with nothing to do";
  ::close(ready[0]);
}

// --- 7. A handshake the sender cannot complete is refused in words. ---

// The producer's file-size limit (RLIMIT_FSIZE) is below the size of a
// channel's ring memfd, so setting a receiver up fails after its connection
// was taken (ftruncate: EFBIG). The Reject must go out on that connection,
// which the control thread still owns, so the receiver learns why at once
// instead of seeing it closed without a word. (A file-size limit rather
// than the fd limit: a sanitizer's runtime needs fds of its own.)
TEST(ControlPlane, AReceiverTheProducerCannotSetUpIsToldWhyOnItsOwnConnection) {
  const std::string service = service_name("no-ring");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ChildProcess producer([&] {
    Pool pool(PoolOptions{.name = "no-ring", .classes = {{4096, 4}}});
    Sender tx(pool, service);
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    if (::write(ready[1], "r", 1) != 1) return 2;
    for (;;) ::pause();
  });
  ASSERT_TRUE(producer.started());
  ::close(ready[1]);
  ASSERT_TRUE(wait_byte(ready[0]));
  for (int attempt = 0; attempt < 3; ++attempt) {
    const auto start = Clock::now();
    try {
      Receiver rx = Receiver::connect(service, {.connect_timeout = 2s});
      ADD_FAILURE() << "connected to a producer that cannot make a channel";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), make_error_code(Errc::kProtocol)) << e.what();
      EXPECT_NE(std::string(e.what()).find("rejected"), std::string::npos) << e.what();
    }
    EXPECT_LT(Clock::now() - start, 1s) << "attempt " << attempt;
  }
  ::close(ready[0]);
}

// A service that never accepts, its backlog full: connect keeps its timeout.
TEST(ControlPlane, ConnectKeepsItsTimeoutWhenTheBacklogIsFull) {
  const std::string service = service_name("backlog");
  UniqueFd listener = ipc::listen_service(service);
  const std::string addr = ipc::service_address(service);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, addr.data(), addr.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + addr.size());
  std::vector<UniqueFd> queued;
  for (int i = 0; i < 4096; ++i) {
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    ASSERT_TRUE(s);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0) {
      ASSERT_EQ(errno, EAGAIN);
      break;
    }
    queued.push_back(std::move(s));
  }
  ASSERT_LT(queued.size(), 4096u) << "the backlog never filled";
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      Receiver rx = Receiver::connect(service, {.connect_timeout = 300ms});
      return "connected";
    } catch (const Error& e) {
      return e.what();
    }
  });
  const auto start = Clock::now();
  const bool returned = result.wait_for(3s) == std::future_status::ready;
  const auto took = Clock::now() - start;
  if (!returned) listener.reset();  // unblocks a connect stuck in the kernel
  const std::string outcome = result.get();
  ASSERT_TRUE(returned) << "connect(timeout 300 ms) was still blocked after 3 s";
  EXPECT_LT(took, 1s);
  EXPECT_NE(outcome, "connected");
}

// --- 12. A receiver that dies after its Sender is gone. ---

// The Sender is destroyed while a receiver process holds buffers; the pool
// lives on and the test keeps allocating from a class that has free
// buffers (4 GiB of 4 MiB buffers, more than any cache, so each
// allocation collects returns without needing a slow drain; the memfd
// stays sparse). Then the receiver is killed: its buffers must come back
// within a bound, found by those ordinary allocations.
TEST(OrphanedReceiver, KilledAfterItsSenderIsGoneGivesItsBuffersBackWithinABound) {
  const std::string service = service_name("orphan");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ChildProcess receiver([&] {
    Receiver rx = Receiver::connect(service, {.connect_timeout = 10s});
    std::vector<View> held;
    while (held.size() < 2) {
      auto v = rx.receive(10s);
      if (!v) return 5;
      held.push_back(std::move(*v));
    }
    if (::write(ready[1], "h", 1) != 1) return 2;
    for (;;) ::pause();
  });
  ASSERT_TRUE(receiver.started());
  ::close(ready[1]);
  Pool pool(PoolOptions{.name = "orphan", .classes = {{4096, 2}, {std::size_t{4} << 20, 1024}}});
  {
    Sender tx(pool, service);
    ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
    for (int i = 0; i < 2; ++i) {
      auto b = tx.allocate(64, 1s);
      ASSERT_TRUE(b);
      ASSERT_FALSE(tx.send(std::move(*b), 64, 1s));
    }
    ASSERT_TRUE(wait_byte(ready[0]));
  }
  ASSERT_EQ(pool.stats().in_flight, 2u);
  // The orphaned return inlet keeps the receiver's connection open (one fd
  // here) until everything it lent has come back.
  const int fds_held = count_open_fds();
  receiver.kill();
  const auto killed = Clock::now();
  bool back = false;
  while (Clock::now() - killed < 500ms) {
    auto big = pool.try_allocate(std::size_t{4} << 20);
    ASSERT_TRUE(big);
    big->reset();
    if (count_open_fds() < fds_held) {
      back = true;
      break;
    }
    std::this_thread::sleep_for(1ms);
  }
  const auto took = Clock::now() - killed;
  EXPECT_TRUE(back) << "the dead receiver's buffers were not collected by 500 ms of allocations";
  EXPECT_LT(took, 200ms);
  PoolStats s = pool.stats();
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.free, s.total);
  ::close(ready[0]);
}

// --- The readiness fd. ---

// A receiver that keeps its consumer_armed word set all the time (so the
// sender signals at every publish), turns its readiness socket blocking
// and never reads it, so the socket fills; floods the owner's end; later
// it shuts the socket and closes it. The sender signals with MSG_DONTWAIT | MSG_NOSIGNAL on its
// own end: no send may block on it, and none may raise SIGPIPE (which
// would end this test binary).
TEST(ReadinessFd, AReceiverThatFillsOrBlocksItsSocketCannotStallTheSender) {
  constexpr std::uint32_t kBuffers = 64;
  constexpr std::uint64_t kSends = 20000;
  Pool pool(PoolOptions{.name = "ready-hostile", .classes = {{4096, kBuffers}}});
  const std::string service = service_name("ready-fill");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 64});
  Hostile h(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  ASSERT_TRUE(h.ready);
  const int flags = ::fcntl(h.ready.get(), F_GETFL);
  ASSERT_EQ(::fcntl(h.ready.get(), F_SETFL, flags & ~O_NONBLOCK), 0);

  // The hostile receiver: arms all the time, takes every descriptor and
  // gives it back at once, never reads its fd.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> taken{0};
  std::thread consumer([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      h.header->send.consumer_armed.store(1, std::memory_order_relaxed);
      ipc::Descriptor d{};
      if (h.in.pop(d) == rg::RingStatus::kOk) {
        EXPECT_TRUE(h.out.push(d));
        rg::ring_doorbell(reinterpret_cast<rg::DoorbellHeader*>(h.bell.data()));
        taken.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  // Sends n buffers; how long that took, or max() if one failed.
  auto send_all = [&](std::uint64_t n) -> Clock::duration {
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      auto b = tx.allocate(64, 2s);
      EXPECT_TRUE(b) << b.error().message();
      if (!b) return Clock::duration::max();
      const std::error_code ec = tx.send(std::move(*b), 64, 2s);
      EXPECT_FALSE(ec) << ec.message();
      if (ec) return Clock::duration::max();
    }
    return Clock::now() - t0;
  };
  const auto filling = send_all(kSends);
  ASSERT_NE(filling, Clock::duration::max());
  // The socket is full: bytes the sender queued and nobody read.
  int queued = 0;
  ASSERT_EQ(::fcntl(h.ready.get(), F_SETFL, flags | O_NONBLOCK), 0);
  char c;
  while (::recv(h.ready.get(), &c, 1, MSG_DONTWAIT) == 1) ++queued;
  ASSERT_EQ(::fcntl(h.ready.get(), F_SETFL, flags & ~O_NONBLOCK), 0);
  EXPECT_GT(queued, 50) << "the socket never filled: the test did not test anything";
  // The other way: the receiver floods the owner's end, which the Sender's
  // own readiness fd watches. Arming drains a bounded amount and returns.
  ASSERT_EQ(::fcntl(h.ready.get(), F_SETFL, flags | O_NONBLOCK), 0);
  int flooded = 0;
  while (::send(h.ready.get(), &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) ++flooded;
  EXPECT_GT(flooded, 50);
  ASSERT_EQ(::fcntl(h.ready.get(), F_SETFL, flags & ~O_NONBLOCK), 0);
  const auto t_arm = Clock::now();
  for (int i = 0; i < 100; ++i) (void)tx.arm(64);
  EXPECT_LT(Clock::now() - t_arm, 2s);
  // Refill it, then shut it and close it under the sender's signals.
  EXPECT_NE(send_all(kSends / 4), Clock::duration::max());
  ASSERT_EQ(::shutdown(h.ready.get(), SHUT_RDWR), 0);
  EXPECT_NE(send_all(kSends / 4), Clock::duration::max());
  h.ready.reset();
  const auto closed = send_all(kSends / 4);
  ASSERT_NE(closed, Clock::duration::max());
  // The last sends may still sit in the ring.
  EXPECT_TRUE(eventually([&] { return taken.load() == kSends + 3 * (kSends / 4); }));
  stop.store(true, std::memory_order_relaxed);
  consumer.join();
  EXPECT_EQ(taken.load(), kSends + 3 * (kSends / 4));
  // No send waited on the socket: the whole run took a few seconds at most
  // (each send's own timeout is 2 s, so one blocked send fails above).
  EXPECT_LT(filling, 10s);
  EXPECT_LT(closed, 10s);
  SenderStats s = tx.stats();
  EXPECT_EQ(s.receivers_lost, 0u);
}

}  // namespace
}  // namespace fbuf

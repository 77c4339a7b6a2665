// Receiving through the readiness fd in an epoll loop, across threads and
// processes: no buffer is ever left in the ring while the consumer sleeps
// in epoll_wait (a lost wake-up), the end of the stream and a producer's
// death wake the loop, and WaitSet serves three producers at once.
//
// How a lost wake-up shows: the producers never pause for more than a
// millisecond until they are done, and the consumer waits in epoll_wait
// with a 2 s timeout. A wait that times out is a wake-up that did not
// come (the producer has sent, or is blocked on a full ring), and fails
// the test at once, 2 s after it was lost. Nothing here is rescued by a
// retry slice: epoll_wait's timeout is the only one, and it fails rather
// than retries; the library's own sleeps run unsliced
// (FBUF_TEST_UNSLICED_SLEEP=1, set by main()).
//
// The binary re-executes itself as the producer process:
//   event_loop_test --produce SERVICE COUNT SEED [--hang]
// sends COUNT numbered buffers in bursts with random gaps, then exits (the
// end of the stream) or, with --hang, prints "sent" and waits to be killed;
// and as a slow consumer process for the sending end's fd:
//   event_loop_test --consume SERVICE COUNT SEED
// takes COUNT numbered buffers, pausing and holding views at random.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string g_self;

constexpr int kEpollTimeoutMs = 2000;

std::string service_name(const char* what) {
  return std::string("it/event-loop/") + what + "/" + std::to_string(::getpid());
}

// Bursts of 1..16 buffers; between bursts no gap, a spin of a few
// microseconds, or a sleep of up to 300 us, so that the consumer is caught
// in every phase of arming: awake, arming, re-checking, asleep.
// False (with a message) if an allocation or a send failed.
bool produce(Sender& tx, std::uint64_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uint64_t i = 0;
  while (i < count) {
    const std::uint64_t burst = std::min<std::uint64_t>(count - i, 1 + rng() % 16);
    for (std::uint64_t k = 0; k < burst; ++k, ++i) {
      auto b = tx.allocate(64, 10s);
      if (!b) {
        std::fprintf(stderr, "producer: allocate %llu: %s\n", static_cast<unsigned long long>(i),
                     b.error().message().c_str());
        return false;
      }
      std::memcpy(b->data(), &i, sizeof i);
      if (auto ec = tx.send(std::move(*b), sizeof i, 10s); ec) {
        std::fprintf(stderr, "producer: send %llu: %s\n", static_cast<unsigned long long>(i), ec.message().c_str());
        return false;
      }
    }
    switch (rng() % 3) {
      case 0:
        break;
      case 1: {
        const auto until = Clock::now() + std::chrono::microseconds(rng() % 20);
        while (Clock::now() < until) {
        }
        break;
      }
      default:
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
    }
  }
  return true;
}

Pool make_pool(const char* name) { return Pool(PoolOptions{.name = name, .classes = {{4096, 64}}}); }

int produce_main(int argc, char** argv) {
  if (argc < 5) return 2;
  const std::string service = argv[2];
  const std::uint64_t count = std::strtoull(argv[3], nullptr, 10);
  const auto seed = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10));
  const bool hang = argc > 5 && std::strcmp(argv[5], "--hang") == 0;
  Pool pool = make_pool("event-loop-producer");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 32});
  if (!tx.wait_for_receivers(1, 10s)) return 1;
  if (!produce(tx, count, seed)) return 1;
  if (hang) {
    std::printf("sent\n");
    std::fflush(stdout);
    for (;;) ::pause();
  }
  // Everything sent must be taken before the Sender goes, or the stream
  // would end short of it: the consumer checks the count.
  return 0;
}

int consume_main(int argc, char** argv) {
  if (argc < 5) return 2;
  const std::uint64_t count = std::strtoull(argv[3], nullptr, 10);
  std::mt19937 rng(static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10)));
  Receiver rx = Receiver::connect(argv[2], ReceiverOptions{.connect_timeout = 10s});
  std::vector<View> held;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto v = rx.receive(10s);
    if (!v) {
      std::fprintf(stderr, "consumer: receive %llu: %s\n", static_cast<unsigned long long>(i),
                   v.error().message().c_str());
      return 1;
    }
    std::uint64_t got;
    std::memcpy(&got, v->data(), sizeof got);
    if (got != i) {
      std::fprintf(stderr, "consumer: got %llu, expected %llu\n", static_cast<unsigned long long>(got),
                   static_cast<unsigned long long>(i));
      return 1;
    }
    // Hold up to 7 views now and then (the pool of 8 runs dry, but never
    // so dry that the next buffer cannot come), and pause now and then
    // (the ring fills).
    held.push_back(std::move(*v));
    if (held.size() > rng() % 7) held.clear();
    if (rng() % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
  }
  return 0;
}

// An epoll set with one receiver's fd in it.
class Epoll {
 public:
  explicit Epoll(int fd) : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    EXPECT_EQ(::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev), 0);
  }
  ~Epoll() { ::close(ep_); }
  int wait(int ms) {
    epoll_event ev[4];
    int n;
    do n = ::epoll_wait(ep_, ev, 4, ms);
    while (n < 0 && errno == EINTR);
    return n;
  }

 private:
  int ep_;
};

struct Consumed {
  std::uint64_t received = 0;
  std::uint64_t sleeps = 0;
  Clock::duration longest{};
  std::error_code end;
};

// The event loop of the docs: take until kWouldBlock, arm, sleep in
// epoll_wait. Stops at the end of the stream, or after `stop_after`
// buffers. Every buffer must carry the next number.
void consume(Receiver& rx, std::uint64_t stop_after, std::uint32_t seed, Consumed& out) {
  Epoll ep(rx.fd());
  std::mt19937 rng(seed);
  while (out.received < stop_after) {
    auto v = rx.try_receive();
    if (v) {
      std::uint64_t got;
      std::memcpy(&got, v->data(), sizeof got);
      ASSERT_EQ(got, out.received) << "out of order";
      ++out.received;
      // Now and then fall behind, so the ring fills and arm() finds work.
      if (rng() % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
      continue;
    }
    if (v.error() != make_error_code(Errc::kWouldBlock)) {
      out.end = v.error();
      return;
    }
    if (!rx.arm()) continue;
    const auto t0 = Clock::now();
    const int n = ep.wait(kEpollTimeoutMs);
    const auto slept = Clock::now() - t0;
    ++out.sleeps;
    out.longest = std::max(out.longest, slept);
    ASSERT_GT(n, 0) << "lost wake-up: epoll_wait timed out after " << kEpollTimeoutMs << " ms with "
                    << out.received << " buffers received; something waiting now: " << !rx.arm();
  }
}

constexpr std::uint64_t kCount = 20000;

TEST(EventLoop, AThreadProducerInBurstsLosesNoWakeUp) {
  for (std::uint32_t seed = 1; seed <= 3 && !HasFailure(); ++seed) {
    Pool pool = make_pool("event-loop-local");
    std::optional<Sender> tx(std::in_place, pool, SenderOptions{.ring_capacity = 32});
    Receiver rx = tx->connect_local();
    std::jthread producer([&] {
      EXPECT_TRUE(produce(*tx, kCount, seed));
      tx.reset();  // the end of the stream
    });
    Consumed c;
    consume(rx, ~std::uint64_t{0}, seed * 7, c);
    producer.join();
    EXPECT_EQ(c.received, kCount);
    EXPECT_EQ(c.end, make_error_code(Errc::kPeerGone));
    // The test is only worth something if the consumer did sleep often.
    EXPECT_GT(c.sleeps, 50u) << "the consumer never waited: the interleavings were not exercised";
    std::printf("seed %u: %llu buffers, %llu sleeps in epoll_wait, longest %lld us\n", seed,
                static_cast<unsigned long long>(c.received), static_cast<unsigned long long>(c.sleeps),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(c.longest).count()));
  }
}

TEST(EventLoop, AProducerProcessInBurstsLosesNoWakeUp) {
  for (std::uint32_t seed = 1; seed <= 3 && !HasFailure(); ++seed) {
    const std::string service = service_name("bursts") + "/" + std::to_string(seed);
    testing::Child producer(g_self, {"--produce", service, std::to_string(kCount), std::to_string(seed)});
    Receiver rx = Receiver::connect(service, ReceiverOptions{.connect_timeout = 10s});
    Consumed c;
    consume(rx, ~std::uint64_t{0}, seed * 7, c);
    const testing::ExitStatus st = producer.wait(10000ms);
    EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << producer.output();
    EXPECT_EQ(c.received, kCount);
    EXPECT_EQ(c.end, make_error_code(Errc::kPeerGone));
    EXPECT_GT(c.sleeps, 50u) << "the consumer never waited: the interleavings were not exercised";
    std::printf("seed %u: %llu buffers, %llu sleeps in epoll_wait, longest %lld us\n", seed,
                static_cast<unsigned long long>(c.received), static_cast<unsigned long long>(c.sleeps),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(c.longest).count()));
  }
}

// A producer killed with -9 cannot signal anything; the kernel closes its
// end of the readiness pair, and that alone must wake the loop.
TEST(EventLoop, AProducerKilledWhileTheConsumerSleepsWakesItWithTheEndOfTheStream) {
  const std::string service = service_name("killed");
  testing::Child producer(g_self, {"--produce", service, "100", "5", "--hang"});
  Receiver rx = Receiver::connect(service, ReceiverOptions{.connect_timeout = 10s});
  Consumed c;
  consume(rx, 100, 5, c);
  ASSERT_EQ(c.received, 100u);
  ASSERT_TRUE(producer.wait_for_output("sent", 10000ms));
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kWouldBlock));
  ASSERT_TRUE(rx.arm());
  Epoll ep(rx.fd());
  std::jthread killer([&] {
    std::this_thread::sleep_for(50ms);
    producer.kill(SIGKILL);
  });
  const int n = ep.wait(kEpollTimeoutMs);
  killer.join();
  ASSERT_GT(n, 0) << "the producer's death did not wake the loop";
  EXPECT_FALSE(rx.arm());
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kPeerGone));
  (void)producer.wait(5000ms);
}

// The sending end in an epoll loop: a producer that never blocks in the
// library (try_allocate, try_send) against a slow consumer process that
// holds views, with a pool of 8 buffers and a ring of 4, so both kinds of
// back-pressure come and go thousands of times. Every wait on the
// Sender's fd must end within 2 s: the consumer never pauses longer than
// a millisecond.
TEST(EventLoop, AProducerWaitingOnItsFdForRoomAndBuffersLosesNoWakeUp) {
  constexpr std::uint64_t kSends = 20000;
  for (std::uint32_t seed = 1; seed <= 2 && !HasFailure(); ++seed) {
    const std::string service = service_name("tx-fd") + "/" + std::to_string(seed);
    Pool pool(PoolOptions{.name = "event-loop-tx", .classes = {{4096, 8}}});
    Sender tx(pool, service, SenderOptions{.ring_capacity = 4});
    testing::Child consumer(g_self, {"--consume", service, std::to_string(kSends), std::to_string(seed)});
    ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
    Epoll ep(tx.fd());
    std::uint64_t buffer_waits = 0, room_waits = 0;
    // Counts only the waits that slept.
    auto wait = [&](std::size_t size, std::uint64_t i) {
      if (!tx.arm(size)) return true;
      ++(size != 0 ? buffer_waits : room_waits);
      if (ep.wait(kEpollTimeoutMs) > 0) return true;
      ADD_FAILURE() << "lost wake-up: the Sender's fd stayed quiet for " << kEpollTimeoutMs << " ms at buffer "
                    << i << " (waiting for " << (size != 0 ? "a buffer" : "ring room") << ")";
      return false;
    };
    for (std::uint64_t i = 0; i < kSends && !HasFailure();) {
      auto b = tx.try_allocate(64);
      if (!b) {
        ASSERT_EQ(b.error(), make_error_code(Errc::kWouldBlock));
        if (!wait(64, i)) break;
        continue;
      }
      std::memcpy(b->data(), &i, sizeof i);
      for (;;) {
        const std::error_code ec = tx.try_send(std::move(*b), sizeof i);
        if (!ec) break;
        ASSERT_EQ(ec, make_error_code(Errc::kWouldBlock));
        if (!wait(0, i)) break;
      }
      ++i;
    }
    const testing::ExitStatus st = consumer.wait(10000ms);
    EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << consumer.output();
    EXPECT_GT(buffer_waits, 20u) << "the pool never ran dry: the test did not exercise the doorbell";
    EXPECT_GT(room_waits, 20u) << "the ring never filled: the test did not exercise ring room";
    std::printf("seed %u: %llu sends, %llu sleeps on the fd for a buffer, %llu for ring room\n", seed,
                static_cast<unsigned long long>(kSends), static_cast<unsigned long long>(buffer_waits),
                static_cast<unsigned long long>(room_waits));
  }
}

// Three producers (two threads, one process) into one WaitSet: every
// buffer of each arrives, in order per producer, and no wait lasts long.
TEST(EventLoop, AWaitSetServesThreeProducersAtOnce) {
  constexpr std::uint64_t kEach = 5000;
  const std::string service = service_name("wait-set");
  testing::Child remote(g_self, {"--produce", service, std::to_string(kEach), "11"});
  Receiver r0 = Receiver::connect(service, ReceiverOptions{.connect_timeout = 10s});
  Pool p1 = make_pool("wait-set-1"), p2 = make_pool("wait-set-2");
  std::optional<Sender> t1(std::in_place, p1, SenderOptions{.ring_capacity = 32});
  std::optional<Sender> t2(std::in_place, p2, SenderOptions{.ring_capacity = 32});
  Receiver r1 = t1->connect_local(), r2 = t2->connect_local();
  std::jthread a([&] {
    EXPECT_TRUE(produce(*t1, kEach, 12));
    t1.reset();
  });
  std::jthread b([&] {
    EXPECT_TRUE(produce(*t2, kEach, 13));
    t2.reset();
  });
  WaitSet set;
  Receiver* rs[3] = {&r0, &r1, &r2};
  for (Receiver* r : rs) set.add(*r);
  std::uint64_t next[3] = {0, 0, 0};
  while (set.size() != 0) {
    auto ready = set.wait(std::chrono::milliseconds(kEpollTimeoutMs));
    ASSERT_FALSE(ready.empty()) << "lost wake-up: WaitSet::wait timed out after " << kEpollTimeoutMs
                                << " ms; received " << next[0] << ", " << next[1] << ", " << next[2];
    // Copied: remove() below does not touch the span, but the next wait does.
    const std::vector<Receiver*> now(ready.begin(), ready.end());
    for (Receiver* r : now) {
      const std::size_t k = static_cast<std::size_t>(std::find(rs, rs + 3, r) - rs);
      ASSERT_LT(k, 3u);
      for (;;) {
        auto v = r->try_receive();
        if (v) {
          std::uint64_t got;
          std::memcpy(&got, v->data(), sizeof got);
          ASSERT_EQ(got, next[k]) << "producer " << k;
          ++next[k];
          continue;
        }
        if (v.error() != make_error_code(Errc::kWouldBlock)) {
          EXPECT_EQ(v.error(), make_error_code(Errc::kPeerGone));
          set.remove(*r);
        }
        break;
      }
    }
  }
  a.join();
  b.join();
  EXPECT_TRUE(remote.wait(10000ms).exited_with(0)) << remote.output();
  EXPECT_EQ(next[0], kEach);
  EXPECT_EQ(next[1], kEach);
  EXPECT_EQ(next[2], kEach);
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  ::setenv("FBUF_TEST_UNSLICED_SLEEP", "1", 1);
  if (argc > 1 && std::strcmp(argv[1], "--produce") == 0) return fbuf::produce_main(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "--consume") == 0) return fbuf::consume_main(argc, argv);
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 2;
  exe[n] = '\0';
  fbuf::g_self = exe;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// The chaos test: a producer streams numbered, checksummed frames to two
// honest receivers while hostile peers, connected through the real
// handshake, rewrite every word of shared memory they can write (the
// channel header, both rings' indices and wake-up words, every send and
// return slot, the pool's doorbell), forge returns, detach half-way and
// keep writing, reconnect, and are killed with SIGKILL at random moments.
//
// What must hold (docs/design.md, "Bad input"): the producer never
// crashes; the honest receivers get every frame sent while they were
// connected, once, in order and intact, and never wait longer than a bound
// for the next one; no send or allocation times out; after the hostile
// peers are gone and the honest receivers closed, the pool is all free;
// the producer's counters show that the hostile peers reached it.
//
// All processes are chaos_peer (tests/fault/chaos_peer.cc). Knobs, all
// optional, through the environment: FBUF_CHAOS_SECONDS (least duration
// of the hostile phase), FBUF_CHAOS_OPS (least hostile word writes; the
// phase runs on until both are reached, up to 4x the duration),
// FBUF_CHAOS_HOSTILES (concurrent chaos peers), FBUF_CHAOS_BOUND_MS (the
// stall bound), FBUF_CHAOS_PACE_US (one frame per), FBUF_CHAOS_ATTACKS
// (comma-separated subset of scribble,returns,stall,detach,capacity,
// reconnect, to aim at one defect), FBUF_CHAOS_SEED.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

// The one include of the child-process helper.
#include "child_process.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace proc = fbuf::testing;

struct Config {
  double min_seconds;
  std::uint64_t min_ops;
  int hostiles;
  long bound_ms;
  long pace_us;
  std::string attacks;
  std::uint64_t seed;
};

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

// The environment overrides the test's own settings.
Config config(double seconds, std::uint64_t ops, std::string attacks = "all") {
  Config c{seconds, ops, 3, 2000, 200, std::move(attacks), std::random_device{}()};
  if (auto v = env("FBUF_CHAOS_SECONDS")) c.min_seconds = std::stod(*v);
  if (auto v = env("FBUF_CHAOS_OPS")) c.min_ops = std::stoull(*v);
  if (auto v = env("FBUF_CHAOS_HOSTILES")) c.hostiles = std::stoi(*v);
  if (auto v = env("FBUF_CHAOS_BOUND_MS")) c.bound_ms = std::stol(*v);
  if (auto v = env("FBUF_CHAOS_PACE_US")) c.pace_us = std::stol(*v);
  if (auto v = env("FBUF_CHAOS_ATTACKS")) c.attacks = *v;
  if (auto v = env("FBUF_CHAOS_SEED")) c.seed = std::stoull(*v);
  return c;
}

// True once the child has ended; it is left to be reaped by Child::wait.
bool ended(const proc::Child& c) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(c.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0;
}

std::optional<double> number(const std::string& output, std::string_view key) {
  auto v = proc::field(output, key);
  if (!v) return std::nullopt;
  try {
    return std::stod(*v);
  } catch (...) {
    return std::nullopt;
  }
}

std::size_t count_of(const std::string& text, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string tail(const std::string& text, std::size_t n = 2000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// One hostile peer process at a time, restarted when it ends or is killed.
struct HostileSlot {
  bool stall = false;  // the long-lived role that publishes an impossible head
  std::optional<proc::Child> child;
  Clock::time_point kill_at{};
  Clock::time_point next_start{};
};

struct HostileTally {
  std::uint64_t started = 0;
  std::uint64_t killed = 0;      // by this test, with SIGKILL
  std::uint64_t exited = 0;      // ended on their own, status 0
  std::uint64_t unreachable = 0;  // status 3: the service was gone
  std::uint64_t welcomes = 0;    // handshakes that got a Welcome
  std::vector<std::string> abnormal;
};

void reap(HostileSlot& s, HostileTally& t, bool by_us) {
  if (!s.child) return;
  proc::ExitStatus st = s.child->wait(10s);
  const std::string out = s.child->output();
  t.welcomes += count_of(out, "welcome ");
  if (by_us && st.killed_by(SIGKILL)) {
    ++t.killed;
  } else if (st.exited_with(0)) {
    ++t.exited;
  } else if (st.exited_with(3)) {
    ++t.unreachable;
  } else {
    t.abnormal.push_back(s.child->command() + ": " + st.describe() + "\n" + tail(out, 600));
  }
  s.child.reset();
}

void run_chaos(const Config& cfg, const char* tag) {
  std::printf("chaos: seed=%llu attacks=%s hostiles=%d bound_ms=%ld pace_us=%ld min_seconds=%.0f min_ops=%llu\n",
              static_cast<unsigned long long>(cfg.seed), cfg.attacks.c_str(), cfg.hostiles, cfg.bound_ms,
              cfg.pace_us, cfg.min_seconds, static_cast<unsigned long long>(cfg.min_ops));
  std::fflush(stdout);
  std::mt19937_64 rng(cfg.seed);

  // The hostile peers add their operation counts here. Not close-on-exec:
  // every child inherits it; the hostile peers are told its number.
  const int ops_fd = ::memfd_create("chaos-ops", 0);
  ASSERT_GE(ops_fd, 0);
  ASSERT_EQ(::ftruncate(ops_fd, 4096), 0);
  void* ops_map = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ops_fd, 0);
  ASSERT_NE(ops_map, MAP_FAILED);
  auto* ops = static_cast<std::atomic<std::uint64_t>*>(ops_map);

  const std::string service = proc::unique_service(tag);
  const std::string peer = FBUF_CHAOS_PEER;
  const auto started = Clock::now();
  proc::Child producer(peer, {"produce", service, std::to_string(cfg.pace_us), std::to_string(cfg.bound_ms), "32"});
  proc::Child honest_a(peer, {"honest", service, "16"});
  proc::Child honest_b(peer, {"honest", service, "16"});
  ASSERT_TRUE(producer.wait_for_output("ready\n", 60s)) << producer.output() << honest_a.output() << honest_b.output();

  // The hostile phase.
  const bool stall_enabled = cfg.attacks == "all" || cfg.attacks.find("stall") != std::string::npos;
  std::vector<HostileSlot> slots(static_cast<std::size_t>(cfg.hostiles) + (stall_enabled ? 1 : 0));
  if (stall_enabled) {
    slots.back().stall = true;
    slots.back().next_start = Clock::now() + 1s;
  }
  HostileTally tally;
  const auto phase_start = Clock::now();
  const auto min_end = phase_start + std::chrono::duration<double>(cfg.min_seconds);
  const auto max_end = phase_start + std::chrono::duration<double>(4 * cfg.min_seconds);
  bool producer_died = false;
  for (;;) {
    const auto now = Clock::now();
    // relaxed: a counter; exactness is not needed while the peers run.
    const std::uint64_t done = ops->load(std::memory_order_relaxed);
    if (now >= max_end || (now >= min_end && done >= cfg.min_ops)) break;
    if (ended(producer)) {
      producer_died = true;
      break;
    }
    for (HostileSlot& s : slots) {
      if (s.child && now >= s.kill_at) {
        s.child->kill(SIGKILL);
        reap(s, tally, true);
        // The long-lived role pauses, so that stalls it causes are
        // separated by stretches of normal streaming.
        s.next_start = now + (s.stall ? std::chrono::milliseconds(1000 + rng() % 1000) : 0ms);
      } else if (s.child && ended(*s.child)) {
        reap(s, tally, false);
        s.next_start = now;
      }
      if (!s.child && now >= s.next_start) {
        s.child.emplace(peer, std::vector<std::string>{"hostile", service, std::to_string(ops_fd),
                                                       std::to_string(rng()), s.stall ? "stall" : "chaos",
                                                       cfg.attacks});
        ++tally.started;
        // Killed at a random moment: during the handshake, mid-episode,
        // half-detached. The stall role outlives the bound.
        const auto life = s.stall ? std::chrono::milliseconds(cfg.bound_ms + 500 + rng() % 1000)
                                  : std::chrono::milliseconds(10 + rng() % 690);
        s.kill_at = now + life;
      }
    }
    std::this_thread::sleep_for(2ms);
  }
  for (HostileSlot& s : slots) {
    if (!s.child) continue;
    s.child->kill(SIGKILL);
    reap(s, tally, true);
  }
  const double phase_seconds = std::chrono::duration<double>(Clock::now() - phase_start).count();
  const std::uint64_t total_ops = ops->load(std::memory_order_relaxed);

  // End of the stream: the producer stops, closes its Sender, waits for
  // its pool to come home and reports.
  if (!producer_died) producer.kill(SIGUSR1);
  const proc::ExitStatus ps = producer.wait(60s);
  const proc::ExitStatus ha = honest_a.wait(60s);
  const proc::ExitStatus hb = honest_b.wait(60s);
  const std::string pout = producer.output();
  const double run_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  ::munmap(ops_map, 4096);
  ::close(ops_fd);

  std::printf("chaos: hostile_ops=%llu in %.1f s (%llu peers started, %llu killed, %llu ended, %llu handshakes), "
              "run %.1f s\n",
              static_cast<unsigned long long>(total_ops), phase_seconds,
              static_cast<unsigned long long>(tally.started), static_cast<unsigned long long>(tally.killed),
              static_cast<unsigned long long>(tally.exited + tally.unreachable),
              static_cast<unsigned long long>(tally.welcomes), run_seconds);
  std::printf("chaos: producer: %s\n%s", ps.describe().c_str(), pout.c_str());
  std::printf("chaos: honest a: %s\n%s", ha.describe().c_str(), honest_a.output().c_str());
  std::printf("chaos: honest b: %s\n%s", hb.describe().c_str(), honest_b.output().c_str());
  std::fflush(stdout);
  ::testing::Test::RecordProperty("hostile_ops", std::to_string(total_ops));

  // The producer never crashes. When it did, the honest receivers are
  // still checked for what they got, and the counters it never printed are
  // not.
  EXPECT_FALSE(producer_died) << "the producer ended during the hostile phase: " << ps.describe();
  EXPECT_TRUE(ps.exited_with(0)) << "producer " << ps.describe() << "\n" << tail(pout);
  const bool finished = ps.exited_with(0);
  const std::optional<double> sent = number(pout, "sent");

  // The honest receivers connected before the first frame, so every frame
  // sent is owed to each: from 0 to sent - 1, once each, intact.
  for (const proc::Child* h : {&honest_a, &honest_b}) {
    const proc::ExitStatus st = h == &honest_a ? ha : hb;
    const std::string out = h->output();
    SCOPED_TRACE(h == &honest_a ? "honest receiver a" : "honest receiver b");
    if (!st.exited_with(0)) {
      ADD_FAILURE() << st.describe() << "\n" << tail(out);
      continue;
    }
    EXPECT_EQ(proc::field(out, "end").value_or("?"), "peer_gone");
    EXPECT_EQ(number(out, "first").value_or(-1), 0);
    if (finished && sent) {
      EXPECT_EQ(number(out, "count").value_or(-1), *sent) << "frames received, of those sent";
      EXPECT_EQ(number(out, "last").value_or(-1), *sent - 1);
    }
    EXPECT_EQ(number(out, "lost").value_or(-1), 0) << "frames skipped";
    EXPECT_EQ(number(out, "dups").value_or(-1), 0) << "frames seen twice or out of order";
    EXPECT_EQ(number(out, "torn").value_or(-1), 0) << "frames with a bad size or checksum";
    EXPECT_EQ(number(out, "reused").value_or(-1), 0) << "held frames overwritten: their buffer was freed under them";
    EXPECT_EQ(number(out, "bad_descriptors").value_or(-1), 0);
    EXPECT_LE(number(out, "max_gap_ms").value_or(1e9), static_cast<double>(cfg.bound_ms))
        << "the longest wait between two frames";
  }

  EXPECT_GT(tally.welcomes, 0u) << "no hostile peer got through the handshake";
  EXPECT_TRUE(tally.abnormal.empty()) << "hostile peers failed on their own:\n" << tally.abnormal.front();
  if (!finished) return;
  // (A producer that died early ended the hostile phase early too.)
  EXPECT_GE(total_ops, cfg.min_ops) << "too few hostile operations";

  EXPECT_EQ(proc::field(pout, "error").value_or("?"), "none");
  ASSERT_TRUE(sent) << pout;
  EXPECT_GT(*sent, 0);
  // Sends never time out, and no frame takes longer than the bound.
  EXPECT_EQ(number(pout, "send_timeouts").value_or(-1), 0) << "sends that waited " << cfg.bound_ms << " ms";
  EXPECT_EQ(number(pout, "alloc_timeouts").value_or(-1), 0) << "allocations that waited " << cfg.bound_ms << " ms";
  EXPECT_LE(number(pout, "max_frame_ms").value_or(1e9), static_cast<double>(cfg.bound_ms))
      << "the producer was stalled";

  // Everything lent comes home.
  EXPECT_EQ(number(pout, "pool_free").value_or(-1), number(pout, "pool_total").value_or(-2))
      << "buffers leaked (pool_in_flight=" << number(pout, "pool_in_flight").value_or(-1) << ")";

  // The hostile peers reached the producer. (Only the attacks that forge
  // returns or scribble over the return ring make rejections.)
  if (cfg.attacks == "all" || cfg.attacks.find("returns") != std::string::npos ||
      cfg.attacks.find("scribble") != std::string::npos) {
    EXPECT_GT(number(pout, "rejected_returns").value_or(0), 0) << "no forged return was ever seen";
  }
  EXPECT_GT(number(pout, "receivers_lost").value_or(0), 0) << "no hostile peer was ever cut off or lost";
}

#ifndef FBUF_CHAOS_STRESS

// Every attack at once.
TEST(Chaos, HostilePeersRewritingSharedMemoryCostHonestReceiversNothing) {
  run_chaos(config(15, 1'000'000), "chaos");
}

// The same scenario aimed at one weakness at a time, so that each can be
// seen (and fixed) on its own: a crash found by one does not hide the rest.

// Capacities rewritten the moment the ring fd arrives, and by scribbling.
TEST(Chaos, RewrittenRingCapacitiesDoNotCrashTheProducer) {
  run_chaos(config(8, 1'000'000, "capacity,scribble,reconnect"), "chaos-capacity");
}

// A head ahead of the tail (or far behind it) from peers that otherwise
// return everything.
TEST(Chaos, AnImpossibleSendHeadDoesNotStallHonestReceivers) {
  run_chaos(config(8, 1'000'000, "stall"), "chaos-stall");
}

// Send slots rewritten while the producer takes back what a detached peer
// left unconsumed. Longer than the others: the window it aims at is a few
// instructions wide.
TEST(Chaos, SlotsRewrittenAfterDetachingFreeNothingOthersHold) {
  run_chaos(config(20, 1'000'000, "detach"), "chaos-detach");
}

// Forged returns, scribbled indices and wake-up words, reconnects.
TEST(Chaos, ForgedReturnsAndScribbledIndicesAreRejected) {
  run_chaos(config(8, 1'000'000, "scribble,returns,reconnect"), "chaos-returns");
}

#else

TEST(ChaosStress, HostilePeersRewritingSharedMemoryCostHonestReceiversNothing) {
  run_chaos(config(300, 100'000'000), "chaos-stress");
}

#endif

}  // namespace
}  // namespace fbuf

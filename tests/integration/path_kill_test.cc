// The path under kill -9 (docs/design.md, "The path", crash semantics): a
// middle stage killed while the stage after it holds views it forwarded,
// the holder killed, the owner killed. The holder's views must keep their
// bytes until it lets them go (the owner scribbles over every buffer it
// can get meanwhile), and the owner's pool must end all free.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

std::string pool_name(const char* tag) { return std::string("pathk-") + tag + "-" + std::to_string(::getpid()); }

// Takes every buffer the pool can hand out within `wait`, fills it with
// 0xEE and gives it back: a buffer some holder still reads would be
// overwritten.
std::uint32_t scribble(Pool& pool, std::chrono::milliseconds wait) {
  std::vector<Buffer> all;
  for (;;) {
    Result<Buffer> b = pool.allocate(pool.max_buffer_size(), wait);
    if (!b) break;
    std::memset(b->data(), 0xEE, b->capacity());
    all.push_back(std::move(*b));
  }
  return static_cast<std::uint32_t>(all.size());
}

bool send_one(Sender& sender, std::uint64_t seq) {
  const std::size_t payload = 100 + (seq * 7919) % 60000;
  Result<Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, 2s);
  if (!b) return false;
  tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload);
  return !sender.send(std::move(*b), TF_HEADER_SIZE + payload, 2s);
}

TEST(PathKill, AMiddleStageKilledAtRandomLeavesDownstreamViewsIntact) {
  constexpr int kRounds = 24;
  constexpr std::uint32_t kBuffers = 16;
  const std::string a = unique_service("kill-a");
  const std::string name = pool_name("mid");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, kBuffers}}, .policy = Policy::kReadOnly});
  Sender sender(pool, a);
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string b = unique_service("kill-b" + std::to_string(round));
    Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--then", "hang"});
    Child d(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--hold", "6"});
    ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << m.output();
    ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << d.output();
    // A random number of frames, and the kill at once: some are still in
    // the stage's ring, some being forwarded, some held downstream.
    const std::uint64_t frames = std::uniform_int_distribution<std::uint64_t>(1, 120)(rng);
    std::uint64_t sent = 0;
    while (sent < frames && send_one(sender, sent)) ++sent;
    if (std::uniform_int_distribution<int>(0, 1)(rng) == 1)
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    m.kill(SIGKILL);
    EXPECT_TRUE(m.wait(20s).killed_by(SIGKILL));
    // The owner reuses every buffer it can: the holder's must not be among
    // them.
    scribble(pool, 200ms);
    ASSERT_TRUE(d.wait_for_output("ended", 20s)) << d.output();
    d.kill(SIGUSR1);
    const ExitStatus st = d.wait(30s);
    EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << d.output();
    EXPECT_NE(d.output().find("held ok"), std::string::npos) << d.output();
    // Everything comes back: the stage's own holdings, the holder's views.
    ASSERT_EQ(check_all_buffers_return(pool, 20s), "") << d.output();
  }
}

TEST(PathKill, AKilledHolderIsReclaimedAtTheOwner) {
  const std::string a = unique_service("hk-a"), b = unique_service("hk-b"), c = unique_service("hk-c");
  const std::string name = pool_name("holder");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--to", c, "--tolerate", "1"});
  Child d(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--hold", "6"});
  Child e(FBUF_PATH_PEER, {"sink", "--service", c, "--pool", name, "--count", "500"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << d.output();
  std::uint64_t seq = 0;
  for (; seq < 20; ++seq) ASSERT_TRUE(send_one(*sender, seq)) << m.output();
  ASSERT_TRUE(d.wait_for_output("holding", 20s)) << d.output();
  d.kill(SIGKILL);
  EXPECT_TRUE(d.wait(20s).killed_by(SIGKILL));
  // The stream goes on to the other holder; the dead one's views come back.
  for (; seq < 500; ++seq) ASSERT_TRUE(send_one(*sender, seq)) << m.output() << e.output();
  // The Sender stays open until the stage has forwarded everything: a
  // stage forwarding after its owner's Sender closed waits for the owner's
  // pool to collect returns (docs/design.md, "The path").
  EXPECT_TRUE(e.wait(30s).exited_with(0)) << e.output();
  sender.reset();
  EXPECT_TRUE(m.wait(30s).exited_with(0)) << m.output();
  EXPECT_EQ(field(e.output(), "frames"), "500") << e.output();
  EXPECT_EQ(check_all_buffers_return(pool, 20s), "");
}

TEST(PathKill, AKilledOwnerLeavesDownstreamViewsReadableAndEndsTheStreams) {
  const std::string a = unique_service("ok-a"), b = unique_service("ok-b");
  const std::string name = pool_name("owner");
  Child p(FBUF_PATH_PEER, {"source", "--service", a, "--pool", name, "--count", "40", "--buffers", "16", "--then",
                           "hang"});
  ASSERT_TRUE(p.wait_for_output("listening", 20s)) << p.output();
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b});
  Child d(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--hold", "6"});
  ASSERT_TRUE(p.wait_for_output("sent frames=40", 30s)) << p.output() << m.output() << d.output();
  ASSERT_TRUE(d.wait_for_output("holding", 20s)) << d.output();
  p.kill(SIGKILL);
  EXPECT_TRUE(p.wait(20s).killed_by(SIGKILL));
  // The stage sees the end after everything sent, and so does the holder.
  EXPECT_TRUE(m.wait(30s).exited_with(0)) << m.output();
  EXPECT_EQ(field(m.output(), "frames"), "40") << m.output();
  ASSERT_TRUE(d.wait_for_output("ended", 30s)) << d.output();
  d.kill(SIGUSR1);
  EXPECT_TRUE(d.wait(30s).exited_with(0)) << d.output();
  EXPECT_EQ(field(d.output(), "frames"), "40") << d.output();
  EXPECT_NE(d.output().find("held ok views=6"), std::string::npos) << d.output();
}

}  // namespace
}  // namespace fbuf::testing

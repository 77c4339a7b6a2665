// The path with messages (docs/design.md, "Messages with forwarded
// slices"): a stage puts a 64-byte header from its own pool in front of a
// 1 MiB frame it forwards from this process's pool, and sends both as one
// Message. fbuf_path_peer plays the stage and the sinks; each sink checks
// the header and the frame of every message, and that the frame's bytes
// lie in its own mapping of this process's pool (zero copy).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kFrameClass = std::size_t{1} << 20;

std::string pool_name(const char* tag) { return std::string("pathm-") + tag + "-" + std::to_string(::getpid()); }

// Sends frame `seq` of about 1 MiB; adds its checksum to `checksum`.
bool send_frame(Sender& sender, std::uint64_t seq, std::uint64_t& checksum, std::chrono::seconds wait) {
  const std::size_t payload = kFrameClass - TF_HEADER_SIZE - seq % 64;
  Result<Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, wait);
  if (!b) return false;
  checksum = tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload));
  return !sender.send(std::move(*b), TF_HEADER_SIZE + payload, wait);
}

TEST(PathMessage, AHeaderOfTheStageAndAForwardedFrameReachTwoSinksAsOneMessage) {
  constexpr std::uint64_t kFrames = 300;
  const std::string a = unique_service("msg-a"), b = unique_service("msg-b");
  const std::string name = pool_name("fan");
  Pool pool(PoolOptions{.name = name, .classes = {{kFrameClass, 8}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--receivers", "2", "--header", "1"});
  Child s1(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--messages", "1"});
  Child s2(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--messages", "1"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << s1.output() << s2.output();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < kFrames; ++seq)
    ASSERT_TRUE(send_frame(*sender, seq, checksum, 20s)) << seq << "\n" << m.output() << s1.output() << s2.output();
  sender.reset();  // the end of the stream travels down
  EXPECT_TRUE(m.wait(60s).exited_with(0)) << m.output();
  for (Child* s : {&s1, &s2}) {
    EXPECT_TRUE(s->wait(60s).exited_with(0)) << s->output();
    const std::string out = s->output();
    EXPECT_EQ(field(out, "frames"), std::to_string(kFrames)) << out;
    EXPECT_EQ(field(out, "headers"), std::to_string(kFrames)) << out;
    EXPECT_EQ(field(out, "in_pool"), std::to_string(kFrames)) << out;
    EXPECT_NE(out.find("checksum=" + hex(checksum)), std::string::npos) << out;
  }
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

// One send of [header][forwarded frame] reaches a sink in another process
// and a thread of the stage (connect_local()), which keeps its first two
// messages while the owner cycles its 8 buffers: their frames share the
// stage's reference and must not change; every buffer comes back.
TEST(PathMessage, OneMessageReachesAThreadOfTheStageAndAnotherProcess) {
  constexpr std::uint64_t kFrames = 300;
  const std::string a = unique_service("msgl-a"), b = unique_service("msgl-b");
  const std::string name = pool_name("local");
  Pool pool(PoolOptions{.name = name, .classes = {{kFrameClass, 8}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--receivers", "1", "--header", "1", "--local", "1",
                           "--keep", "2", "--pool", name});
  Child s(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--messages", "1"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << s.output();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < kFrames; ++seq)
    ASSERT_TRUE(send_frame(*sender, seq, checksum, 20s)) << seq << "\n" << m.output() << s.output();
  sender.reset();
  EXPECT_TRUE(m.wait(60s).exited_with(0)) << m.output();
  EXPECT_TRUE(s.wait(60s).exited_with(0)) << s.output();
  EXPECT_EQ(field(s.output(), "headers"), std::to_string(kFrames)) << s.output();
  EXPECT_EQ(field(s.output(), "in_pool"), std::to_string(kFrames)) << s.output();
  EXPECT_NE(s.output().find("checksum=" + hex(checksum)), std::string::npos) << s.output();
  const std::string local = "local frames=" + std::to_string(kFrames) + " in_pool=" + std::to_string(kFrames) +
                            " checksum=" + hex(checksum) + " kept_ok=2";
  EXPECT_NE(m.output().find(local), std::string::npos) << m.output();
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

TEST(PathMessage, ACStageSendsAHeaderAndAForwardedViewWithUfMsgSend) {
  constexpr std::uint64_t kFrames = 100;
  const std::string a = unique_service("msgc-a"), b = unique_service("msgc-b");
  const std::string name = pool_name("c");
  Pool pool(PoolOptions{.name = name, .classes = {{kFrameClass, 8}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_IT_C_PEER, {"msgforward", a, b, std::to_string(kFrames)});
  Child s(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--messages", "1"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << s.output();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < kFrames; ++seq)
    ASSERT_TRUE(send_frame(*sender, seq, checksum, 20s)) << seq << "\n" << m.output() << s.output();
  EXPECT_TRUE(m.wait(60s).exited_with(0)) << m.output();
  EXPECT_TRUE(s.wait(60s).exited_with(0)) << s.output();
  const std::string out = s.output();
  EXPECT_EQ(field(out, "frames"), std::to_string(kFrames)) << out;
  EXPECT_EQ(field(out, "headers"), std::to_string(kFrames)) << out;
  EXPECT_EQ(field(out, "in_pool"), std::to_string(kFrames)) << out;
  EXPECT_NE(out.find("checksum=" + hex(checksum)), std::string::npos) << out;
  sender.reset();
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
}

// Takes every buffer the pool can hand out within `wait` and fills it with
// 0xEE: a buffer a holder still reads would be overwritten.
void scribble(Pool& pool, std::chrono::milliseconds wait) {
  std::vector<Buffer> all;
  for (;;) {
    Result<Buffer> b = pool.allocate(pool.max_buffer_size(), wait);
    if (!b) break;
    std::memset(b->data(), 0xEE, b->capacity());
    all.push_back(std::move(*b));
  }
}

TEST(PathMessage, AStageKilledWhileTheSinkHoldsItsMessagesLeavesThemIntact) {
  constexpr int kRounds = 8;
  const std::string a = unique_service("msgk-a");
  const std::string name = pool_name("kill");
  Pool pool(PoolOptions{.name = name, .classes = {{kFrameClass, 8}}, .policy = Policy::kReadOnly});
  Sender sender(pool, a);
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string b = unique_service("msgk-b" + std::to_string(round));
    Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--header", "1", "--then", "hang"});
    Child d(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name, "--hold", "3", "--messages", "1"});
    ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << m.output();
    ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << d.output();
    const std::uint64_t frames = std::uniform_int_distribution<std::uint64_t>(1, 40)(rng);
    std::uint64_t sent = 0, checksum = TF_FNV_OFFSET;
    while (sent < frames && send_frame(sender, sent, checksum, 2s)) ++sent;
    if (std::uniform_int_distribution<int>(0, 1)(rng) == 1)
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    m.kill(SIGKILL);
    EXPECT_TRUE(m.wait(20s).killed_by(SIGKILL));
    scribble(pool, 200ms);
    ASSERT_TRUE(d.wait_for_output("ended", 20s)) << d.output() << "rejected_returns "
                                                  << sender.stats().rejected_returns;
    d.kill(SIGUSR1);
    const ExitStatus st = d.wait(30s);
    EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << d.output() << "rejected_returns "
                                   << sender.stats().rejected_returns;
    EXPECT_NE(d.output().find("held ok"), std::string::npos) << d.output();
    ASSERT_EQ(check_all_buffers_return(pool, 20s), "") << d.output();
  }
}

}  // namespace
}  // namespace fbuf::testing

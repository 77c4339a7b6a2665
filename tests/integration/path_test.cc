// The path: views forwarded without a copy through stages in other
// processes (docs/design.md, "The path"). This process owns the pool and
// sends; fbuf_path_peer plays the stages and the sinks. Every sink checks
// every frame against the owner's sequence and checksum, and that the
// frame's bytes lie in its own mapping of this process's pool (zero copy);
// at the end every buffer of the pool must be free.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

std::string pool_name(const char* tag) { return std::string("path-") + tag + "-" + std::to_string(::getpid()); }

// Sends `count` frames of mixed sizes; returns the stream's checksum.
std::uint64_t send_frames(Sender& sender, std::uint64_t count, const std::vector<Child*>& peers) {
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    const std::size_t payload = 100 + (seq * 7919) % 60000;
    Result<Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, 20s);
    std::string out;
    for (Child* c : peers) out += c->command() + ":\n" + c->output() + "\n";
    EXPECT_TRUE(b) << "frame " << seq << ": " << b.error().message() << "\n" << out;
    if (!b) return 0;
    checksum = tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload));
    const std::error_code ec = sender.send(std::move(*b), TF_HEADER_SIZE + payload, 20s);
    EXPECT_FALSE(ec) << "frame " << seq << ": " << ec.message() << "\n" << out;
    if (ec) return 0;
  }
  return checksum;
}

void expect_exit_ok(Child& c) {
  const ExitStatus st = c.wait(60s);
  EXPECT_TRUE(st.exited_with(0)) << c.command() << ": " << st.describe() << "\n" << c.output();
}

// Every frame the sink saw was checked and lay in the owner's pool.
void expect_sink(Child& sink, std::uint64_t frames, std::uint64_t checksum) {
  const std::string out = sink.output();
  EXPECT_EQ(field(out, "frames"), std::to_string(frames)) << out;
  EXPECT_EQ(field(out, "in_pool"), std::to_string(frames)) << out;
  EXPECT_NE(out.find("checksum=" + hex(checksum)), std::string::npos) << out;
}

TEST(Path, FourProcessesInALineForwardWithoutACopy) {
  constexpr std::uint64_t kFrames = 2000;
  const std::string a = unique_service("line-a"), b = unique_service("line-b"), c = unique_service("line-c");
  const std::string name = pool_name("line");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m1(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b});
  Child m2(FBUF_PATH_PEER, {"forward", "--from", b, "--to", c});
  Child s(FBUF_PATH_PEER, {"sink", "--service", c, "--pool", name});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m1.output();
  ASSERT_TRUE(m2.wait_for_output("forwarding", 20s)) << m2.output() << s.output();
  const std::uint64_t checksum = send_frames(*sender, kFrames, {&m1, &m2, &s});
  sender.reset();  // the end of the stream travels down the line
  expect_exit_ok(m1);
  expect_exit_ok(m2);
  expect_exit_ok(s);
  expect_sink(s, kFrames, checksum);
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

TEST(Path, ADiamondDeliversBothWaysToOneSink) {
  constexpr std::uint64_t kFrames = 1000;
  const std::string a = unique_service("dia-a"), b = unique_service("dia-b"), c = unique_service("dia-c");
  const std::string name = pool_name("diamond");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kCopyOnWrite});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m1(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b});
  Child m2(FBUF_PATH_PEER, {"forward", "--from", a, "--to", c});
  Child s(FBUF_PATH_PEER, {"sink", "--service", b, "--service", c, "--pool", name});
  ASSERT_TRUE(sender->wait_for_receivers(2, 20s)) << m1.output() << m2.output();
  ASSERT_TRUE(s.wait_for_output("connected", 20s)) << s.output();
  const std::uint64_t checksum = send_frames(*sender, kFrames, {&m1, &m2, &s});
  sender.reset();
  expect_exit_ok(m1);
  expect_exit_ok(m2);
  expect_exit_ok(s);
  const std::string out = s.output();
  EXPECT_EQ(field(out, "frames"), std::to_string(2 * kFrames)) << out;
  EXPECT_EQ(field(out, "in_pool"), std::to_string(2 * kFrames)) << out;
  // Both ways carried the whole stream.
  const std::string line = "stream frames=" + std::to_string(kFrames) + " checksum=" + hex(checksum);
  const auto first = out.find(line);
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find(line, first + 1), std::string::npos) << out;
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
}

TEST(Path, AStageFansOutToSeveralSendersAndReceivers) {
  constexpr std::uint64_t kFrames = 1000;
  const std::string a = unique_service("fan-a"), b = unique_service("fan-b"), c = unique_service("fan-c");
  const std::string name = pool_name("fan");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  // Sender b has two receivers, sender c one: three holders per frame.
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--to", c, "--receivers", "2"});
  Child s1(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name});
  Child s2(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name});
  Child s3(FBUF_PATH_PEER, {"sink", "--service", c, "--service", c, "--pool", name});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << s1.output() << s3.output();
  const std::uint64_t checksum = send_frames(*sender, kFrames, {&m, &s1, &s2, &s3});
  sender.reset();
  expect_exit_ok(m);
  expect_exit_ok(s1);
  expect_exit_ok(s2);
  expect_exit_ok(s3);
  expect_sink(s1, kFrames, checksum);
  expect_sink(s2, kFrames, checksum);
  EXPECT_EQ(field(s3.output(), "frames"), std::to_string(2 * kFrames)) << s3.output();
  EXPECT_EQ(field(s3.output(), "in_pool"), std::to_string(2 * kFrames)) << s3.output();
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
}

// A stage forwards each view in one send to a receiver in another process
// and to receivers of its own (connect_local(), threads): they share the
// stage's reference to the owner's buffer and read the same mapping. The
// local receivers keep their first views to the end of the stream while
// the owner cycles its 16 buffers 125 times: those bytes must not change,
// and every buffer must be free once they are dropped.
void forward_to_local(const char* tag, const std::string& remote_receivers, int local) {
  constexpr std::uint64_t kFrames = 2000;
  constexpr int kKeep = 4;
  const std::string a = unique_service(std::string(tag) + "-a");
  const std::string b = unique_service(std::string(tag) + "-b");
  const std::string name = pool_name(tag);
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_PATH_PEER, {"forward", "--from", a, "--to", b, "--receivers", remote_receivers, "--local",
                           std::to_string(local), "--keep", std::to_string(kKeep), "--pool", name});
  std::optional<Child> s;
  if (remote_receivers != "0")
    s.emplace(FBUF_PATH_PEER, std::vector<std::string>{"sink", "--service", b, "--pool", name});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << (s ? s->output() : "");
  std::vector<Child*> peers{&m};
  if (s) peers.push_back(&*s);
  const std::uint64_t checksum = send_frames(*sender, kFrames, peers);
  sender.reset();
  expect_exit_ok(m);
  if (s) {
    expect_exit_ok(*s);
    expect_sink(*s, kFrames, checksum);
  }
  const std::string out = m.output();
  const std::string line = "local frames=" + std::to_string(kFrames) + " in_pool=" + std::to_string(kFrames) +
                           " checksum=" + hex(checksum) + " kept_ok=" + std::to_string(kKeep);
  std::size_t found = 0;
  for (auto at = out.find(line); at != std::string::npos; at = out.find(line, at + 1)) ++found;
  EXPECT_EQ(found, static_cast<std::size_t>(local)) << out;
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

TEST(Path, AStageForwardsToItsOwnThreads) { forward_to_local("local", "0", 2); }

TEST(Path, OneForwardReachesAThreadOfTheStageAndAnotherProcess) { forward_to_local("mixed", "1", 1); }

// A view of this process's pool, received from one Sender of it
// (connect_local()), sent on by another Sender of the same pool to a sink
// process: the sink returns it into its own inlet at this pool, which
// counts it as one more holder. With `kill`, the sink is killed (-9) while
// it holds views: its holdings are reclaimed and the pool is all free.
void resend_own_view(const char* tag, bool kill) {
  constexpr std::uint64_t kFrames = 1000;
  const std::string b = unique_service(std::string(tag) + "-b");
  const std::string name = pool_name(tag);
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> first, second;
  first.emplace(pool);
  second.emplace(pool, b);
  Receiver local = first->connect_local();
  std::vector<std::string> args{"sink", "--service", b, "--pool", name};
  if (kill) args.insert(args.end(), {"--hold", "3"});
  Child s(FBUF_PATH_PEER, args);
  ASSERT_TRUE(second->wait_for_receivers(1, 20s)) << s.output();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < kFrames; ++seq) {
    const std::size_t payload = 100 + (seq * 7919) % 60000;
    Result<Buffer> buf = first->allocate(TF_HEADER_SIZE + payload, 20s);
    ASSERT_TRUE(buf) << seq << ": " << buf.error().message() << "\n" << s.output();
    checksum = tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(buf->data()), seq, payload));
    ASSERT_FALSE(first->send(std::move(*buf), TF_HEADER_SIZE + payload, 20s));
    Result<View> v = local.receive(20s);
    ASSERT_TRUE(v) << seq;
    const std::error_code ec = second->send(*v, 20s);
    ASSERT_FALSE(ec) << seq << ": " << ec.message() << "\n" << s.output();
  }  // each view goes back to the pool here; the sink holds its own
  if (kill) {
    ASSERT_TRUE(s.wait_for_output("holding views=3", 20s)) << s.output();
    s.kill(SIGKILL);
    (void)s.wait(20s);
  } else {
    second.reset();
    expect_exit_ok(s);
    expect_sink(s, kFrames, checksum);
  }
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

TEST(Path, AViewOfThisProcesssPoolIsSentOnByAnotherSenderOfIt) { resend_own_view("own", false); }

TEST(Path, ASinkOfViewsOfThisProcesssPoolKilledWhileHoldingThemIsReclaimed) { resend_own_view("ownkill", true); }

TEST(Path, ACStageForwardsWithUfForward) {
  constexpr std::uint64_t kFrames = 500;
  const std::string a = unique_service("c-a"), b = unique_service("c-b");
  const std::string name = pool_name("c");
  Pool pool(PoolOptions{.name = name, .classes = {{65536, 16}}, .policy = Policy::kReadOnly});
  std::optional<Sender> sender;
  sender.emplace(pool, a);
  Child m(FBUF_IT_C_PEER, {"forward", a, b, std::to_string(kFrames)});
  Child s(FBUF_PATH_PEER, {"sink", "--service", b, "--pool", name});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << m.output();
  ASSERT_TRUE(m.wait_for_output("forwarding", 20s)) << m.output() << s.output();
  const std::uint64_t checksum = send_frames(*sender, kFrames, {&m, &s});
  expect_exit_ok(m);
  expect_exit_ok(s);
  expect_sink(s, kFrames, checksum);
  sender.reset();
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");
}

}  // namespace
}  // namespace fbuf::testing

// Faults: a consumer that breaks the rules, or a peer that dies. Receivers
// get the pool read-only, so a write by a consumer faults and a writable
// mapping is refused by the kernel; a dead peer's buffers are reclaimed and
// nothing already sent is lost.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "child_process.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

PoolOptions small_pool(const char* name) {
  return PoolOptions{.name = name, .classes = {{4096, 16}}, .policy = Policy::kVolatile};
}

// Sends frame `seq` with a small payload; the caller asserts on the result.
std::error_code send_frame(Sender& sender, std::uint64_t seq) {
  Result<Buffer> b = sender.allocate(TF_HEADER_SIZE + 100, 5s);
  if (!b) return b.error();
  tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, 100);
  return sender.send(std::move(*b), TF_HEADER_SIZE + 100, 5s);
}

TEST(ReceiverProtection, WritingIntoAReceivedViewKillsTheConsumerWithSigsegv) {
  const std::string service = unique_service("write-view");
  Pool pool(small_pool("it-write-view"));
  Sender sender(pool, service);
  Child consumer(FBUF_IT_PEER, {"write-view", "--service", service});
  ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << consumer.output();
  ASSERT_FALSE(send_frame(sender, 0));

  const ExitStatus st = consumer.wait(30s);
  EXPECT_TRUE(st.killed_by(SIGSEGV)) << st.describe() << "\n" << consumer.output();
  // It got as far as the write, so the fault is the write's.
  EXPECT_NE(consumer.output().find("writing into view"), std::string::npos) << consumer.output();
  EXPECT_EQ(consumer.output().find("succeeded"), std::string::npos) << consumer.output();

  // The dead consumer's buffer is reclaimed.
  EXPECT_EQ(check_all_buffers_return(pool, 10s), "");
}

TEST(ReceiverProtection, PoolDescriptorCannotBeMappedWritableByTheConsumer) {
  const std::string service = unique_service("mmap-check");
  Pool pool(small_pool("it-mmap-check"));
  Sender sender(pool, service);
  Child consumer(FBUF_IT_PEER, {"mmap-check", "--service", service});
  ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << consumer.output();
  ASSERT_FALSE(send_frame(sender, 0));

  const ExitStatus st = consumer.wait(30s);
  EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << consumer.output();
  EXPECT_NE(consumer.output().find("refused (EACCES)"), std::string::npos) << consumer.output();
}

TEST(PeerDeath, BuffersHeldByAKilledConsumerComeBackToThePool) {
  const std::string service = unique_service("killed-consumer");
  Pool pool(small_pool("it-killed-consumer"));
  Sender sender(pool, service);
  Child consumer(FBUF_IT_PEER,
                 {"hold", "--service", service, "--views", "8", "--hold-ms", "-1"});
  ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << consumer.output();
  for (std::uint64_t seq = 0; seq < 8; ++seq) ASSERT_FALSE(send_frame(sender, seq));
  ASSERT_TRUE(consumer.wait_for_output("holding views=8", 20s)) << consumer.output();

  consumer.kill(SIGKILL);
  const ExitStatus st = consumer.wait(10s);
  ASSERT_TRUE(st.killed_by(SIGKILL)) << st.describe();

  EXPECT_EQ(check_all_buffers_return(pool, 10s), "");
  // The sender counted the loss.
  EXPECT_EQ(sender.stats().receivers_lost, 1u);
}

TEST(PeerDeath, ConsumerDrainsEverythingAKilledProducerSent) {
  constexpr int kFrames = 100;
  const std::string service = unique_service("killed-producer");
  Child producer(FBUF_IT_PEER, {"produce", "--service", service, "--count",
                                std::to_string(kFrames), "--then", "hang"});
  ASSERT_TRUE(producer.wait_for_output("listening on", 20s)) << producer.output();
  Receiver rx = Receiver::connect(service, ReceiverOptions{.connect_timeout = 20s});
  ASSERT_TRUE(producer.wait_for_output("sent frames=", 30s)) << producer.output();

  producer.kill(SIGKILL);
  const ExitStatus st = producer.wait(10s);
  ASSERT_TRUE(st.killed_by(SIGKILL)) << st.describe() << "\n" << producer.output();

  // Everything sent before the producer died is still readable, in order,
  // and then the stream ends.
  for (std::uint64_t seq = 0; seq < kFrames; ++seq) {
    Result<View> v = rx.receive(5s);
    ASSERT_TRUE(v) << "frame " << seq << ": " << v.error().message();
    tf_header h;
    const int status =
        tf_check(reinterpret_cast<const unsigned char*>(v->data()), v->size(), seq, &h);
    ASSERT_EQ(status, TF_OK) << "frame " << seq << ": " << tf_status_text(status);
  }
  Result<View> end = rx.receive(10s);
  ASSERT_FALSE(end) << "an extra buffer arrived";
  EXPECT_EQ(end.error(), Errc::kPeerGone) << end.error().message();
}

}  // namespace
}  // namespace fbuf::testing

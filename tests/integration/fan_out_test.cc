// Fan-out and fan-in across processes: one producer whose every buffer
// reaches three consumer processes, and one consumer process that reads
// from two producer processes at once.
#include <gtest/gtest.h>

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

TEST(FanOut, ThreeConsumerProcessesEachReceiveEveryBuffer) {
  constexpr std::uint64_t kFrames = 20'000;
  constexpr int kConsumers = 3;
  const std::string service = unique_service("fan-out");
  Pool pool(PoolOptions{.name = "it-fan-out",
                        .classes = {{4096, 64}, {65536, 8}},
                        .policy = Policy::kVolatile});
  std::optional<Sender> sender;
  sender.emplace(pool, service);
  std::vector<Child> consumers;
  for (int i = 0; i < kConsumers; ++i) {
    consumers.emplace_back(FBUF_IT_PEER,
                           std::vector<std::string>{"consume", "--service", service, "--count",
                                                    std::to_string(kFrames), "--end", "1"});
  }
  ASSERT_TRUE(sender->wait_for_receivers(kConsumers, 20s))
      << "connected: " << sender->receiver_count();

  const std::size_t max_frame = pool.max_buffer_size();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < kFrames; ++seq) {
    const std::size_t payload = tf_mixed_payload_size(seq, max_frame);
    Result<Buffer> b = sender->allocate(TF_HEADER_SIZE + payload, 20s);
    ASSERT_TRUE(b) << "allocate for frame " << seq << ": " << b.error().message() << "; "
                   << describe(pool.stats());
    checksum =
        tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload));
    const std::error_code ec = sender->send(std::move(*b), TF_HEADER_SIZE + payload, 20s);
    ASSERT_FALSE(ec) << "send of frame " << seq << ": " << ec.message();
  }
  const SenderStats ss = sender->stats();
  EXPECT_EQ(ss.sent, kFrames);
  EXPECT_EQ(ss.delivered, kFrames * kConsumers);

  // A buffer is free again only after the third consumer released it. The
  // check overwrites every buffer it gets back, so a buffer freed too early
  // would also fail some consumer's checksum.
  EXPECT_EQ(check_all_buffers_return(pool, 30s), "");

  sender.reset();
  for (Child& c : consumers) {
    const ExitStatus st = c.wait(60s);
    EXPECT_TRUE(st.exited_with(0)) << c.command() << ": " << st.describe() << "\n" << c.output();
    EXPECT_EQ(field(c.output(), "checksum"), hex(checksum)) << c.output();
    EXPECT_EQ(field(c.output(), "frames"), std::to_string(kFrames));
  }
  const PoolStats s = pool.stats();
  EXPECT_EQ(s.free, s.total) << describe(s);
  EXPECT_EQ(s.rejected_returns, 0u) << describe(s);
}

TEST(FanIn, OneConsumerProcessReadsFromTwoProducerProcesses) {
  constexpr int kFrames = 20'000;
  const std::string count = std::to_string(kFrames);
  const std::string first = unique_service("fan-in-a");
  const std::string second = unique_service("fan-in-b");
  Child producer_a(FBUF_IT_PEER, {"produce", "--service", first, "--count", count});
  Child producer_b(FBUF_IT_PEER, {"produce", "--service", second, "--count", count});
  ASSERT_TRUE(producer_a.wait_for_output("listening on", 20s)) << producer_a.output();
  ASSERT_TRUE(producer_b.wait_for_output("listening on", 20s)) << producer_b.output();
  Child consumer(FBUF_IT_PEER, {"consume-two", "--service", first, "--service", second,
                                "--count", count});

  const ExitStatus sa = producer_a.wait(120s);
  const ExitStatus sb = producer_b.wait(120s);
  const ExitStatus sc = consumer.wait(120s);
  ASSERT_TRUE(sa.exited_with(0)) << sa.describe() << "\n" << producer_a.output();
  ASSERT_TRUE(sb.exited_with(0)) << sb.describe() << "\n" << producer_b.output();
  ASSERT_TRUE(sc.exited_with(0)) << sc.describe() << "\n" << consumer.output();
  EXPECT_EQ(field(consumer.output(), "checksum0"), field(producer_a.output(), "checksum"));
  EXPECT_EQ(field(consumer.output(), "checksum1"), field(producer_b.output(), "checksum"));
  // Both producers checked that every buffer came back before closing.
  EXPECT_NE(producer_a.output().find("returns ok"), std::string::npos) << producer_a.output();
  EXPECT_NE(producer_b.output().find("returns ok"), std::string::npos) << producer_b.output();
}

}  // namespace
}  // namespace fbuf::testing

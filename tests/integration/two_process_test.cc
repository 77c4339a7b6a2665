// Two processes exchanging buffers: the test process (or a peer program) is
// the producer, another program is the consumer, and each checks what it
// can see: order, loss, duplication, content, and that every buffer comes
// back to the producer's pool.
#include <gtest/gtest.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "child_process.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

TEST(TwoProcess, StreamsAMillionBuffersInOrder) {
  constexpr std::uint64_t kFrames = 1'000'000;
  const std::string service = unique_service("stream");
  Pool pool(PoolOptions{.name = "it-stream",
                        .classes = {{4096, 256}, {65536, 32}, {1 << 20, 4}},
                        .policy = Policy::kVolatile});
  std::optional<Sender> sender;
  sender.emplace(pool, service);
  Child consumer(FBUF_IT_PEER, {"consume", "--service", service, "--count",
                                std::to_string(kFrames), "--end", "1"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << consumer.output();

  const std::size_t max_frame = pool.max_buffer_size();
  std::uint64_t checksum = TF_FNV_OFFSET;
  std::uint64_t counts[3] = {0, 0, 0};
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seq = 0; seq < kFrames; ++seq) {
    const std::size_t payload = tf_mixed_payload_size(seq, max_frame);
    Result<Buffer> b = sender->allocate(TF_HEADER_SIZE + payload, 20s);
    ASSERT_TRUE(b) << "allocate for frame " << seq << ": " << b.error().message() << "\n"
                   << describe(pool.stats()) << "\n" << consumer.output();
    ++counts[b->capacity() <= 4096 ? 0 : b->capacity() <= 65536 ? 1 : 2];
    const std::uint64_t c = tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload);
    const std::error_code ec = sender->send(std::move(*b), TF_HEADER_SIZE + payload, 20s);
    ASSERT_FALSE(ec) << "send of frame " << seq << ": " << ec.message() << "\n"
                     << consumer.output();
    checksum = tf_stream_add(checksum, c);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("sent %" PRIu64 " frames (%" PRIu64 " small, %" PRIu64 " medium, %" PRIu64
              " large) in %.2f s\n",
              kFrames, counts[0], counts[1], counts[2], seconds);
  EXPECT_GT(counts[1], 0u);
  EXPECT_GT(counts[2], 0u);

  // Closing the sender ends the stream; the consumer drains it and exits.
  sender.reset();
  const ExitStatus st = consumer.wait(120s);
  ASSERT_TRUE(st.exited_with(0)) << consumer.command() << ": " << st.describe() << "\n"
                                 << consumer.output();
  EXPECT_EQ(field(consumer.output(), "frames"), std::to_string(kFrames));
  EXPECT_EQ(field(consumer.output(), "checksum"), hex(checksum)) << consumer.output();

  // With the consumer gone, every buffer is back in the producer's pool.
  EXPECT_EQ(check_all_buffers_return(pool, 10s), "");
  const PoolStats s = pool.stats();
  EXPECT_EQ(s.free, s.total) << describe(s);
  EXPECT_EQ(s.rejected_returns, 0u) << describe(s);
}

// A producer and a consumer program talking to each other over the C API
// (fbuf/uf.h), the C++ API, or one of each: the frame format is shared, so
// every pairing must agree on every frame.
enum class Lang { kC, kCxx };

struct Pairing {
  Lang producer;
  Lang consumer;
};

std::string name_of(const Pairing& p) {
  auto lang = [](Lang l) { return l == Lang::kC ? std::string("C") : std::string("Cxx"); };
  return lang(p.producer) + "ProducerTo" + lang(p.consumer) + "Consumer";
}

std::string test_name(const ::testing::TestParamInfo<Pairing>& param) {
  return name_of(param.param);
}

// Names the pairing in test listings and failure messages.
void PrintTo(const Pairing& p, std::ostream* os) { *os << name_of(p); }

class CrossProcess : public ::testing::TestWithParam<Pairing> {};

TEST_P(CrossProcess, ProducerAndConsumerAgreeOnEveryFrame) {
  constexpr int kFrames = 100'000;
  const std::string count = std::to_string(kFrames);
  const std::string service = unique_service("pair");
  const Pairing p = GetParam();

  std::optional<Child> producer;
  if (p.producer == Lang::kC) {
    producer.emplace(FBUF_IT_C_PEER, std::vector<std::string>{"produce", service, count});
  } else {
    producer.emplace(FBUF_IT_PEER,
                     std::vector<std::string>{"produce", "--service", service, "--count", count});
  }
  ASSERT_TRUE(producer->wait_for_output("listening on", 20s)) << producer->output();
  std::optional<Child> consumer;
  if (p.consumer == Lang::kC) {
    consumer.emplace(FBUF_IT_C_PEER, std::vector<std::string>{"consume", service, count});
  } else {
    consumer.emplace(FBUF_IT_PEER, std::vector<std::string>{"consume", "--service", service,
                                                            "--count", count, "--end", "1"});
  }

  const ExitStatus ps = producer->wait(120s);
  const ExitStatus cs = consumer->wait(120s);
  ASSERT_TRUE(ps.exited_with(0)) << producer->command() << ": " << ps.describe() << "\n"
                                 << producer->output();
  ASSERT_TRUE(cs.exited_with(0)) << consumer->command() << ": " << cs.describe() << "\n"
                                 << consumer->output();
  const std::optional<std::string> sent = field(producer->output(), "checksum");
  ASSERT_TRUE(sent.has_value()) << producer->output();
  EXPECT_EQ(field(consumer->output(), "checksum"), sent)
      << producer->output() << consumer->output();
  EXPECT_EQ(field(consumer->output(), "frames"), count);
}

INSTANTIATE_TEST_SUITE_P(Languages, CrossProcess,
                         ::testing::Values(Pairing{Lang::kC, Lang::kC},
                                           Pairing{Lang::kCxx, Lang::kCxx},
                                           Pairing{Lang::kC, Lang::kCxx},
                                           Pairing{Lang::kCxx, Lang::kC}),
                         test_name);

}  // namespace
}  // namespace fbuf::testing

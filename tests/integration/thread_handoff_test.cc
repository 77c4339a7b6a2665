// Thread handoff inside one process: a producer thread and consumer threads
// joined by connect_local(), with the same frames as the process tests.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;

// What a consumer thread saw; checked on the test's thread.
struct Seen {
  std::uint64_t frames = 0;
  std::uint64_t checksum = TF_FNV_OFFSET;
  std::string problem;  // empty when every frame was right and the stream ended
};

void consume(Receiver rx, std::uint64_t expected_frames, Seen& seen) {
  for (;;) {
    Result<View> v = rx.receive(20s);
    if (!v) {
      if (v.error() != Errc::kPeerGone) {
        seen.problem = "receive() after " + std::to_string(seen.frames) +
                       " frames: " + v.error().message();
      } else if (seen.frames != expected_frames) {
        seen.problem = "stream ended after " + std::to_string(seen.frames) + " frames";
      }
      return;
    }
    tf_header h;
    const int status =
        tf_check(reinterpret_cast<const unsigned char*>(v->data()), v->size(), seen.frames, &h);
    if (status != TF_OK) {
      seen.problem = "frame " + std::to_string(seen.frames) + ": " + tf_status_text(status) +
                     " (got sequence " + std::to_string(h.sequence) + ")";
      return;
    }
    seen.checksum = tf_stream_add(seen.checksum, h.checksum);
    ++seen.frames;
  }
}

// Sends `frames` frames and closes the sender; returns the stream checksum,
// or an error in `problem`.
std::uint64_t produce(Sender sender, std::uint64_t frames, std::string& problem) {
  const std::size_t max_frame = sender.pool().max_buffer_size();
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < frames; ++seq) {
    const std::size_t payload = tf_mixed_payload_size(seq, max_frame);
    Result<Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, 20s);
    if (!b) {
      problem = "allocate for frame " + std::to_string(seq) + ": " + b.error().message();
      return 0;
    }
    checksum =
        tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload));
    const std::error_code ec = sender.send(std::move(*b), TF_HEADER_SIZE + payload, 20s);
    if (ec) {
      problem = "send of frame " + std::to_string(seq) + ": " + ec.message();
      return 0;
    }
  }
  return checksum;
}

void run_handoff(std::uint64_t frames, int receivers) {
  Pool pool(PoolOptions{.name = "it-threads",
                        .classes = {{4096, 128}, {65536, 16}},
                        .policy = Policy::kVolatile});
  Sender sender(pool);
  std::vector<Seen> seen(static_cast<std::size_t>(receivers));
  std::vector<std::thread> consumers;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    consumers.emplace_back(consume, sender.connect_local(), frames, std::ref(seen[i]));
  }
  std::string problem;
  std::uint64_t sent = 0;
  std::thread producer([&] { sent = produce(std::move(sender), frames, problem); });
  producer.join();
  for (std::thread& t : consumers) t.join();

  ASSERT_EQ(problem, "");
  for (const Seen& s : seen) {
    EXPECT_EQ(s.problem, "");
    EXPECT_EQ(s.frames, frames);
    EXPECT_EQ(s.checksum, sent);
  }
  EXPECT_EQ(check_all_buffers_return(pool, 10s), "");
}

TEST(ThreadHandoff, HandsAHundredThousandBuffersToAnotherThreadInOrder) {
  run_handoff(100'000, 1);
}

TEST(ThreadHandoff, TwoLocalReceiversEachSeeEveryBuffer) {
  run_handoff(20'000, 2);
}

}  // namespace
}  // namespace fbuf::testing

// fbuf_producer: a "camera" process that renders synthetic video frames
// straight into pool buffers and publishes them to every consumer process
// connected to its service. Only descriptors travel; the frames are never
// copied.
//
//   fbuf_producer --service NAME [--count N] [--receivers K]
//                 [--width W] [--height H] [--policy volatile|read-only|copy-on-write]
//
// Waits for K consumers, sends N frames, closes the channel (the consumers
// drain what was sent and see the end of the stream) and prints what it
// moved and a checksum that every consumer's must match.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "fbuf/fbuf.h"
#include "frame.h"

namespace {

using namespace std::chrono_literals;
using fbuf_examples::FrameHeader;

struct Options {
  std::string service;
  std::uint64_t count = 600;
  std::size_t receivers = 1;
  std::uint32_t width = 640;
  std::uint32_t height = 360;
  fbuf::Policy policy = fbuf::Policy::kVolatile;
};

int usage() {
  std::fprintf(stderr,
               "usage: fbuf_producer --service NAME [--count N] [--receivers K] [--width W] "
               "[--height H] [--policy volatile|read-only|copy-on-write]\n");
  return 2;
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view key = argv[i];
    const char* value = argv[i + 1];
    if (key == "--service") {
      o.service = value;
    } else if (key == "--count") {
      o.count = std::strtoull(value, nullptr, 10);
    } else if (key == "--receivers") {
      o.receivers = std::strtoul(value, nullptr, 10);
    } else if (key == "--width") {
      o.width = static_cast<std::uint32_t>(std::strtoul(value, nullptr, 10)) & ~1u;
    } else if (key == "--height") {
      o.height = static_cast<std::uint32_t>(std::strtoul(value, nullptr, 10));
    } else if (key == "--policy") {
      const std::string_view p = value;
      if (p == "volatile") {
        o.policy = fbuf::Policy::kVolatile;
      } else if (p == "read-only") {
        o.policy = fbuf::Policy::kReadOnly;
      } else if (p == "copy-on-write") {
        o.policy = fbuf::Policy::kCopyOnWrite;
      } else {
        return false;
      }
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && !o.service.empty() && o.width > 0 && o.height > 0 && o.receivers > 0;
}

int run(const Options& o) {
  const std::size_t size = fbuf_examples::frame_size(o.width, o.height);
  // Sixteen frames in flight: enough to keep a consumer busy while the
  // camera renders the next ones.
  fbuf::Pool pool(fbuf::PoolOptions{
      .name = "camera-frames", .classes = {{size, 16}}, .policy = o.policy});
  fbuf::Sender sender(pool, o.service);
  std::printf("producer: %ux%u YUYV frames (%zu bytes), policy %s, waiting for %zu consumer(s) "
              "on '%s'\n",
              o.width, o.height, size, fbuf::to_string(o.policy), o.receivers, o.service.c_str());
  std::fflush(stdout);
  if (!sender.wait_for_receivers(o.receivers, 30s)) {
    std::fprintf(stderr, "producer: only %zu of %zu consumer(s) connected in 30 s\n",
                 sender.receiver_count(), o.receivers);
    return 1;
  }

  std::uint64_t stream = fbuf_examples::kChecksumSeed;
  std::uint64_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seq = 0; seq < o.count; ++seq) {
    // The frame is rendered in place, in the buffer the consumers will read.
    fbuf::Result<fbuf::Buffer> buf = sender.allocate(size, 10s);
    if (!buf) {
      std::fprintf(stderr, "producer: allocate for frame %llu: %s\n",
                   static_cast<unsigned long long>(seq), buf.error().message().c_str());
      return 1;
    }
    const FrameHeader h = fbuf_examples::render_frame(buf->bytes(), seq, o.width, o.height);
    if (std::error_code ec = sender.send(std::move(*buf), size, 10s)) {
      std::fprintf(stderr, "producer: send of frame %llu: %s\n",
                   static_cast<unsigned long long>(seq), ec.message().c_str());
      return 1;
    }
    stream = fbuf_examples::add_to_stream(stream, h.checksum);
    bytes += size;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const fbuf::SenderStats st = sender.stats();
  std::printf("producer: delivered %llu descriptors to %zu consumer(s)\n",
              static_cast<unsigned long long>(st.delivered), sender.receiver_count());
  fbuf_examples::print_summary("producer", o.count, bytes, seconds, stream);
  return 0;  // The sender closes here: the consumers see the end of the stream.
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return usage();
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "producer: %s\n", e.what());
    return 1;
  }
}

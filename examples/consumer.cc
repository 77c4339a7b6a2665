// fbuf_consumer: a "detector" process that connects to a producer's service,
// reads each frame in place through a read-only view (no copy), checks it,
// measures its brightness and capture-to-read latency, and returns it.
//
//   fbuf_consumer --service NAME [--connect-timeout SECONDS]
//
// Runs until the producer closes the stream, then prints what it received
// and a checksum that must match the producer's. Exits 1 on any lost,
// repeated or damaged frame.
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

// Mean luma of a YUYV image, sampled every 16th pixel: the "detection".
double mean_luma(std::span<const std::byte> image) {
  std::uint64_t sum = 0;
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < image.size(); i += 32) {
    sum += std::to_integer<std::uint64_t>(image[i]);
    ++n;
  }
  return n == 0 ? 0.0 : static_cast<double>(sum) / static_cast<double>(n);
}

int run(const std::string& service, std::chrono::seconds connect_timeout) {
  fbuf::Receiver rx =
      fbuf::Receiver::connect(service, fbuf::ReceiverOptions{.connect_timeout = connect_timeout});
  std::printf("consumer: connected to '%s'\n", service.c_str());
  std::fflush(stdout);

  std::uint64_t frames = 0;
  std::uint64_t bytes = 0;
  std::uint64_t stream = fbuf_examples::kChecksumSeed;
  double latency_us_sum = 0;
  double brightest = -1;
  std::uint64_t brightest_frame = 0;
  std::chrono::steady_clock::time_point start;
  for (;;) {
    fbuf::Result<fbuf::View> view = rx.receive(30s);
    if (!view) {
      if (view.error() == fbuf::Errc::kPeerGone) break;  // the end of the stream
      std::fprintf(stderr, "consumer: receive after %llu frames: %s\n",
                   static_cast<unsigned long long>(frames), view.error().message().c_str());
      return 1;
    }
    if (frames == 0) start = std::chrono::steady_clock::now();
    fbuf_examples::FrameHeader h;
    std::uint64_t image_checksum = 0;
    if (const char* problem = fbuf_examples::check_frame(view->bytes(), frames, h, image_checksum)) {
      std::fprintf(stderr, "consumer: frame %llu: %s (header says sequence %llu)\n",
                   static_cast<unsigned long long>(frames), problem,
                   static_cast<unsigned long long>(h.sequence));
      return 1;
    }
    latency_us_sum += static_cast<double>(fbuf_examples::monotonic_ns() - h.capture_ns) / 1e3;
    const double luma = mean_luma(view->bytes().subspan(sizeof h));
    if (luma > brightest) {
      brightest = luma;
      brightest_frame = h.sequence;
    }
    stream = fbuf_examples::add_to_stream(stream, image_checksum);
    bytes += view->size();
    ++frames;
    // `view` goes out of scope here: the buffer returns to the producer.
  }
  if (frames == 0) {
    std::fprintf(stderr, "consumer: the stream ended before any frame arrived\n");
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("consumer: mean capture-to-read latency %.1f us; brightest frame %llu (luma %.1f)\n",
              latency_us_sum / static_cast<double>(frames),
              static_cast<unsigned long long>(brightest_frame), brightest);
  fbuf_examples::print_summary("consumer", frames, bytes, seconds, stream);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string service;
  long connect_timeout = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view key = argv[i];
    if (key == "--service") {
      service = argv[i + 1];
    } else if (key == "--connect-timeout") {
      connect_timeout = std::strtol(argv[i + 1], nullptr, 10);
    } else {
      service.clear();
      break;
    }
  }
  if (service.empty() || argc % 2 == 0) {
    std::fprintf(stderr, "usage: fbuf_consumer --service NAME [--connect-timeout SECONDS]\n");
    return 2;
  }
  try {
    return run(service, std::chrono::seconds(connect_timeout));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}

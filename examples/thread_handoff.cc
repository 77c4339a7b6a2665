// fbuf_thread_handoff: the same camera pipeline inside one process. A camera
// thread renders frames into pool buffers; a detector thread and a recorder
// thread each receive every frame (fan-out through two connect_local()
// receivers) and read it in place. A buffer returns to the pool once both
// have dropped their view.
//
//   fbuf_thread_handoff [--count N] [--width W] [--height H]
//
// Prints what each stage moved; exits 1 unless every stage saw every frame
// intact and the checksums agree.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "fbuf/fbuf.h"
#include "frame.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct StageResult {
  std::uint64_t frames = 0;
  std::uint64_t bytes = 0;
  std::uint64_t checksum = fbuf_examples::kChecksumSeed;
  double seconds = 0;
  std::string problem;  // empty when all went well
};

void camera(fbuf::Sender sender, std::uint64_t count, std::uint32_t width, std::uint32_t height,
            StageResult& out) {
  const std::size_t size = fbuf_examples::frame_size(width, height);
  const auto start = Clock::now();
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    fbuf::Result<fbuf::Buffer> buf = sender.allocate(size, 10s);
    if (!buf) {
      out.problem = "allocate: " + buf.error().message();
      return;
    }
    const fbuf_examples::FrameHeader h =
        fbuf_examples::render_frame(buf->bytes(), seq, width, height);
    if (std::error_code ec = sender.send(std::move(*buf), size, 10s)) {
      out.problem = "send: " + ec.message();
      return;
    }
    out.checksum = fbuf_examples::add_to_stream(out.checksum, h.checksum);
    out.bytes += size;
    ++out.frames;
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // `sender` is destroyed here: the receivers drain and see the end.
}

void reader(fbuf::Receiver rx, StageResult& out) {
  const auto start = Clock::now();
  for (;;) {
    fbuf::Result<fbuf::View> view = rx.receive(30s);
    if (!view) {
      if (view.error() != fbuf::Errc::kPeerGone) out.problem = "receive: " + view.error().message();
      break;
    }
    fbuf_examples::FrameHeader h;
    std::uint64_t image_checksum = 0;
    if (const char* p = fbuf_examples::check_frame(view->bytes(), out.frames, h, image_checksum)) {
      out.problem = "frame " + std::to_string(out.frames) + ": " + p;
      break;
    }
    out.checksum = fbuf_examples::add_to_stream(out.checksum, image_checksum);
    out.bytes += view->size();
    ++out.frames;
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
}

int run(std::uint64_t count, std::uint32_t width, std::uint32_t height) {
  const std::size_t size = fbuf_examples::frame_size(width, height);
  fbuf::Pool pool(fbuf::PoolOptions{.name = "handoff-frames", .classes = {{size, 16}}});
  fbuf::Sender sender(pool);
  StageResult detector_result;
  StageResult recorder_result;
  StageResult camera_result;
  std::thread detector(reader, sender.connect_local(), std::ref(detector_result));
  std::thread recorder(reader, sender.connect_local(), std::ref(recorder_result));
  std::thread cam(camera, std::move(sender), count, width, height, std::ref(camera_result));
  cam.join();
  detector.join();
  recorder.join();

  fbuf_examples::print_summary("camera", camera_result.frames, camera_result.bytes,
                               camera_result.seconds, camera_result.checksum);
  fbuf_examples::print_summary("detector", detector_result.frames, detector_result.bytes,
                               detector_result.seconds, detector_result.checksum);
  fbuf_examples::print_summary("recorder", recorder_result.frames, recorder_result.bytes,
                               recorder_result.seconds, recorder_result.checksum);
  bool ok = true;
  for (const auto& [name, r] : {std::pair{"camera", &camera_result},
                                std::pair{"detector", &detector_result},
                                std::pair{"recorder", &recorder_result}}) {
    if (!r->problem.empty()) {
      std::fprintf(stderr, "%s: %s\n", name, r->problem.c_str());
      ok = false;
    } else if (r->frames != count || r->checksum != camera_result.checksum) {
      std::fprintf(stderr, "%s: %llu of %llu frames, checksum %016llx\n", name,
                   static_cast<unsigned long long>(r->frames),
                   static_cast<unsigned long long>(count),
                   static_cast<unsigned long long>(r->checksum));
      ok = false;
    }
  }
  const fbuf::PoolStats st = pool.stats();
  std::printf("pool: %u buffers, %u free at the end\n", st.total, st.free);
  std::printf("thread handoff: %s\n", ok ? "checksums match" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t count = 2000;
  std::uint32_t width = 640;
  std::uint32_t height = 360;
  bool bad = argc % 2 == 0;
  for (int i = 1; i + 1 < argc && !bad; i += 2) {
    const std::string_view key = argv[i];
    const unsigned long long value = std::strtoull(argv[i + 1], nullptr, 10);
    if (key == "--count") {
      count = value;
    } else if (key == "--width") {
      width = static_cast<std::uint32_t>(value) & ~1u;
    } else if (key == "--height") {
      height = static_cast<std::uint32_t>(value);
    } else {
      bad = true;
    }
  }
  if (bad || width == 0 || height == 0) {
    std::fprintf(stderr, "usage: fbuf_thread_handoff [--count N] [--width W] [--height H]\n");
    return 2;
  }
  try {
    return run(count, width, height);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "thread handoff: %s\n", e.what());
    return 1;
  }
}

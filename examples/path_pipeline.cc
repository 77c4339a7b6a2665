// The path, end to end: a camera process renders 1 MiB frames into its
// pool; a tagger process receives each frame, builds a Cap'n Proto
// FrameMeta header (frame_meta.capnp) in its own pool and sends
// [header segment(s)] + [the frame it received, forwarded] as one Message
// to two recorder processes (fan-out). No byte of a frame is copied: each
// recorder reads it in its own read-only mapping of the camera's pool and
// proves it (/proc/self/maps names the camera's pool), then checks the
// frame's checksum; the stream checksums of the camera and of every
// recorder must match (examples/demo.sh compares them).
//
//   fbuf_path_pipeline camera   --service S --pool NAME --count N
//   fbuf_path_pipeline tagger   --from S --service T --receivers K
//   fbuf_path_pipeline recorder --service T --pool NAME
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <capnp/message.h>

#include "fbuf/fbuf.h"
#include "fbuf/typed/capnp.h"
#include "frame.h"
#include "frame_meta.capnp.h"
#include "mapping.h"

namespace {

using namespace std::chrono_literals;
using fbuf_examples::FrameHeader;

constexpr std::uint32_t kWidth = 1024, kHeight = 511;  // a frame is just under 1 MiB
constexpr std::size_t kFrameClass = std::size_t{1} << 20;
constexpr std::uint32_t kFrames = 8;  // buffers in the camera's pool

std::string arg(int argc, char** argv, std::string_view key, std::string fallback = {}) {
  for (int i = 2; i + 1 < argc; i += 2)
    if (std::string_view(argv[i]).substr(2) == key) return argv[i + 1];
  return fallback;
}

int camera(const std::string& service, const std::string& pool_name, std::uint64_t count) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = pool_name, .classes = {{kFrameClass, kFrames}},
                                    .policy = fbuf::Policy::kReadOnly});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 20s)) {
    std::fprintf(stderr, "camera: no tagger connected\n");
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t stream = fbuf_examples::kChecksumSeed, bytes = 0;
  const std::size_t size = fbuf_examples::frame_size(kWidth, kHeight);
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    auto b = tx.allocate(size, 10s);
    if (!b) {
      std::fprintf(stderr, "camera: allocate %llu: %s\n", static_cast<unsigned long long>(seq),
                   b.error().message().c_str());
      return 1;
    }
    const FrameHeader h = fbuf_examples::render_frame(std::span(b->data(), size), seq, kWidth, kHeight);
    stream = fbuf_examples::add_to_stream(stream, h.checksum);
    if (auto ec = tx.send(std::move(*b), size, 10s)) {
      std::fprintf(stderr, "camera: send %llu: %s\n", static_cast<unsigned long long>(seq), ec.message().c_str());
      return 1;
    }
    bytes += size;
  }
  // Every frame comes back once the tagger and both recorders are done
  // with it: then the pool is all free, and the stream may end.
  std::vector<fbuf::Buffer> held;
  for (std::uint32_t i = 0; i < kFrames; ++i) {
    auto b = tx.allocate(size, 30s);
    if (!b) {
      std::fprintf(stderr, "camera: frame buffers not all back: %s\n", b.error().message().c_str());
      return 1;
    }
    held.push_back(std::move(*b));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fbuf_examples::print_summary("camera", count, bytes, s, stream);
  std::printf("camera: all %u frame buffers back in pool '%s'\n", kFrames, pool_name.c_str());
  return 0;
}

int tagger(const std::string& from, const std::string& service, std::size_t receivers) {
  // Its own pool holds only the headers: every frame it sends is the
  // camera's, forwarded.
  fbuf::Pool pool(fbuf::PoolOptions{.name = "path-tags", .classes = {{4096, 64}},
                                    .policy = fbuf::Policy::kReadOnly});
  fbuf::Sender tx(pool, service);
  fbuf::Receiver rx = fbuf::Receiver::connect(from, {.connect_timeout = 20s});
  if (!tx.wait_for_receivers(receivers, 20s)) {
    std::fprintf(stderr, "tagger: recorders did not connect\n");
    return 1;
  }
  std::uint64_t frames = 0, forwarded = 0, header_bytes = 0;
  for (;;) {
    auto frame = rx.receive(30s);
    if (!frame) {
      if (frame.error() == fbuf::make_error_code(fbuf::Errc::kPeerGone)) break;
      std::fprintf(stderr, "tagger: receive: %s\n", frame.error().message().c_str());
      return 1;
    }
    FrameHeader h;
    std::memcpy(&h, frame->data(), sizeof h);
    // The header, built where it is sent from: segments are pool buffers.
    fbuf::typed::CapnpBuilder b(pool, {.first_segment_bytes = 4096, .allocate_timeout = 10s});
    auto meta = b.initRoot<FrameMeta>();
    meta.setSeq(h.sequence);
    meta.setCamera("camera/front");
    meta.setCaptureNs(h.capture_ns);
    auto det = meta.initDetections(1);
    det[0].setLabel("box");
    det[0].setScore(0.9f);
    det[0].setW(64);
    det[0].setH(64);
    auto m = std::move(b).release_message();
    if (!m) return 1;
    for (std::size_t i = 0; i < m->slice_count(); ++i) header_bytes += m->slice(i).size();
    forwarded += frame->size();
    if (m->append(std::move(*frame))) return 1;
    // [header segment(s)][frame]: one unit, to every recorder.
    if (auto ec = tx.send(std::move(*m), 10s)) {
      std::fprintf(stderr, "tagger: send %llu: %s\n", static_cast<unsigned long long>(frames),
                   ec.message().c_str());
      return 1;
    }
    ++frames;
  }
  std::printf("tagger: messages=%llu header_bytes=%llu (built in pool 'path-tags') "
              "frame_bytes=%llu forwarded, 0 copied\n",
              static_cast<unsigned long long>(frames), static_cast<unsigned long long>(header_bytes),
              static_cast<unsigned long long>(forwarded));
  return 0;
}

int recorder(const std::string& service, const std::string& pool_name) {
  fbuf::Receiver rx = fbuf::Receiver::connect(service, {.connect_timeout = 20s});
  const auto start = std::chrono::steady_clock::now();
  const std::string camera_pool = "/memfd:fbuf:" + pool_name;
  std::uint64_t seq = 0, stream = fbuf_examples::kChecksumSeed, bytes = 0, in_place = 0;
  std::string where;
  for (;; ++seq) {
    auto msg = rx.receive_message(30s);
    if (!msg) {
      if (msg.error() == fbuf::make_error_code(fbuf::Errc::kPeerGone)) break;
      std::fprintf(stderr, "recorder: message %llu: %s\n", static_cast<unsigned long long>(seq),
                   msg.error().message().c_str());
      return 1;
    }
    if (msg->slice_count() < 2) {
      std::fprintf(stderr, "recorder: message %llu has no frame\n", static_cast<unsigned long long>(seq));
      return 1;
    }
    // The last slice is the frame; the slices before it, the header.
    const std::size_t frame_bytes = msg->slice(msg->slice_count() - 1).size();
    auto frame = msg->split(msg->size() - frame_bytes);
    if (!frame) return 1;
    const std::span<const std::byte> f = frame->slice(0);
    // The proof of zero copy: the frame's first and last bytes lie in this
    // process's mapping of the camera's pool.
    const std::string first = fbuf_examples::mapping_of(f.data());
    const std::string last = fbuf_examples::mapping_of(f.data() + f.size() - 1);
    if (first.find(camera_pool) != std::string::npos && first == last) ++in_place;
    if (where.empty()) where = first;
    FrameHeader h;
    std::uint64_t image = 0;
    if (const char* bad = fbuf_examples::check_frame(f, seq, h, image)) {
      std::fprintf(stderr, "recorder: frame %llu: %s\n", static_cast<unsigned long long>(seq), bad);
      return 1;
    }
    auto meta = fbuf::typed::read_capnp(std::move(*msg));
    bool ok = static_cast<bool>(meta);
    if (ok && meta->read([&](fbuf::typed::CapnpMessage& r) {
          auto m = r.root<FrameMeta>();
          ok = m.getSeq() == seq && m.getCaptureNs() == h.capture_ns && m.getDetections().size() == 1;
        }))
      ok = false;
    if (!ok) {
      std::fprintf(stderr, "recorder: header of frame %llu does not match\n", static_cast<unsigned long long>(seq));
      return 1;
    }
    stream = fbuf_examples::add_to_stream(stream, image);
    bytes += f.size();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fbuf_examples::print_summary("recorder", seq, bytes, s, stream);
  std::printf("recorder: zero copy: %llu of %llu frames read in place from %s\n",
              static_cast<unsigned long long>(in_place), static_cast<unsigned long long>(seq), where.c_str());
  return in_place == seq && seq > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "camera")
      return camera(arg(argc, argv, "service"), arg(argc, argv, "pool"),
                    std::strtoull(arg(argc, argv, "count", "200").c_str(), nullptr, 10));
    if (mode == "tagger")
      return tagger(arg(argc, argv, "from"), arg(argc, argv, "service"),
                    std::strtoull(arg(argc, argv, "receivers", "2").c_str(), nullptr, 10));
    if (mode == "recorder") return recorder(arg(argc, argv, "service"), arg(argc, argv, "pool"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(mode.size()), mode.data(), e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: fbuf_path_pipeline camera|tagger|recorder ... (see the source)\n");
  return 2;
}

// fbuf_typed_capnp: frame metadata (examples/frame_meta.capnp) as Cap'n
// Proto messages built directly in pool buffers and read in place. A
// detector builds each FrameMeta with fbuf::typed::CapnpBuilder (segments
// are pool buffers: nothing is serialised into a separate array) and sends
// it; a recorder receives it with fbuf::typed::receive_capnp, which
// validates it under Cap'n Proto's traversal and nesting limits, and reads
// it where it lies. A message that outgrows its first segment goes as one
// aggregate of several segments.
//
//   fbuf_typed_capnp [--count N] [--threads]
//
// By default the recorder is another process (this program re-executed);
// with --threads it is a thread of this one. The recorder checks every
// message against what the detector built for that sequence number, and
// that each segment it read is a received slice in the detector's pool
// (it prints the mapping). Exits 1 unless everything matched.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "fbuf/fbuf.h"
#include "fbuf/typed/capnp.h"
#include "frame_meta.capnp.h"
#include "mapping.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

const char* const kLabels[] = {"person", "car", "bicycle", "dog", "traffic light"};

std::size_t detections_for(std::uint64_t seq) { return seq % 7 + 1; }
std::size_t thumbnail_for(std::uint64_t seq) { return seq % 5 == 0 ? 24000 : 512; }
kj::byte pixel(std::uint64_t seq, std::size_t i) { return static_cast<kj::byte>(i * 31 + seq); }

void build(fbuf::typed::CapnpBuilder& b, std::uint64_t seq) {
  auto meta = b.initRoot<FrameMeta>();
  meta.setSeq(seq);
  meta.setCamera("camera/front");
  meta.setCaptureNs(static_cast<std::int64_t>(seq) * 33'333'333);
  auto dets = meta.initDetections(static_cast<unsigned>(detections_for(seq)));
  for (unsigned i = 0; i < dets.size(); ++i) {
    dets[i].setLabel(kLabels[(seq + i) % 5]);
    dets[i].setScore(static_cast<float>((seq * 13 + i) % 100) / 100.0f);
    dets[i].setX(static_cast<std::uint16_t>(i * 40));
    dets[i].setY(static_cast<std::uint16_t>(seq % 480));
    dets[i].setW(32);
    dets[i].setH(64);
  }
  auto thumb = meta.initThumbnail(static_cast<unsigned>(thumbnail_for(seq)));
  for (std::size_t i = 0; i < thumb.size(); ++i) thumb[i] = pixel(seq, i);
}

// What the recorder checks of each message; false on the first mismatch.
bool matches(FrameMeta::Reader meta, std::uint64_t seq) {
  if (meta.getSeq() != seq || meta.getCamera() != "camera/front" ||
      meta.getCaptureNs() != static_cast<std::int64_t>(seq) * 33'333'333)
    return false;
  auto dets = meta.getDetections();
  if (dets.size() != detections_for(seq)) return false;
  for (unsigned i = 0; i < dets.size(); ++i)
    if (dets[i].getLabel() != kLabels[(seq + i) % 5] || dets[i].getW() != 32) return false;
  auto thumb = meta.getThumbnail();
  if (thumb.size() != thumbnail_for(seq)) return false;
  for (std::size_t i = 0; i < thumb.size(); ++i)
    if (thumb[i] != pixel(seq, i)) return false;
  return true;
}

int detect(fbuf::Sender& tx, std::uint64_t count) {
  fbuf::Pool pool = tx.pool();
  std::uint64_t several = 0;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    fbuf::typed::CapnpBuilder b(pool, {.first_segment_bytes = 4096, .allocate_timeout = 5s});
    build(b, seq);
    if (b.segment_count() > 1) ++several;
    if (auto ec = b.send(tx, 5s)) {
      std::fprintf(stderr, "detector: send %llu: %s\n", static_cast<unsigned long long>(seq),
                   ec.message().c_str());
      return 1;
    }
  }
  std::printf("detector: %llu messages built in pool buffers (%llu of several segments)\n",
              static_cast<unsigned long long>(count), static_cast<unsigned long long>(several));
  return 0;
}

int record(fbuf::Receiver& rx, std::uint64_t count) {
  fbuf::typed::TypedStats stats;
  std::uint64_t seq = 0, several = 0, bytes = 0;
  std::string where;
  for (; seq < count; ++seq) {
    auto msg = rx.receive_message(10s);
    if (!msg) {
      std::printf("recorder: message %llu: %s\n", static_cast<unsigned long long>(seq),
                  msg.error().message().c_str());
      return 1;
    }
    // The slices the reader must read from: the received bytes themselves.
    std::vector<const std::byte*> slices;
    for (std::size_t i = 0; i < msg->slice_count(); ++i) slices.push_back(msg->slice(i).data());
    auto m = fbuf::typed::read_capnp(std::move(*msg), {}, &stats);
    if (!m) {
      std::printf("recorder: message %llu refused: %s\n", static_cast<unsigned long long>(seq), stats.last_reason);
      return 1;
    }
    bool ok = m->segment_count() == slices.size();
    for (std::size_t i = 0; ok && i < slices.size(); ++i) {
      ok = m->segment(i).data() == slices[i];
      bytes += m->segment(i).size();
    }
    if (ok && m->read([&](fbuf::typed::CapnpMessage& r) { ok = matches(r.root<FrameMeta>(), seq); }, &stats))
      ok = false;
    if (!ok) {
      std::printf("recorder: message %llu does not match\n", static_cast<unsigned long long>(seq));
      return 1;
    }
    if (m->segment_count() > 1) ++several;
    if (where.empty()) where = fbuf_examples::mapping_of(m->segment(0).data());
  }
  std::printf("recorder: %llu messages (%llu of several segments, %llu bytes) read in place from %s\n",
              static_cast<unsigned long long>(seq), static_cast<unsigned long long>(several),
              static_cast<unsigned long long>(bytes), where.c_str());
  std::printf("recorder: every message as built, %llu refused\n", static_cast<unsigned long long>(stats.rejected));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t count = 200;
  bool threads = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
      count = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      threads = true;
    } else if (std::strcmp(argv[i], "record") == 0 && i + 2 < argc) {  // the recorder process
      auto rx = fbuf::Receiver::connect(argv[i + 1], {.connect_timeout = 10s});
      return record(rx, std::strtoull(argv[i + 2], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: fbuf_typed_capnp [--count N] [--threads]\n");
      return 2;
    }
  }
  fbuf::Pool pool(fbuf::PoolOptions{.name = "meta",
                                    .classes = {{4096, 64}, {65536, 16}},
                                    .policy = fbuf::Policy::kReadOnly});
  if (threads) {
    fbuf::Sender tx(pool);
    fbuf::Receiver rx = tx.connect_local();
    int recorded = 1;
    std::thread recorder([&] { recorded = record(rx, count); });
    const int detected = detect(tx, count);
    recorder.join();
    return detected | recorded;
  }
  std::string service = "fbuf-example/frame-meta-" + std::to_string(getpid());
  fbuf::Sender tx(pool, service);
  std::string counts = std::to_string(count);
  char self[] = "/proc/self/exe";
  char mode[] = "record";
  char* args[] = {self, mode, service.data(), counts.data(), nullptr};
  pid_t pid;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, args, environ) != 0) {
    std::perror("posix_spawn");
    return 1;
  }
  if (!tx.wait_for_receivers(1, 10s)) {
    std::fprintf(stderr, "detector: no recorder\n");
    return 1;
  }
  const int detected = detect(tx, count);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return detected | (WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

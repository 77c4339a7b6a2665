// fbuf_path_peer: the stages of the path tests (path_test.cc, kill and
// hostile cases in tests/fault/path_kill_test.cc), started with fork +
// exec. Each mode prints what it saw and exits 0 only when every check
// passed.
//
//   source   --service S --pool NAME --count N [--buffers B] [--then hang]
//                          the owner: sends N frames from a pool of B
//                          buffers, checks every buffer came back, prints
//                          checksum=; with hang, waits to be killed instead
//   forward  --from S --to T [--to U ...] [--receivers K] [--count N]
//            [--then hang] [--tolerate 1]
//                          receives frames from S and forwards each view,
//                          without a copy, to Senders T, U, ... (K
//                          receivers each); N frames (0: to the end), then
//                          exits or (hang) waits to be killed; with
//                          --tolerate, a Sender whose receivers are gone
//                          (kNoReceivers) is passed over; with --header 1,
//                          each frame goes on as a Message: a 64-byte
//                          header from the stage's own pool, then the
//                          forwarded view (one --to)
//   sink     --service S [--service T] --pool NAME [--count N] [--hold K]
//            [--messages 1]
//                          receives frames to the end of every stream (or N
//                          per stream), checks each and that its bytes lie
//                          in a mapping of pool NAME (zero copy); with
//                          --hold, keeps the last K views, and once every
//                          stream ended waits for SIGUSR1, then checks
//                          their bytes again and releases them; with
//                          --messages, each item is a Message of a
//                          stage's header and the frame, both checked
//   source   ... [--size BYTES]  frames of about BYTES in one class
//
// Exit status: 0 all checks passed, 1 a check failed, 2 bad usage or setup.
#include <signal.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <span>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace {

using namespace std::chrono_literals;

constexpr int kFailed = 1;
constexpr int kUsage = 2;

class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 2; i + 1 < argc; i += 2) pairs_.emplace_back(argv[i], argv[i + 1]);
  }
  std::vector<std::string> all(std::string_view key) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : pairs_)
      if (k.size() > 2 && std::string_view(k).substr(2) == key) out.push_back(v);
    return out;
  }
  std::string get(std::string_view key, std::string fallback = {}) const {
    auto v = all(key);
    return v.empty() ? fallback : v.back();
  }
  long long number(std::string_view key, long long fallback) const {
    const std::string v = get(key);
    return v.empty() ? fallback : std::strtoll(v.c_str(), nullptr, 10);
  }

 private:
  std::vector<std::pair<std::string, std::string>> pairs_;
};

void say(const char* format, ...) __attribute__((format(printf, 1, 2)));
void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stdout, format, args);
  va_end(args);
  std::fflush(stdout);
}


// The address ranges of this process's mappings of the memfd of pool
// `name` ("/memfd:fbuf:NAME"), from /proc/self/maps.
std::vector<std::pair<std::uintptr_t, std::uintptr_t>> pool_mappings(const std::string& name) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  const std::string tag = "/memfd:fbuf:" + name + " ";
  const std::string tag_end = "/memfd:fbuf:" + name;
  for (std::string line; std::getline(maps, line);) {
    const auto at = line.find("/memfd:fbuf:");
    if (at == std::string::npos) continue;
    std::string path = line.substr(at);
    if (path != tag_end && path.rfind(tag, 0) != 0) continue;
    out.emplace_back(std::strtoull(line.c_str(), nullptr, 16),
                     std::strtoull(line.c_str() + line.find('-') + 1, nullptr, 16));
  }
  return out;
}

// The header a --header stage puts in front of each frame.
constexpr std::size_t kStageHeader = 64;
constexpr std::uint64_t kStageMagic = 0x7061746868647231ULL;  // "pathhdr1"

void write_stage_header(std::byte* at, std::uint64_t seq, std::uint64_t frame_bytes) {
  std::memset(at, 0, kStageHeader);
  std::memcpy(at, &kStageMagic, 8);
  std::memcpy(at + 8, &seq, 8);
  std::memcpy(at + 16, &frame_bytes, 8);
}

bool stage_header_ok(std::span<const std::byte> h, std::uint64_t seq, std::uint64_t frame_bytes) {
  if (h.size() != kStageHeader) return false;
  std::uint64_t magic, s, bytes;
  std::memcpy(&magic, h.data(), 8);
  std::memcpy(&s, h.data() + 8, 8);
  std::memcpy(&bytes, h.data() + 16, 8);
  return magic == kStageMagic && s == seq && bytes == frame_bytes;
}

int source(const Args& args) {
  const std::string service = args.get("service");
  const auto count = static_cast<std::uint64_t>(args.number("count", 100));
  const auto buffers = static_cast<std::uint32_t>(args.number("buffers", 16));
  const auto size = static_cast<std::size_t>(args.number("size", 0));
  fbuf::Pool pool(fbuf::PoolOptions{.name = args.get("pool"), .classes = {{size != 0 ? size : 65536, buffers}},
                                    .policy = fbuf::Policy::kReadOnly});
  fbuf::Sender sender(pool, service);
  say("listening\n");
  if (!sender.wait_for_receivers(1, 30s)) return kFailed;
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    const std::size_t payload = size != 0 ? size - TF_HEADER_SIZE - seq % 64 : 1000 + (seq * 977) % 60000;
    fbuf::Result<fbuf::Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, 20s);
    if (!b) {
      std::fprintf(stderr, "error: allocate: %s\n", b.error().message().c_str());
      return kFailed;
    }
    checksum = tf_stream_add(checksum, tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload));
    if (auto ec = sender.send(std::move(*b), TF_HEADER_SIZE + payload, 20s); ec) {
      std::fprintf(stderr, "error: send: %s\n", ec.message().c_str());
      return kFailed;
    }
  }
  say("sent frames=%" PRIu64 " checksum=%016" PRIx64 "\n", count, checksum);
  if (args.get("then") == "hang")
    for (;;) ::pause();
  const std::string problem = fbuf::testing::check_all_buffers_return(pool, 60s);
  if (!problem.empty()) {
    std::fprintf(stderr, "error: %s\n", problem.c_str());
    return kFailed;
  }
  say("source ok\n");
  return 0;
}

// A receiver in the stage's own process (--local): takes every view (or,
// with --header, every message of a header and a frame) the stage forwards
// to it, checks each frame and that its bytes lie in this process's
// mapping of the owner's pool, and keeps the first `keep` until its stream
// ends: they share the stage's reference, so the owner must not reuse
// their buffers after the stage dropped its own views.
struct LocalSink {
  std::uint64_t frames = 0, in_pool = 0, checksum = TF_FNV_OFFSET;
  std::size_t kept_ok = 0;
  std::string error;

  void run(fbuf::Receiver rx, const std::string& pool, std::size_t keep, bool messages) {
    std::vector<fbuf::Message> kept;
    for (;;) {
      // A View received is kept as a message of one slice.
      fbuf::Message m;
      std::error_code ec;
      if (messages) {
        fbuf::Result<fbuf::Message> r = rx.receive_message(30s);
        if (r) m = std::move(*r);
        ec = r ? std::error_code() : r.error();
      } else {
        fbuf::Result<fbuf::View> r = rx.receive(30s);
        if (r && m.append(std::move(*r))) ec = fbuf::make_error_code(fbuf::Errc::kInvalidArgument);
        if (!r) ec = r.error();
      }
      if (ec) {
        if (ec != fbuf::make_error_code(fbuf::Errc::kPeerGone)) error = "receive: " + ec.message();
        break;
      }
      if (const std::string bad = check(m, frames); !bad.empty()) {
        error = bad;
        break;
      }
      const std::span<const std::byte> frame = m.slice(m.slice_count() - 1);
      const auto at = reinterpret_cast<std::uintptr_t>(frame.data());
      for (const auto& [lo, hi] : pool_mappings(pool))
        if (at >= lo && at + frame.size() <= hi) {
          ++in_pool;
          break;
        }
      tf_header h;
      tf_check(reinterpret_cast<const unsigned char*>(frame.data()), frame.size(), frames, &h);
      checksum = tf_stream_add(checksum, h.checksum);
      ++frames;
      if (kept.size() < keep) kept.push_back(std::move(m));
    }
    for (std::size_t seq = 0; seq < kept.size(); ++seq) {
      if (const std::string bad = check(kept[seq], seq); !bad.empty()) {
        if (error.empty()) error = "kept " + bad + " (changed)";
        return;
      }
      ++kept_ok;
    }
  }

  // Empty if `m` is frame `seq` (behind the stage's header if it has two
  // slices).
  static std::string check(const fbuf::Message& m, std::uint64_t seq) {
    const std::span<const std::byte> frame = m.slice(m.slice_count() - 1);
    if (m.slice_count() > 2 || (m.slice_count() == 2 && !stage_header_ok(m.slice(0), seq, frame.size())))
      return "message " + std::to_string(seq) + ": a bad header";
    tf_header h;
    const int status = tf_check(reinterpret_cast<const unsigned char*>(frame.data()), frame.size(), seq, &h);
    if (status != TF_OK) return "frame " + std::to_string(seq) + ": " + tf_status_text(status);
    return {};
  }
};

int forward(const Args& args) {
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  const auto receivers = static_cast<std::size_t>(args.number("receivers", 1));
  const bool tolerate = args.get("tolerate") == "1";
  const bool header = args.get("header") == "1";
  // Its own pool holds the headers only: every frame it sends is forwarded.
  fbuf::Pool pool(fbuf::PoolOptions{.name = "path-stage", .classes = {{4096, header ? 64u : 2u}},
                                    .policy = fbuf::Policy::kReadOnly});
  std::vector<fbuf::Sender> senders;
  for (const std::string& to : args.all("to")) senders.emplace_back(pool, to);
  // A message takes the view: one Sender (fan-out by its receivers).
  if (header && senders.size() != 1) return kUsage;
  // --local N: N receivers of the first Sender in threads of this process.
  const auto local = static_cast<std::size_t>(args.number("local", 0));
  const auto keep = static_cast<std::size_t>(args.number("keep", 0));
  if (local != 0 && senders.empty()) return kUsage;
  std::vector<LocalSink> local_sinks(local);
  std::vector<std::thread> local_threads;
  for (std::size_t i = 0; i < local; ++i)
    local_threads.emplace_back([&, i, rx = senders[0].connect_local()]() mutable {
      local_sinks[i].run(std::move(rx), args.get("pool"), keep, header);
    });
  fbuf::Receiver rx = fbuf::Receiver::connect(args.get("from"), fbuf::ReceiverOptions{.connect_timeout = 20s});
  for (std::size_t k = 0; k < senders.size(); ++k)
    if (!senders[k].wait_for_receivers(receivers + (k == 0 ? local : 0), 30s)) {
      auto& s = senders[k];
      std::fprintf(stderr, "error: receivers of %s did not connect\n", s.service().c_str());
      return kFailed;
    }
  say("forwarding\n");
  std::uint64_t n = 0;
  while (count == 0 || n < count) {
    fbuf::Result<fbuf::View> v = rx.receive(30s);
    if (!v) {
      if (v.error() == fbuf::make_error_code(fbuf::Errc::kPeerGone)) break;
      std::fprintf(stderr, "error: receive: %s\n", v.error().message().c_str());
      return kFailed;
    }
    for (auto& s : senders) {
      std::error_code ec;
      if (header) {
        // [a 64-byte header of this stage][the frame, forwarded]: one unit.
        fbuf::Result<fbuf::Buffer> h = s.allocate(kStageHeader, 20s);
        if (!h) {
          std::fprintf(stderr, "error: header of frame %" PRIu64 ": %s\n", n, h.error().message().c_str());
          return kFailed;
        }
        write_stage_header(h->data(), n, v->size());
        fbuf::Message m;
        if (m.append(std::move(*h), kStageHeader) || m.append(std::move(*v))) return kFailed;
        ec = s.send(std::move(m), 20s);
      } else {
        ec = s.send(*v, 20s);
      }
      if (ec == fbuf::make_error_code(fbuf::Errc::kNoReceivers) && tolerate) continue;
      if (ec) {
        std::fprintf(stderr, "error: forward of frame %" PRIu64 ": %s\n", n, ec.message().c_str());
        return kFailed;
      }
    }
    ++n;  // the view goes back to its owner here; the receivers downstream hold their own
  }
  say("forwarded frames=%" PRIu64 "\n", n);
  if (local != 0) {
    // The end of the stream reaches the threads; their views outlive it.
    senders.clear();
    for (auto& t : local_threads) t.join();
    for (const LocalSink& l : local_sinks) {
      if (!l.error.empty()) {
        std::fprintf(stderr, "error: local receiver: %s\n", l.error.c_str());
        return kFailed;
      }
      say("local frames=%" PRIu64 " in_pool=%" PRIu64 " checksum=%016" PRIx64 " kept_ok=%zu\n", l.frames,
          l.in_pool, l.checksum, l.kept_ok);
    }
  }
  if (args.get("then") == "hang")
    for (;;) ::pause();
  return 0;
}

int sink(const Args& args) {
  const std::vector<std::string> services = args.all("service");
  const std::string pool = args.get("pool");
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  const auto hold = static_cast<std::size_t>(args.number("hold", 0));
  const bool messages = args.get("messages") == "1";
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  struct Stream {
    fbuf::Receiver rx;
    std::uint64_t expected = 0;
    std::uint64_t checksum = TF_FNV_OFFSET;
    bool ended = false;
  };
  std::vector<Stream> streams;
  for (const auto& s : services)
    streams.push_back(Stream{fbuf::Receiver::connect(s, fbuf::ReceiverOptions{.connect_timeout = 20s})});
  say("connected\n");
  // One item received: a View, or a Message of a header and the frame.
  struct Item {
    fbuf::View view;
    fbuf::Message message;
    std::span<const std::byte> frame() const {
      return view ? std::span<const std::byte>(view.data(), view.size()) : message.slice(1);
    }
  };
  std::deque<std::pair<std::uint64_t, Item>> held;
  std::uint64_t headers = 0;
  std::uint64_t in_pool = 0;
  auto all_ended = [&] {
    for (auto& s : streams)
      if (!s.ended && (count == 0 || s.expected < count)) return false;
    return true;
  };
  while (!all_ended()) {
    for (auto& s : streams) {
      if (s.ended || (count != 0 && s.expected >= count)) continue;
      Item item;
      std::error_code ec;
      if (messages) {
        fbuf::Result<fbuf::Message> m = s.rx.receive_message(hold != 0 ? 50ms : 30s);
        if (m) item.message = std::move(*m);
        ec = m ? std::error_code() : m.error();
      } else {
        fbuf::Result<fbuf::View> v = s.rx.receive(hold != 0 ? 50ms : 30s);
        if (v) item.view = std::move(*v);
        ec = v ? std::error_code() : v.error();
      }
      if (ec) {
        if (ec == fbuf::make_error_code(fbuf::Errc::kPeerGone)) {
          s.ended = true;
          continue;
        }
        if (ec == fbuf::make_error_code(fbuf::Errc::kTimedOut) && hold != 0) continue;
        std::fprintf(stderr, "error: receive: %s\n", ec.message().c_str());
        return kFailed;
      }
      if (messages) {
        if (item.message.slice_count() != 2 ||
            !stage_header_ok(item.message.slice(0), s.expected, item.message.slice(1).size())) {
          std::fprintf(stderr, "error: message %" PRIu64 ": %zu slices, or a bad header\n", s.expected,
                       item.message.slice_count());
          return kFailed;
        }
        ++headers;
      }
      const std::span<const std::byte> frame = item.frame();
      const auto* frame_bytes = reinterpret_cast<const unsigned char*>(frame.data());
      tf_header h;
      const int status = tf_check(frame_bytes, frame.size(), s.expected, &h);
      if (status != TF_OK) {
        std::fprintf(stderr, "error: frame %" PRIu64 ": %s\n", s.expected, tf_status_text(status));
        return kFailed;
      }
      const auto at = reinterpret_cast<std::uintptr_t>(frame.data());
      for (const auto& [lo, hi] : pool_mappings(pool))
        if (at >= lo && at + frame.size() <= hi) {
          ++in_pool;
          break;
        }
      s.checksum = tf_stream_add(s.checksum, h.checksum);
      ++s.expected;
      if (hold != 0) {
        held.emplace_back(s.expected - 1, std::move(item));
        if (held.size() > hold) held.pop_front();
        if (held.size() == hold && s.expected == hold) say("holding views=%zu\n", hold);
      }
    }
  }
  if (hold != 0) {
    // Every stream has ended; SIGUSR1 says the test has done its worst
    // (killed a stage, scribbled over the owner's free buffers): the views
    // held are checked once more, then released.
    say("ended\n");
    int sig = 0;
    sigwait(&usr1, &sig);
    for (const auto& [seq, item] : held) {
      tf_header h;
      const std::span<const std::byte> frame = item.frame();
      int status = tf_check(reinterpret_cast<const unsigned char*>(frame.data()), frame.size(), seq, &h);
      if (status == TF_OK && messages && !stage_header_ok(item.message.slice(0), seq, frame.size()))
        status = -1;
      if (status != TF_OK) {
        std::fprintf(stderr, "error: held frame %" PRIu64 " changed: %s\n", seq, tf_status_text(status));
        return kFailed;
      }
    }
    say("held ok views=%zu\n", held.size());
    held.clear();
  }
  std::uint64_t frames = 0;
  for (auto& s : streams) {
    frames += s.expected;
    say("stream frames=%" PRIu64 " checksum=%016" PRIx64 "\n", s.expected, s.checksum);
  }
  say("sink ok frames=%" PRIu64 " in_pool=%" PRIu64 " headers=%" PRIu64 "\n", frames, in_pool, headers);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return kUsage;
  const std::string_view mode = argv[1];
  const Args args(argc, argv);
  try {
    if (mode == "source") return source(args);
    if (mode == "forward") return forward(args);
    if (mode == "sink") return sink(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kUsage;
  }
  return kUsage;
}

// fbuf_it_peer: the C++ peer program that the integration tests start with
// fork + exec. Each mode plays one side of a multi-process scenario, prints
// what it saw and exits 0 only when everything it checked was right.
//
//   consume      --service S --count N [--end]    verify N frames in order
//   consume-two  --service A --service B --count N
//                                                  verify two streams, each to its end
//   produce      --service S --count N [--receivers K] [--classes mixed|small]
//                [--then check|hang]               send N frames, then check that every
//                                                  buffer came back, or hang until killed
//   hold         --service S --views K --hold-ms MS
//                                                  hold K views for MS ms (-1: until
//                                                  killed), release them, wait for the end
//   stall        --service S --views K [--policy block|fail-fast|skip|cut-off]
//                [--budget N] [--hold-ms MS]       connect (asking for that treatment in
//                                                  the Hello), take K views and hold them,
//                                                  take nothing more until SIGUSR1, then
//                                                  report dropped=, drain to the end
//   stream       --service S [--buffers N] [--size B] [--hz R] [--count N]
//                [--receivers K]                   wait for K receivers, then send frames
//                                                  of B bytes ("FBUF", the sequence number
//                                                  as 8 little-endian bytes, then byte i
//                                                  = i & 0xff) from a pool of N buffers,
//                                                  R per second (0: as fast as buffers
//                                                  come back), N in all (0: no end); then
//                                                  stay until killed
//   sink         --service S                       take and release everything, to the end
//   write-view   --service S                       write into a received view (must die)
//   mmap-check   --service S                       try to map the pool writable (must fail)
//
// Exit status: 0 all checks passed, 1 a check failed, 2 bad usage or a setup
// error, 3 a write into a received view succeeded.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "test_frame.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kWriteSucceeded = 3;

// Frames are read through this alias of the view's bytes.
const unsigned char* bytes_of(const fbuf::View& v) {
  return reinterpret_cast<const unsigned char*>(v.data());
}

// The command line after the mode: --key value pairs; a key may repeat.
class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i + 1 < argc; i += 2) pairs_.emplace_back(argv[i], argv[i + 1]);
    odd_ = (argc - first) % 2 != 0;
  }
  bool well_formed() const { return !odd_; }
  std::vector<std::string> all(std::string_view key) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : pairs_) {
      if (k.size() > 2 && std::string_view(k).substr(2) == key) out.push_back(v);
    }
    return out;
  }
  std::string get(std::string_view key, std::string fallback = {}) const {
    std::vector<std::string> v = all(key);
    return v.empty() ? fallback : v.back();
  }
  long long number(std::string_view key, long long fallback) const {
    const std::string v = get(key);
    return v.empty() ? fallback : std::strtoll(v.c_str(), nullptr, 10);
  }

 private:
  std::vector<std::pair<std::string, std::string>> pairs_;
  bool odd_ = false;
};

fbuf::Receiver connect(const std::string& service) {
  return fbuf::Receiver::connect(service, fbuf::ReceiverOptions{.connect_timeout = 20s});
}

void say(const char* format, ...) __attribute__((format(printf, 1, 2)));
void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stdout, format, args);
  va_end(args);
  std::fflush(stdout);
}

// One verified stream: the next sequence number expected and the running
// checksum over the frames seen.
struct StreamCheck {
  std::uint64_t expected = 0;
  std::uint64_t bytes = 0;
  std::uint64_t checksum = TF_FNV_OFFSET;

  // False (after printing why) when `v` is not the next good frame.
  bool accept(const fbuf::View& v, const std::string& service) {
    tf_header h;
    const int status = tf_check(bytes_of(v), v.size(), expected, &h);
    if (status != TF_OK) {
      std::fprintf(stderr,
                   "error: %s: frame %" PRIu64 ": %s (got sequence %" PRIu64
                   ", payload_size %" PRIu64 ", %zu bytes received)\n",
                   service.c_str(), expected, tf_status_text(status), h.sequence,
                   h.payload_size, v.size());
      return false;
    }
    checksum = tf_stream_add(checksum, h.checksum);
    bytes += v.size();
    ++expected;
    return true;
  }
};

int consume(const Args& args) {
  const std::string service = args.get("service");
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  const bool until_end = args.get("end") == "1";
  fbuf::Receiver rx = connect(service);
  say("connected to %s\n", service.c_str());

  StreamCheck check;
  const auto start = Clock::now();
  while (check.expected < count) {
    fbuf::Result<fbuf::View> v = rx.receive(20s);
    if (!v) {
      std::fprintf(stderr, "error: receive() for frame %" PRIu64 " of %" PRIu64 " failed: %s\n",
                   check.expected, count, v.error().message().c_str());
      return kFailed;
    }
    if (!check.accept(*v, service)) return kFailed;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Nothing may follow the last frame: with --end 1 the stream must end
  // (kPeerGone), otherwise a short wait must time out.
  fbuf::Result<fbuf::View> extra = rx.receive(until_end ? 60s : 200ms);
  if (extra) {
    std::fprintf(stderr, "error: an extra buffer of %zu bytes arrived after frame %" PRIu64 "\n",
                 extra->size(), count);
    return kFailed;
  }
  const auto want = until_end ? fbuf::Errc::kPeerGone : fbuf::Errc::kTimedOut;
  if (extra.error() != want) {
    std::fprintf(stderr, "error: after the last frame receive() said '%s', expected '%s'\n",
                 extra.error().message().c_str(), make_error_code(want).message().c_str());
    return kFailed;
  }
  const fbuf::ReceiverStats st = rx.stats();
  say("consume ok frames=%" PRIu64 " bytes=%" PRIu64 " seconds=%.3f checksum=%016" PRIx64
      " received=%" PRIu64 " rejected=%" PRIu64 "\n",
      check.expected, check.bytes, seconds, check.checksum, st.received, st.rejected_descriptors);
  return 0;
}

int consume_two(const Args& args) {
  const std::vector<std::string> services = args.all("service");
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  if (services.size() != 2) return kUsage;
  std::vector<fbuf::Receiver> rx;
  for (const std::string& s : services) rx.push_back(connect(s));
  say("connected to %s and %s\n", services[0].c_str(), services[1].c_str());

  StreamCheck check[2];
  bool ended[2] = {false, false};
  const auto deadline = Clock::now() + 180s;
  while (!(ended[0] && ended[1])) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "error: streams not finished in time (%" PRIu64 ", %" PRIu64 ")\n",
                   check[0].expected, check[1].expected);
      return kFailed;
    }
    for (std::size_t i = 0; i < 2; ++i) {
      if (ended[i]) continue;
      fbuf::Result<fbuf::View> v = rx[i].receive(1ms);
      if (v) {
        if (check[i].expected == count) {
          std::fprintf(stderr, "error: %s: an extra buffer arrived after frame %" PRIu64 "\n",
                       services[i].c_str(), count);
          return kFailed;
        }
        if (!check[i].accept(*v, services[i])) return kFailed;
      } else if (v.error() == fbuf::Errc::kPeerGone) {
        if (check[i].expected != count) {
          std::fprintf(stderr, "error: %s ended after %" PRIu64 " of %" PRIu64 " frames\n",
                       services[i].c_str(), check[i].expected, count);
          return kFailed;
        }
        ended[i] = true;
      } else if (v.error() != fbuf::Errc::kTimedOut && v.error() != fbuf::Errc::kWouldBlock) {
        std::fprintf(stderr, "error: %s: receive() failed: %s\n", services[i].c_str(),
                     v.error().message().c_str());
        return kFailed;
      }
    }
  }
  say("consume-two ok frames=%" PRIu64 " checksum0=%016" PRIx64 " checksum1=%016" PRIx64 "\n",
      count, check[0].checksum, check[1].checksum);
  return 0;
}

int produce(const Args& args) {
  const std::string service = args.get("service");
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  const auto receivers = static_cast<std::size_t>(args.number("receivers", 1));
  const bool mixed = args.get("classes", "small") == "mixed";
  const std::string then = args.get("then", "check");

  fbuf::PoolOptions options{.name = "it-producer", .classes = {}, .policy = fbuf::Policy::kVolatile};
  if (mixed) {
    options.classes = {{4096, 256}, {65536, 32}, {1 << 20, 4}};
  } else {
    options.classes = {{4096, 128}, {65536, 16}};
  }
  fbuf::Pool pool(options);
  std::size_t max_frame = pool.max_buffer_size();
  std::uint64_t checksum = TF_FNV_OFFSET;
  std::uint64_t bytes = 0;
  {
    fbuf::Sender sender(pool, service);
    say("listening on %s\n", service.c_str());
    if (!sender.wait_for_receivers(receivers, 30s)) {
      std::fprintf(stderr, "error: %zu receiver(s) did not connect in time\n", receivers);
      return kFailed;
    }
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      const std::size_t payload = tf_mixed_payload_size(seq, max_frame);
      fbuf::Result<fbuf::Buffer> b = sender.allocate(TF_HEADER_SIZE + payload, 20s);
      if (!b) {
        std::fprintf(stderr, "error: allocate for frame %" PRIu64 " failed: %s\n", seq,
                     b.error().message().c_str());
        return kFailed;
      }
      const std::uint64_t c =
          tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload);
      const std::error_code ec = sender.send(std::move(*b), TF_HEADER_SIZE + payload, 20s);
      if (ec) {
        std::fprintf(stderr, "error: send of frame %" PRIu64 " failed: %s\n", seq,
                     ec.message().c_str());
        return kFailed;
      }
      checksum = tf_stream_add(checksum, c);
      bytes += TF_HEADER_SIZE + payload;
    }
    say("sent frames=%" PRIu64 "\n", count);

    if (then == "hang") {
      // The test kills this process now, with every frame sent and the
      // sender still open: it checks that nothing already sent is lost.
      for (;;) ::pause();
    }
    // Every buffer comes back once the receivers have released all frames;
    // the sender stays open until then so that returns flow normally.
    const std::string problem = fbuf::testing::check_all_buffers_return(pool, 60s);
    if (!problem.empty()) {
      std::fprintf(stderr, "error: %s\n", problem.c_str());
      return kFailed;
    }
    const fbuf::SenderStats st = sender.stats();
    say("returns ok sent=%" PRIu64 " delivered=%" PRIu64 " returned=%" PRIu64
        " rejected_returns=%" PRIu64 "\n",
        st.sent, st.delivered, st.returned, st.rejected_returns);
  }  // The sender closes here: the receivers see the end of the stream.
  say("produce ok frames=%" PRIu64 " bytes=%" PRIu64 " checksum=%016" PRIx64 "\n", count, bytes,
      checksum);
  return 0;
}

int hold(const Args& args) {
  const std::string service = args.get("service");
  const auto views = static_cast<std::size_t>(args.number("views", 1));
  const long long hold_ms = args.number("hold-ms", 200);
  fbuf::Receiver rx = connect(service);
  std::vector<fbuf::View> held;
  while (held.size() < views) {
    fbuf::Result<fbuf::View> v = rx.receive(20s);
    if (!v) {
      std::fprintf(stderr, "error: receive() failed: %s\n", v.error().message().c_str());
      return kFailed;
    }
    held.push_back(std::move(*v));
  }
  say("holding views=%zu\n", held.size());
  if (hold_ms < 0) {
    for (;;) ::pause();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
  held.clear();
  say("released views=%zu\n", views);
  // Stay connected until the producer closes, so the return travels the
  // ring rather than the hang-up path.
  fbuf::Result<fbuf::View> end = rx.receive(60s);
  if (end || end.error() != fbuf::Errc::kPeerGone) {
    std::fprintf(stderr, "error: expected the end of the stream, got %s\n",
                 end ? "another buffer" : end.error().message().c_str());
    return kFailed;
  }
  say("hold ok\n");
  return 0;
}

// A receiver that stops: it holds what it took and takes nothing more until
// the test says (SIGUSR1), then reports what the sender told it (dropped,
// and how its stream ended).
int stall(const Args& args) {
  const std::string service = args.get("service");
  const auto views = static_cast<std::size_t>(args.number("views", 1));
  const std::string policy = args.get("policy", "block");
  fbuf::ReceiverOptions options{.connect_timeout = 20s};
  if (policy == "block") {
    options.slow_receiver = fbuf::SlowReceiverPolicy::kBlock;
  } else if (policy == "fail-fast") {
    options.slow_receiver = fbuf::SlowReceiverPolicy::kFailFast;
  } else if (policy == "skip") {
    options.slow_receiver = fbuf::SlowReceiverPolicy::kSkip;
  } else if (policy == "cut-off") {
    options.slow_receiver = fbuf::SlowReceiverPolicy::kCutOff;
  } else {
    return kUsage;
  }
  options.receiver_budget = static_cast<std::uint32_t>(args.number("budget", 0));
  options.hold_timeout = std::chrono::milliseconds(args.number("hold-ms", 0));

  // Blocked before anything can send it, so that it waits in sigwait().
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  if (::sigprocmask(SIG_BLOCK, &usr1, nullptr) != 0) return kUsage;

  fbuf::Receiver rx = fbuf::Receiver::connect(service, options);
  std::vector<fbuf::View> held;
  while (held.size() < views) {
    fbuf::Result<fbuf::View> v = rx.receive(20s);
    if (!v) {
      std::fprintf(stderr, "error: receive() of view %zu failed: %s\n", held.size(),
                   v.error().message().c_str());
      return kFailed;
    }
    held.push_back(std::move(*v));
  }
  say("holding views=%zu\n", held.size());
  int sig = 0;
  ::sigwait(&usr1, &sig);
  say("stalled dropped=%" PRIu64 "\n", rx.stats().dropped);

  // Whatever is left, to the end of the stream.
  std::uint64_t after = 0;
  std::string end;
  for (;;) {
    fbuf::Result<fbuf::View> v = rx.receive(30s);
    if (v) {
      ++after;
      continue;
    }
    if (v.error() == fbuf::Errc::kCutOff) {
      end = "cut-off";
      // Reported once; the stream is over after it.
      fbuf::Result<fbuf::View> again = rx.receive(1s);
      if (again || again.error() != fbuf::Errc::kPeerGone) {
        std::fprintf(stderr, "error: after kCutOff receive() said %s\n",
                     again ? "a buffer" : again.error().message().c_str());
        return kFailed;
      }
    } else if (v.error() == fbuf::Errc::kPeerGone) {
      end = "peer-gone";
    } else {
      std::fprintf(stderr, "error: receive() failed: %s\n", v.error().message().c_str());
      return kFailed;
    }
    break;
  }
  held.clear();
  say("stall ok end=%s after=%" PRIu64 " dropped=%" PRIu64 "\n", end.c_str(), after, rx.stats().dropped);
  return 0;
}

// A steady producer for the fbuf tool's tests: frames anyone can recognise
// in a hex dump, sent at a rate, for as long as the test runs.
int stream(const Args& args) {
  const std::string service = args.get("service");
  const auto buffers = static_cast<std::uint32_t>(args.number("buffers", 16));
  const auto size = static_cast<std::size_t>(args.number("size", 4096));
  const long long hz = args.number("hz", 500);
  const auto count = static_cast<std::uint64_t>(args.number("count", 0));
  const auto receivers = static_cast<std::size_t>(args.number("receivers", 0));
  fbuf::Pool pool(fbuf::PoolOptions{.name = "it-stream", .classes = {{size, buffers}}, .policy = fbuf::Policy::kVolatile});
  fbuf::Sender sender(pool, service);
  say("listening on %s\n", service.c_str());
  if (receivers != 0 && !sender.wait_for_receivers(receivers, 30s)) {
    std::fprintf(stderr, "error: %zu receiver(s) did not connect in time\n", receivers);
    return kFailed;
  }
  const auto period = hz > 0 ? std::chrono::nanoseconds(1'000'000'000LL / hz) : std::chrono::nanoseconds(0);
  auto next = Clock::now();
  std::uint64_t seq = 0;
  while (count == 0 || seq < count) {
    if (period.count() != 0) {
      std::this_thread::sleep_until(next);
      // At most R per second: after a delay (a loaded machine) the stream
      // goes on at its pace rather than catching up in a burst.
      next = std::max(next + period, Clock::now());
    }
    // Short waits: a drained pool (a stalled receiver) is a normal state
    // here, which the tests inspect while this keeps trying.
    fbuf::Result<fbuf::Buffer> b = sender.allocate(size, 100ms);
    if (!b) continue;
    auto* p = reinterpret_cast<unsigned char*>(b->data());
    for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<unsigned char>(i & 0xff);
    std::memcpy(p, "FBUF", 4);
    for (int i = 0; i < 8; ++i) p[4 + i] = static_cast<unsigned char>(seq >> (8 * i));
    const std::error_code ec = sender.send(std::move(*b), size, 100ms);
    if (!ec) {
      ++seq;
    } else if (ec == fbuf::Errc::kNoReceivers) {
      std::this_thread::sleep_for(10ms);
    }
  }
  say("sent frames=%" PRIu64 "\n", seq);
  for (;;) ::pause();
}

int sink(const Args& args) {
  const std::string service = args.get("service");
  fbuf::Receiver rx = connect(service);
  say("connected to %s\n", service.c_str());
  std::uint64_t n = 0;
  for (;;) {
    fbuf::Result<fbuf::View> v = rx.receive(60s);
    if (v) {
      ++n;
      continue;
    }
    if (v.error() == fbuf::Errc::kPeerGone) break;
    if (v.error() != fbuf::Errc::kTimedOut) {
      std::fprintf(stderr, "error: receive() failed: %s\n", v.error().message().c_str());
      return kFailed;
    }
  }
  say("sink ok frames=%" PRIu64 "\n", n);
  return 0;
}

int write_view(const Args& args) {
  fbuf::Receiver rx = connect(args.get("service"));
  fbuf::Result<fbuf::View> v = rx.receive(20s);
  if (!v) {
    std::fprintf(stderr, "error: receive() failed: %s\n", v.error().message().c_str());
    return kFailed;
  }
  // The test expects this process to die by SIGSEGV: no core file, and the
  // default action even if a sanitizer runtime installed a handler.
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGSEGV, &dfl, nullptr);

  const unsigned char first = bytes_of(*v)[0];
  say("read ok first=%u size=%zu\n", static_cast<unsigned>(first), v->size());
  say("writing into view index=%u\n", v->index());
  // const_cast: deliberately breaking the contract; volatile: the store must
  // really happen.
  volatile std::byte* target = const_cast<std::byte*>(v->data());
  target[0] = std::byte{0x5a};
  say("error: the write into a received view succeeded\n");
  return kWriteSucceeded;
}

// What /proc/self/maps says about the mapping that holds `address`.
std::string mapping_of(const void* address) {
  std::ifstream maps("/proc/self/maps");
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0;
    std::uintptr_t hi = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2 && lo <= a && a < hi) {
      return line;
    }
  }
  return {};
}

int mmap_check(const Args& args) {
  fbuf::Receiver rx = connect(args.get("service"));
  fbuf::Result<fbuf::View> v = rx.receive(20s);
  if (!v) {
    std::fprintf(stderr, "error: receive() failed: %s\n", v.error().message().c_str());
    return kFailed;
  }
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  int candidates = 0;
  int failures = 0;

  // The pool arrives as a read-only memfd; try every such descriptor.
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    std::perror("opendir(/proc/self/fd)");
    return kUsage;
  }
  const int dir_fd = ::dirfd(dir);
  std::vector<int> fds;
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dir_fd) continue;
    fds.push_back(static_cast<int>(fd));
  }
  ::closedir(dir);

  for (int fd : fds) {
    char target[512] = {};
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0 || std::string_view(target).rfind("/memfd:", 0) != 0) continue;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) != O_RDONLY) {
      say("fd %d %s: not read-only, skipped\n", fd, target);
      continue;
    }
    ++candidates;
    void* m = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) {
      say("fd %d %s: FAIL: a writable shared mapping succeeded\n", fd, target);
      ::munmap(m, page);
      ++failures;
    } else if (errno != EACCES) {
      say("fd %d %s: FAIL: mmap failed with %s, expected EACCES\n", fd, target,
          std::strerror(errno));
      ++failures;
    } else {
      say("fd %d %s: writable shared mapping refused (EACCES)\n", fd, target);
    }
  }

  // The view's own mapping must not be made writable either, if it is a
  // shared one (a private mapping would only ever write to a private copy).
  const std::string line = mapping_of(v->data());
  say("view mapping: %s\n", line.c_str());
  auto* page_start = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(v->data()) &
                                             ~static_cast<std::uintptr_t>(page - 1));
  const bool shared = line.find(" r--s ") != std::string::npos;
  if (::mprotect(page_start, page, PROT_READ | PROT_WRITE) == 0) {
    say("mprotect(view page, PROT_READ|PROT_WRITE) succeeded%s\n",
        shared ? ": FAIL on a shared mapping" : " (private mapping)");
    if (shared) ++failures;
    ::mprotect(page_start, page, PROT_READ);
  } else {
    say("mprotect(view page, PROT_READ|PROT_WRITE) refused (%s)\n", std::strerror(errno));
  }

  if (candidates == 0) {
    say("error: no read-only memfd descriptor found\n");
    return kFailed;
  }
  if (failures != 0) return kFailed;
  say("mmap-check ok candidates=%d\n", candidates);
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: fbuf_it_peer consume|consume-two|produce|hold|stall|stream|sink|write-view|"
               "mmap-check "
               "--service NAME [--key value]...\n");
  return kUsage;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string_view mode = argv[1];
  const Args args(argc, argv, 2);
  if (!args.well_formed() || args.get("service").empty()) return usage();
  try {
    if (mode == "consume") return consume(args);
    if (mode == "consume-two") return consume_two(args);
    if (mode == "produce") return produce(args);
    if (mode == "hold") return hold(args);
    if (mode == "stall") return stall(args);
    if (mode == "stream") return stream(args);
    if (mode == "sink") return sink(args);
    if (mode == "write-view") return write_view(args);
    if (mode == "mmap-check") return mmap_check(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kUsage;
  }
  return usage();
}

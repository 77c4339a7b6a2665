// transport_bench: moves buffers from a producer process to a consumer
// process through fbuf, a pipe and a Unix domain socket (the latter two
// also with readers that spin before they block, as fbuf's do), and prints
// one Markdown table of throughput (buffers/s, GB/s) and one-way latency
// (p50, p99) per transport and payload size. See docs/results.md.
//
// The benchmark's main process is the producer. For every cell it starts a
// fresh consumer by re-executing this binary with the hidden flag
// --role=consumer; the consumer inherits fixed descriptors:
//   3  the data path (pipe read end or socket; unused for fbuf, which
//      connects by service name)
//   4  the control pipe to the producer (Ready / Ack / Final reports)
//   5  the reply pipe (pipe transport, and fbuf with --fbuf-reply=pipe)
//
// Usage: transport_bench [--csv FILE] [--sizes=64,4K,64K,1M,16M]
//          [--transports=fbuf,pipe,unix,pipe-spin,unix-spin] [--seconds=0.5] [--warmup=0.1]
//          [--rtts=2000] [--policy=volatile|read_only|copy_on_write]
//          [--fbuf-reply=fbuf|pipe] [--pipe-size=BYTES] [--sock-buf=BYTES]
//          [--fbuf-buffers=N] [--repeats=3] [--retries=2] [--baseline-spin-us=20]
// Transports: fbuf, pipe, unix, pipe-spin, unix-spin (all by default).

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_sys.h"
#include "transports.h"

namespace fbuf::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;
using Micros = std::chrono::duration<double, std::micro>;

constexpr int kDataFd = 3;
constexpr int kControlFd = 4;
constexpr int kReplyFd = 5;

// How long the producer waits for a control report before it gives up on
// the consumer.
constexpr std::chrono::milliseconds kReportTimeout{30000};

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;

// --- options -----------------------------------------------------------------

enum class Mode { kStream, kPingPong };

struct Options {
  // Both roles.
  Transport transport = Transport::kFbuf;
  std::size_t size = 0;
  Policy policy = Policy::kVolatile;
  bool fbuf_reply_pipe = false;  // fbuf replies over a pipe instead of fbuf
  // How long pipe-spin and unix-spin readers poll before they block; the
  // default matches fbuf's receive() (kSpin in ipc/receiver.cc).
  int baseline_spin_us = 20;

  // Producer (the benchmark).
  std::vector<std::size_t> sizes = {64, 4 * kKiB, 64 * kKiB, kMiB, 16 * kMiB};
  std::vector<Transport> transports = {Transport::kFbuf, Transport::kPipe, Transport::kUnix,
                                       Transport::kPipeSpin, Transport::kUnixSpin};
  double seconds = 0.5;  // measured streaming time per cell
  double warmup = 0.1;   // streaming warm-up per cell
  std::uint32_t rtts = 2000;
  std::string csv;
  int pipe_size = static_cast<int>(kMiB);     // 0: the kernel's default
  int sock_buf = static_cast<int>(4 * kMiB);  // 0: the kernel's default
  std::uint32_t fbuf_buffers = 0;             // 0: fbuf_buffers_for(size)
  int repeats = 3;                            // measured windows per cell
  int retries = 2;  // extra attempts for a measurement other processes disturbed

  // Consumer (hidden).
  bool consumer = false;
  Mode mode = Mode::kStream;
  int cpu = -1;
  std::string service;
  std::string reply_service;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "transport_bench: %s\n", msg.c_str());
  std::exit(2);
}

// "64", "4K", "64k", "1M", "16MiB" -> bytes.
std::size_t parse_size(std::string_view s) {
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + static_cast<std::uint64_t>(s[i] - '0');
    ++i;
  }
  if (i == 0) usage_error("bad size '" + std::string(s) + "'");
  std::string_view unit = s.substr(i);
  if (unit.empty() || unit == "B") return n;
  if (unit == "K" || unit == "k" || unit == "KiB") return n * kKiB;
  if (unit == "M" || unit == "m" || unit == "MiB") return n * kMiB;
  usage_error("bad size unit in '" + std::string(s) + "'");
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto pos = s.find(sep);
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) break;
    s.remove_prefix(pos + 1);
  }
  return out;
}

std::optional<Policy> parse_policy(std::string_view s) {
  if (s == "volatile") return Policy::kVolatile;
  if (s == "read_only") return Policy::kReadOnly;
  if (s == "copy_on_write") return Policy::kCopyOnWrite;
  return std::nullopt;
}

int parse_int(std::string_view s) {
  char* end = nullptr;
  std::string str(s);
  long v = std::strtol(str.c_str(), &end, 10);
  if (end == str.c_str() || *end != '\0') usage_error("bad number '" + str + "'");
  return static_cast<int>(v);
}

double parse_double(std::string_view s) {
  char* end = nullptr;
  std::string str(s);
  double v = std::strtod(str.c_str(), &end);
  if (end == str.c_str() || *end != '\0' || !(v > 0)) usage_error("bad duration '" + str + "'");
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag) -> std::optional<std::string_view> {
      if (a.size() > flag.size() && a.substr(0, flag.size()) == flag && a[flag.size()] == '=') {
        return a.substr(flag.size() + 1);
      }
      if (a == flag) {
        if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
        return std::string_view(argv[++i]);
      }
      return std::nullopt;
    };
    if (auto v = value("--role")) {
      if (*v != "consumer") usage_error("unknown role");
      o.consumer = true;
    } else if (auto v1 = value("--transport")) {
      auto t = parse_transport(*v1);
      if (!t) usage_error("unknown transport");
      o.transport = *t;
    } else if (auto v2 = value("--mode")) {
      o.mode = *v2 == "pingpong" ? Mode::kPingPong : Mode::kStream;
    } else if (auto v3 = value("--size")) {
      o.size = parse_size(*v3);
    } else if (auto v4 = value("--cpu")) {
      o.cpu = parse_int(*v4);
    } else if (auto v5 = value("--service")) {
      o.service = *v5;
    } else if (auto v6 = value("--reply-service")) {
      o.reply_service = *v6;
    } else if (auto v7 = value("--sizes")) {
      o.sizes.clear();
      for (auto s : split(*v7, ',')) o.sizes.push_back(parse_size(s));
    } else if (auto v8 = value("--transports")) {
      o.transports.clear();
      for (auto s : split(*v8, ',')) {
        auto t = parse_transport(s);
        if (!t) usage_error("unknown transport '" + std::string(s) + "'");
        o.transports.push_back(*t);
      }
    } else if (auto v9 = value("--seconds")) {
      o.seconds = parse_double(*v9);
    } else if (auto v10 = value("--warmup")) {
      o.warmup = parse_double(*v10);
    } else if (auto v11 = value("--rtts")) {
      int n = parse_int(*v11);
      if (n < 10) usage_error("--rtts must be at least 10");
      o.rtts = static_cast<std::uint32_t>(n);
    } else if (auto v12 = value("--csv")) {
      o.csv = *v12;
    } else if (auto v13 = value("--policy")) {
      auto p = parse_policy(*v13);
      if (!p) usage_error("unknown policy");
      o.policy = *p;
    } else if (auto v14 = value("--fbuf-reply")) {
      if (*v14 != "fbuf" && *v14 != "pipe") usage_error("--fbuf-reply is fbuf or pipe");
      o.fbuf_reply_pipe = *v14 == "pipe";
    } else if (auto v15 = value("--pipe-size")) {
      o.pipe_size = parse_int(*v15);
    } else if (auto v16 = value("--sock-buf")) {
      o.sock_buf = parse_int(*v16);
    } else if (auto v17 = value("--fbuf-buffers")) {
      int n = parse_int(*v17);
      if (n < 1) usage_error("--fbuf-buffers must be at least 1");
      o.fbuf_buffers = static_cast<std::uint32_t>(n);
    } else if (auto v19 = value("--baseline-spin-us")) {
      o.baseline_spin_us = parse_int(*v19);
      if (o.baseline_spin_us < 1) usage_error("--baseline-spin-us must be >= 1");
    } else if (auto v20 = value("--retries")) {
      o.retries = parse_int(*v20);
      if (o.retries < 0) usage_error("--retries must be >= 0");
    } else if (auto v18 = value("--repeats")) {
      o.repeats = parse_int(*v18);
      if (o.repeats < 1) usage_error("--repeats must be at least 1");
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: transport_bench [--csv FILE] [--sizes=64,4K,64K,1M,16M]\n"
          "         [--transports=fbuf,pipe,unix] [--seconds=0.5] [--warmup=0.1]\n"
          "         [--rtts=2000] [--policy=volatile|read_only|copy_on_write]\n"
          "         [--fbuf-reply=fbuf|pipe] [--pipe-size=BYTES] [--sock-buf=BYTES]\n"
          "         [--fbuf-buffers=N] [--repeats=3] [--retries=2] [--baseline-spin-us=20]\n"
          "transports: fbuf, pipe, unix, pipe-spin, unix-spin (all by default)\n");
      std::exit(0);
    } else {
      usage_error("unknown argument '" + std::string(a) + "'");
    }
  }
  for (std::size_t s : o.sizes) {
    if (s < kCacheLine) usage_error("sizes must be at least 64 bytes");
  }
  return o;
}

// How long a reader of transport `t` polls before it blocks.
std::chrono::nanoseconds spin_for(const Options& o, Transport t) {
  return spins(t) ? std::chrono::microseconds(o.baseline_spin_us) : std::chrono::microseconds(0);
}

// --- control reports (consumer -> producer) -------------------------------------

enum class ReportKind : std::uint64_t { kReady = 1, kAck = 2, kFinal = 3 };

struct Report {
  ReportKind kind;
  std::uint64_t received;  // messages consumed so far
  std::uint64_t bad_seq;   // messages that arrived out of order
  std::uint64_t bad_data;  // messages whose size or bytes were wrong
  // Final only: how long the consumer waited for its CPU while runnable,
  // from Ready to Final, in nanoseconds.
  std::uint64_t run_delay_ns;
};

// --- the consumer process ----------------------------------------------------------

int consumer_main(const Options& o) {
  try {
    if (o.cpu >= 0) pin_to_cpu(o.cpu);
    const bool pingpong = o.mode == Mode::kPingPong;

    std::unique_ptr<ConsumerEnd> end;
    FbufConsumer* fbuf_end = nullptr;
    switch (o.transport) {
      case Transport::kFbuf: {
        auto f = std::make_unique<FbufConsumer>(o.service, o.size);
        if (pingpong) {
          if (o.reply_service.empty()) {
            f->set_reply_pipe(Fd(kReplyFd));
          } else {
            f->publish_reply(o.reply_service);
          }
        }
        fbuf_end = f.get();
        end = std::move(f);
        break;
      }
      case Transport::kPipe:
      case Transport::kPipeSpin:
        end = std::make_unique<StreamConsumer>(kDataFd, kReplyFd, o.size,
                                               spin_for(o, o.transport));
        break;
      case Transport::kUnix:
      case Transport::kUnixSpin:
        end = std::make_unique<StreamConsumer>(kDataFd, kDataFd, o.size,
                                               spin_for(o, o.transport));
        break;
    }

    Report report{ReportKind::kReady, 0, 0, 0, 0};
    const double delay0 = run_delay_seconds();
    if (!write_full(kControlFd, &report, sizeof(report))) throw_errno("control write");
    if (fbuf_end != nullptr && pingpong) fbuf_end->wait_for_reply_receiver();

    std::uint64_t expected = 0;
    for (;;) {
      Consumed c{};
      if (!end->next(c)) throw std::runtime_error(end->error());
      ++report.received;
      if (c.header.seq != expected) ++report.bad_seq;
      expected = c.header.seq + 1;
      if (!c.data_ok) ++report.bad_data;
      if ((c.header.flags & kFlagReply) != 0 && !end->reply(c.header.seq)) {
        throw std::runtime_error(end->error());
      }
      if ((c.header.flags & (kFlagAck | kFlagStop)) != 0) {
        report.kind = (c.header.flags & kFlagStop) != 0 ? ReportKind::kFinal : ReportKind::kAck;
        if (report.kind == ReportKind::kFinal) {
          report.run_delay_ns =
              static_cast<std::uint64_t>(std::llround((run_delay_seconds() - delay0) * 1e9));
        }
        if (!write_full(kControlFd, &report, sizeof(report))) throw_errno("control write");
        if (report.kind == ReportKind::kFinal) break;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport_bench consumer (%s, %zu B): %s\n", to_string(o.transport),
                 o.size, e.what());
    return 1;
  }
}

// --- starting and reaping a consumer ---------------------------------------------------

// A consumer process. The destructor kills it (by its pid) if it was not
// reaped, so a failed cell never leaves a process behind.
class Child {
 public:
  Child() = default;
  Child(pid_t pid, Fd control) : pid_(pid), control_(std::move(control)) {}
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), control_(std::move(o.control_)) {}
  Child& operator=(Child&&) = delete;

  // Reads the next report and checks its kind. Throws with the reason
  // (including the consumer's exit status) if it does not come.
  Report expect(ReportKind kind) {
    Report r{};
    if (!read_full_timed(control_.get(), &r, sizeof(r), kReportTimeout)) {
      int saved = errno;
      std::string why = saved == ETIMEDOUT ? "timed out waiting for the consumer"
                                           : "the consumer hung up";
      throw std::runtime_error(why + exit_status_text());
    }
    if (r.kind != kind) {
      throw std::runtime_error("unexpected report kind " +
                               std::to_string(static_cast<std::uint64_t>(r.kind)));
    }
    return r;
  }

  // Waits for the consumer to exit; throws unless it exited with 0.
  void reap() {
    auto deadline = Clock::now() + std::chrono::seconds(10);
    int status = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0 && errno != EINTR) throw_errno("waitpid");
      if (Clock::now() > deadline) throw std::runtime_error("the consumer did not exit");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("the consumer failed (status " + std::to_string(status) + ")");
    }
  }

 private:
  // " (exit status ...)" once the consumer has exited, else "".
  std::string exit_status_text() {
    int status = 0;
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        if (WIFEXITED(status)) return " (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
        if (WIFSIGNALED(status)) return " (killed by signal " + std::to_string(WTERMSIG(status)) + ")";
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "";
  }

  pid_t pid_ = -1;
  Fd control_;
};

// Starts this binary as a consumer with `args`. `fds` maps descriptors of
// this process to the fixed numbers the consumer expects; they are closed
// here once the consumer has its copies.
Child spawn_consumer(const std::vector<std::string>& args, std::vector<std::pair<Fd, int>> fds) {
  Fd control_read, control_write;
  make_pipe(control_read, control_write);
  fds.emplace_back(std::move(control_write), kControlFd);

  std::vector<std::string> argv_s = {"transport_bench", "--role=consumer"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec (the producer may
    // have fbuf's threads), so nothing here allocates. First every source
    // moves above the targets, so that no dup2 clobbers a source still to
    // be moved; dup2 then gives the targets without O_CLOEXEC.
    int moved[8];  // fds has at most 3 entries
    std::size_t n = 0;
    for (auto& [fd, target] : fds) {
      moved[n++] = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 64);
    }
    n = 0;
    for (auto& [fd, target] : fds) {
      if (moved[n] < 0 || ::dup2(moved[n], target) < 0) ::_exit(126);
      ++n;
    }
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  // The consumer holds its ends now; closing ours makes its death visible
  // to us as end-of-file.
  fds.clear();
  return Child(pid, std::move(control_read));
}

// --- the cells -----------------------------------------------------------------------

// How undisturbed one measurement was (see Runner::run_clean).
struct Cleanliness {
  double other_cpu_s = 0;  // CPU time other processes used meanwhile
  // Time the producer's thread and the consumer waited for their CPUs while
  // runnable (schedstat run_delay).
  double run_delay_s = 0;
  double wall_s = 0;
  int attempts = 0;
  bool disturbed = false;
};

struct Cell {
  bool stream_ok = false;
  std::string stream_error;
  // The median of the measured windows, and the spread of all of them.
  std::uint64_t messages = 0;
  double seconds = 0;
  double buffers_per_s = 0;
  double gb_per_s = 0;
  double min_buffers_per_s = 0;
  double max_buffers_per_s = 0;

  Cleanliness stream_clean;

  bool latency_ok = false;
  std::string latency_error;
  std::uint32_t rtts = 0;
  double p50_us = 0;
  double p99_us = 0;
  Cleanliness latency_clean;
};

// A measurement counts as disturbed if the producer and the consumer waited
// for their CPUs while runnable for more than 5 ms + 1% of its wall time,
// or if other processes used more than 30 ms + 2% of one CPU meanwhile
// (/proc/stat is sampled in 10 ms ticks and misses short bursts, so that
// second test alone is not enough).
bool disturbed(const Cleanliness& c) {
  return c.run_delay_s > 0.005 + 0.01 * c.wall_s || c.other_cpu_s > 0.03 + 0.02 * c.wall_s;
}
// Orders attempts: the least disturbed first.
double disturbance(const Cleanliness& c) { return c.run_delay_s + std::max(c.other_cpu_s, 0.0); }

// What the kernel actually gave the pipe and socket baselines.
struct KernelSizes {
  int pipe = 0;
  int sock_snd = 0;
  int sock_rcv = 0;
};

struct Runner {
  const Options& opt;
  std::vector<int> cpus;  // producer, consumer; empty when not pinned
  int cell_counter = 0;
  KernelSizes kernel;
  double wall_s = 0;
  double other_cpu_s = 0;

  // Pool buffers for a size: enough to keep the pipeline full (64), at most
  // 128 MiB per pool and at least 8 buffers (8 at 16 MiB). The pool
  // cycles through all its buffers (returns are collected only once the
  // free list is empty), so a deeper pool at a large size spills caches.
  static std::uint32_t fbuf_buffers_for(std::size_t size) {
    std::size_t n = 128 * kMiB / size;
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(n, 8, 64));
  }
  std::uint32_t fbuf_buffers(std::size_t size) const {
    return opt.fbuf_buffers != 0 ? opt.fbuf_buffers : fbuf_buffers_for(size);
  }

  std::uint32_t rtts_for(std::size_t size) const {
    if (size >= 16 * kMiB) return std::max<std::uint32_t>(opt.rtts / 10, 10);
    if (size >= kMiB) return std::max<std::uint32_t>(opt.rtts / 2, 10);
    return opt.rtts;
  }
  static std::uint32_t warm_rtts_for(std::size_t size) { return size >= 16 * kMiB ? 20 : 100; }

  std::vector<std::string> common_args(Transport t, Mode mode, std::size_t size) const {
    std::vector<std::string> a = {
        std::string("--transport=") + to_string(t),
        std::string("--mode=") + (mode == Mode::kPingPong ? "pingpong" : "stream"),
        "--size=" + std::to_string(size),
        "--cpu=" + std::to_string(cpus.size() >= 2 ? cpus[1] : -1),
        "--baseline-spin-us=" + std::to_string(opt.baseline_spin_us),
    };
    return a;
  }

  void tune_pipe(int fd) {
    if (opt.pipe_size > 0 && ::fcntl(fd, F_SETPIPE_SZ, opt.pipe_size) < 0) {
      throw_errno("F_SETPIPE_SZ(" + std::to_string(opt.pipe_size) + ")");
    }
    kernel.pipe = ::fcntl(fd, F_GETPIPE_SZ);
  }

  void tune_socket(int fd) {
    if (opt.sock_buf > 0) {
      int v = opt.sock_buf;
      if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) != 0) throw_errno("SO_SNDBUF");
      if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) != 0) throw_errno("SO_RCVBUF");
    }
    socklen_t len = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kernel.sock_snd, &len);
    len = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kernel.sock_rcv, &len);
  }

  // Starts a consumer for (t, mode, size) and returns the producer end,
  // connected and ready: the consumer has sent Ready.
  std::unique_ptr<ProducerEnd> start(Transport t, Mode mode, std::size_t size,
                                     std::optional<Child>& child) {
    std::vector<std::string> args = common_args(t, mode, size);
    std::vector<std::pair<Fd, int>> fds;
    switch (t) {
      case Transport::kFbuf: {
        std::string service = "fbufbench-" + std::to_string(::getpid()) + "-" +
                              std::to_string(++cell_counter);
        auto end = std::make_unique<FbufProducer>(service, size, fbuf_buffers(size), opt.policy);
        args.push_back("--service=" + service);
        std::string reply_service;
        if (mode == Mode::kPingPong) {
          if (opt.fbuf_reply_pipe) {
            Fd r, w;
            make_pipe(r, w);
            end->set_reply_pipe(std::move(r));
            fds.emplace_back(std::move(w), kReplyFd);
          } else {
            reply_service = service + "-reply";
            args.push_back("--reply-service=" + reply_service);
          }
        }
        child.emplace(spawn_consumer(args, std::move(fds)));
        end->wait_for_consumer();
        child->expect(ReportKind::kReady);
        if (!reply_service.empty()) end->connect_reply(reply_service);
        return end;
      }
      case Transport::kPipe:
      case Transport::kPipeSpin: {
        Fd data_r, data_w, reply_r, reply_w;
        make_pipe(data_r, data_w);
        tune_pipe(data_w.get());
        if (mode == Mode::kPingPong) {
          make_pipe(reply_r, reply_w);
          fds.emplace_back(std::move(reply_w), kReplyFd);
        }
        fds.emplace_back(std::move(data_r), kDataFd);
        child.emplace(spawn_consumer(args, std::move(fds)));
        child->expect(ReportKind::kReady);
        return std::make_unique<StreamProducer>(std::move(data_w), std::move(reply_r), size,
                                                spin_for(opt, t));
      }
      case Transport::kUnix:
      case Transport::kUnixSpin: {
        Fd mine, theirs;
        make_socketpair(SOCK_STREAM, mine, theirs);
        tune_socket(mine.get());
        tune_socket(theirs.get());
        fds.emplace_back(std::move(theirs), kDataFd);
        child.emplace(spawn_consumer(args, std::move(fds)));
        child->expect(ReportKind::kReady);
        return std::make_unique<StreamProducer>(std::move(mine), Fd(), size, spin_for(opt, t));
      }
    }
    throw std::logic_error("unknown transport");
  }

  static void check_final(const Report& r, std::uint64_t sent) {
    if (r.received != sent || r.bad_seq != 0 || r.bad_data != 0) {
      throw std::runtime_error("consumer saw " + std::to_string(r.received) + " of " +
                               std::to_string(sent) + " messages, " + std::to_string(r.bad_seq) +
                               " out of order, " + std::to_string(r.bad_data) + " corrupt");
    }
  }

  static void send_or_throw(ProducerEnd& end, std::uint64_t seq, std::uint64_t flags) {
    if (!end.send(seq, flags)) throw std::runtime_error(end.error());
  }

  // Streams for opt.seconds after a warm-up; fills the stream fields.
  void run_stream(Transport t, std::size_t size, Cell& cell) {
    std::optional<Child> child;
    std::unique_ptr<ProducerEnd> end = start(t, Mode::kStream, size, child);
    std::uint64_t seq = 0;
    const double delay0 = run_delay_seconds();

    // Warm-up: at least two laps of the fbuf pool (so every buffer has been
    // faulted in on both sides) and at least opt.warmup seconds.
    const std::uint64_t min_warm = 2ULL * fbuf_buffers(size) + 2;
    const auto warm_until = Clock::now() + Seconds(opt.warmup);
    for (std::uint64_t n = 0; n < min_warm || Clock::now() < warm_until; ++n) {
      send_or_throw(*end, seq++, 0);
    }
    send_or_throw(*end, seq++, kFlagAck);
    child->expect(ReportKind::kAck);

    // Measured windows: each from its first send until the consumer
    // acknowledges its last message (the pipeline is empty at the start of
    // each). The clock is read every `stride` messages so that reading it
    // costs little next to a small message.
    struct Window {
      std::uint64_t count;
      double seconds;
      double rate() const { return static_cast<double>(count) / seconds; }
    };
    std::vector<Window> windows;
    const std::uint64_t stride = std::clamp<std::uint64_t>(64 * kKiB / size, 1, 1024);
    const std::uint64_t min_messages = 16;
    for (int w = 0; w < opt.repeats; ++w) {
      const auto t0 = Clock::now();
      const auto until = t0 + Seconds(opt.seconds);
      std::uint64_t count = 0;
      for (;;) {
        ++count;
        bool last = count >= min_messages && count % stride == 0 && Clock::now() >= until;
        send_or_throw(*end, seq++, last ? kFlagAck : 0);
        if (last) break;
      }
      child->expect(ReportKind::kAck);
      windows.push_back({count, Seconds(Clock::now() - t0).count()});
    }

    send_or_throw(*end, seq++, kFlagStop);
    const Report final_report = child->expect(ReportKind::kFinal);
    cell.stream_clean.run_delay_s = run_delay_seconds() - delay0 +
                                    static_cast<double>(final_report.run_delay_ns) / 1e9;
    check_final(final_report, seq);
    child->reap();
    if (std::string problem = end->audit(); !problem.empty()) throw std::runtime_error(problem);

    std::sort(windows.begin(), windows.end(),
              [](const Window& a, const Window& b) { return a.rate() < b.rate(); });
    const Window& median = windows[windows.size() / 2];
    cell.messages = median.count;
    cell.seconds = median.seconds;
    cell.buffers_per_s = median.rate();
    cell.gb_per_s = cell.buffers_per_s * static_cast<double>(size) / 1e9;
    cell.min_buffers_per_s = windows.front().rate();
    cell.max_buffers_per_s = windows.back().rate();
    cell.stream_ok = true;
  }

  // Runs `measure` (which fills one part of a Cell and throws on failure)
  // and checks how much CPU time other processes used meanwhile. A
  // disturbed measurement is repeated, up to opt.retries times, with a
  // fresh consumer; the least disturbed attempt is kept. A failure is not
  // retried.
  template <class Measure>
  void run_clean(Measure measure, Cell& cell, std::string Cell::*error,
                 Cleanliness Cell::*clean) {
    std::optional<Cell> best;
    for (int attempt = 1; attempt <= 1 + opt.retries; ++attempt) {
      Cell trial = cell;
      const double busy0 = system_busy_seconds();
      const double own0 = own_cpu_seconds();
      const auto t0 = Clock::now();
      try {
        measure(trial);
      } catch (const std::exception& e) {
        trial.*error = e.what();
        (trial.*clean).attempts = attempt;
        cell = std::move(trial);
        return;
      }
      Cleanliness& c = trial.*clean;
      c.wall_s = Seconds(Clock::now() - t0).count();
      c.other_cpu_s = system_busy_seconds() - busy0 - (own_cpu_seconds() - own0);
      c.disturbed = disturbed(c);
      if (!best || disturbance(c) < disturbance((*best).*clean)) best = std::move(trial);
      ((*best).*clean).attempts = attempt;
      if (!((*best).*clean).disturbed) break;
    }
    cell = std::move(*best);
  }

  // Nearest-rank percentile of sorted samples.
  static double percentile(const std::vector<double>& sorted, double p) {
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
  }

  // Ping-pong: one message out, a small reply back; one-way = RTT / 2.
  void run_latency(Transport t, std::size_t size, Cell& cell) {
    std::optional<Child> child;
    std::unique_ptr<ProducerEnd> end = start(t, Mode::kPingPong, size, child);
    std::uint64_t seq = 0;
    const double delay0 = run_delay_seconds();
    const std::uint32_t warm = warm_rtts_for(size);
    const std::uint32_t n = rtts_for(size);
    std::vector<double> one_way;
    one_way.reserve(n);
    for (std::uint32_t i = 0; i < warm + n; ++i) {
      const auto t0 = Clock::now();
      send_or_throw(*end, seq, kFlagReply);
      if (!end->wait_reply(seq)) throw std::runtime_error(end->error());
      const auto t1 = Clock::now();
      ++seq;
      if (i >= warm) one_way.push_back(Micros(t1 - t0).count() / 2);
    }
    send_or_throw(*end, seq++, kFlagStop);
    const Report final_report = child->expect(ReportKind::kFinal);
    cell.latency_clean.run_delay_s = run_delay_seconds() - delay0 +
                                     static_cast<double>(final_report.run_delay_ns) / 1e9;
    check_final(final_report, seq);
    child->reap();
    if (std::string problem = end->audit(); !problem.empty()) throw std::runtime_error(problem);

    std::sort(one_way.begin(), one_way.end());
    cell.rtts = n;
    cell.p50_us = percentile(one_way, 0.50);
    cell.p99_us = percentile(one_way, 0.99);
    cell.latency_ok = true;
  }
};

// --- output -----------------------------------------------------------------------------

std::string size_label(std::size_t size) {
  if (size >= kMiB && size % kMiB == 0) return std::to_string(size / kMiB) + " MiB";
  if (size >= kKiB && size % kKiB == 0) return std::to_string(size / kKiB) + " KiB";
  return std::to_string(size) + " B";
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// 1234567 -> "1,234,567".
std::string grouped(double v) {
  auto n = static_cast<std::uint64_t>(std::llround(v));
  std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string micros(double us) {
  if (us < 10) return fmt("%.2f", us);
  if (us < 1000) return fmt("%.1f", us);
  return fmt("%.0f", us);
}

std::string ratio(double a, double b) {
  if (!(b > 0)) return "-";
  return fmt("%.2fx", a / b);
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string command_line(int argc, char** argv) {
  std::string s = "transport_bench";
  for (int i = 1; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

using Results = std::map<std::pair<std::size_t, Transport>, Cell>;

void print_table(const Options& o, const Runner& r, const std::vector<std::string>& machine,
                 const Results& results, int argc, char** argv) {
  std::printf("## Transport: fbuf vs pipe vs Unix socket\n\n");
  std::printf("Measured %s with `%s`.\n\n", now_utc().c_str(), command_line(argc, argv).c_str());
  for (const auto& line : machine) std::printf("- %s\n", line.c_str());
  std::printf("- Run time %.1f s; CPU time used by other processes meanwhile: %.1f s (all CPUs' busy\n"
              "  time from /proc/stat minus the benchmark's own; near 0 means an undisturbed run)\n",
              r.wall_s, r.other_cpu_s);
  std::printf("\nRules:\n\n");
  if (r.cpus.size() >= 2) {
    std::printf("- Producer pinned to CPU %d, consumer to CPU %d (sched_setaffinity).\n",
                r.cpus[0], r.cpus[1]);
  } else {
    std::printf("- Not pinned: fewer than 2 CPUs are usable.\n");
  }
  std::printf(
      "- Producer and consumer are separate processes: the consumer is this binary, forked\n"
      "  and re-executed (`--role=consumer`), fresh for every cell. fbuf consumers connect with\n"
      "  `fbuf::Receiver::connect(service)` to the producer's `fbuf::Sender(pool, service)`.\n"
      "- Every message: the producer writes every byte of the payload (memset) plus a 16-byte\n"
      "  header (sequence number, flags) -- into the pool buffer for fbuf, into its own buffer\n"
      "  that it then write()s for pipe/unix. The consumer reads one word of every 64-byte\n"
      "  cache line into a volatile sink and checks the sequence number and the last byte;\n"
      "  pipe/unix consumers first read() the message into their own buffer. Every run checks\n"
      "  that all messages arrived, in order, intact.\n"
      "- fbuf: pool policy %s, one size class per cell with %s buffers, ring capacity 256;\n"
      "  the consumer drops each View after reading it.\n",
      to_string(o.policy),
      o.fbuf_buffers != 0 ? std::to_string(o.fbuf_buffers).c_str()
                          : "clamp(128 MiB / size, 8, 64) (64 up to 2 MiB, 8 at 16 MiB)");
  std::printf(
      "- pipe: one write() per message, the consumer read()s until it has one whole message;\n"
      "  pipe buffer %d bytes (F_SETPIPE_SZ %d; 0 keeps the kernel's default).\n",
      r.kernel.pipe, o.pipe_size);
  std::printf(
      "- Waiting: pipe and unix readers block in read() at once. fbuf's receive() spins up to\n"
      "  20 us before it sleeps on a futex (a library constant), and that is part of what is\n"
      "  measured. pipe-spin and unix-spin are pipe and unix with the same policy: O_NONBLOCK\n"
      "  descriptors, read() retried for up to %d us before blocking in poll() (the consumer,\n"
      "  and the producer waiting for a reply). They show how much of a difference is the\n"
      "  wake-up rather than the copies.\n",
      o.baseline_spin_us);
  std::printf(
      "- unix: SOCK_STREAM socketpair (SOCK_SEQPACKET cannot carry a 1 MiB or 16 MiB message:\n"
      "  a record must fit the socket buffer), handled as the pipe; SO_SNDBUF and SO_RCVBUF\n"
      "  set to %d on both ends (0 keeps the defaults), reported back as %d and %d.\n",
      o.sock_buf, r.kernel.sock_snd, r.kernel.sock_rcv);
  std::printf(
      "- Throughput: after a warm-up of max(%.2f s, two laps of the fbuf pool) the producer\n"
      "  streams %d windows of %.2f s (at least 16 messages each); a window's time runs until\n"
      "  the consumer has acknowledged its last message (over a control pipe). buffers/s =\n"
      "  messages / time of the median window (the CSV has the min and max); GB/s = buffers/s\n"
      "  x size / 1e9.\n",
      o.warmup, o.repeats, o.seconds);
  std::printf(
      "- Latency: ping-pong in a separate consumer process; the producer timestamps\n"
      "  (steady_clock) before writing the payload and after the consumer's 16-byte reply\n"
      "  has arrived; one-way = RTT / 2, so it includes writing and reading the payload and\n"
      "  half of a small reply. The reply travels over the same kind of transport: %s.\n"
      "  %u round trips (%u at >= 1 MiB, %u at 16 MiB) after 100 (20 at 16 MiB) warm-up trips;\n"
      "  p50 and p99 are nearest-rank.\n",
      o.fbuf_reply_pipe ? "a pipe for fbuf (--fbuf-reply=pipe), the same pipe/socket kind for the others"
                        : "a second fbuf channel (consumer's pool, producer's Receiver) for fbuf, a "
                          "second pipe for pipe(-spin), the same socket for unix(-spin)",
      o.rtts, r.rtts_for(kMiB), r.rtts_for(16 * kMiB));
  std::printf(
      "- Disturbance check: a throughput or latency measurement is disturbed if the producer\n"
      "  thread and the consumer together waited for their CPUs while runnable (schedstat\n"
      "  run_delay) for more than 5 ms + 1%% of its time, or if other processes used more\n"
      "  than 30 ms + 2%% of one CPU meanwhile (all CPUs' busy time in /proc/stat minus the\n"
      "  benchmark's own from getrusage). A disturbed measurement is repeated with a fresh\n"
      "  consumer (up to %d more times) and the least disturbed attempt is kept; one that\n"
      "  stayed disturbed is marked * and listed below the table.\n"
      "- Ratio columns (fbuf rows): fbuf buffers/s divided by pipe's and by unix's (the plain,\n"
      "  blocking ones) at the same size; above 1 means fbuf moves more buffers per second.\n\n",
      o.retries);

  std::printf(
      "| size | transport | buffers/s | GB/s | p50 one-way (us) | p99 one-way (us) | "
      "fbuf/pipe | fbuf/unix |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (std::size_t size : o.sizes) {
    for (Transport t : o.transports) {
      auto it = results.find({size, t});
      if (it == results.end()) continue;
      const Cell& c = it->second;
      std::string thr = c.stream_ok ? grouped(c.buffers_per_s) : "FAILED";
      if (c.stream_ok && c.stream_clean.disturbed) thr += " *";
      std::string gb = c.stream_ok ? fmt("%.2f", c.gb_per_s) : "-";
      std::string p50 = c.latency_ok ? micros(c.p50_us) : "FAILED";
      if (c.latency_ok && c.latency_clean.disturbed) p50 += " *";
      std::string p99 = c.latency_ok ? micros(c.p99_us) : "-";
      std::string vs_pipe = "", vs_unix = "";
      if (t == Transport::kFbuf && c.stream_ok) {
        auto p = results.find({size, Transport::kPipe});
        auto u = results.find({size, Transport::kUnix});
        if (p != results.end() && p->second.stream_ok) {
          vs_pipe = ratio(c.buffers_per_s, p->second.buffers_per_s);
        }
        if (u != results.end() && u->second.stream_ok) {
          vs_unix = ratio(c.buffers_per_s, u->second.buffers_per_s);
        }
      }
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", size_label(size).c_str(),
                  to_string(t), thr.c_str(), gb.c_str(), p50.c_str(), p99.c_str(),
                  vs_pipe.c_str(), vs_unix.c_str());
    }
  }

  // Latency ratios: every other transport's divided by fbuf's.
  std::vector<Transport> others;
  bool have_fbuf = false;
  for (Transport t : o.transports) {
    if (t == Transport::kFbuf) {
      have_fbuf = true;
    } else {
      others.push_back(t);
    }
  }
  if (have_fbuf && !others.empty()) {
    for (bool p99 : {false, true}) {
      std::printf(
          "\n%s one-way latency of each transport divided by fbuf's (above 1 means fbuf is "
          "faster):\n\n| size |",
          p99 ? "p99" : "p50");
      for (Transport t : others) std::printf(" %s |", to_string(t));
      std::printf("\n|---:|");
      for (std::size_t i = 0; i < others.size(); ++i) std::printf("---:|");
      std::printf("\n");
      for (std::size_t size : o.sizes) {
        const Cell& f = results.at({size, Transport::kFbuf});
        std::printf("| %s |", size_label(size).c_str());
        for (Transport t : others) {
          const Cell& c = results.at({size, t});
          std::string v = "-";
          if (f.latency_ok && c.latency_ok) {
            v = p99 ? ratio(c.p99_us, f.p99_us) : ratio(c.p50_us, f.p50_us);
          }
          std::printf(" %s |", v.c_str());
        }
        std::printf("\n");
      }
    }
  }

  bool any_disturbed = false;
  for (const auto& [key, c] : results) {
    if ((c.stream_ok && c.stream_clean.disturbed) || (c.latency_ok && c.latency_clean.disturbed)) {
      if (!any_disturbed) {
        std::printf("\n\\* Disturbed in every attempt (the least disturbed attempt is kept; "
                    "seconds of run delay and of other processes' CPU time, of the wall "
                    "time):");
      }
      any_disturbed = true;
      if (c.stream_ok && c.stream_clean.disturbed) {
        std::printf("\n- %s %s throughput: run delay %.3f s, other CPU %.2f s, of %.1f s",
                    to_string(key.second), size_label(key.first).c_str(),
                    c.stream_clean.run_delay_s, c.stream_clean.other_cpu_s,
                    c.stream_clean.wall_s);
      }
      if (c.latency_ok && c.latency_clean.disturbed) {
        std::printf("\n- %s %s latency: run delay %.3f s, other CPU %.2f s, of %.1f s",
                    to_string(key.second), size_label(key.first).c_str(),
                    c.latency_clean.run_delay_s, c.latency_clean.other_cpu_s,
                    c.latency_clean.wall_s);
      }
    }
  }
  if (any_disturbed) std::printf("\n");

  bool any_failed = false;
  for (const auto& [key, c] : results) {
    if (!c.stream_ok) {
      std::printf("\nFAILED %s %s throughput: %s", to_string(key.second),
                  size_label(key.first).c_str(), c.stream_error.c_str());
      any_failed = true;
    }
    if (!c.latency_ok) {
      std::printf("\nFAILED %s %s latency: %s", to_string(key.second),
                  size_label(key.first).c_str(), c.latency_error.c_str());
      any_failed = true;
    }
  }
  if (any_failed) std::printf("\n");
  std::fflush(stdout);
}

void write_csv(const std::string& path, const Options& o, const Results& results) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw_errno("fopen(" + path + ")");
  std::fprintf(f,
               "transport,size_bytes,buffers_per_s,gb_per_s,min_buffers_per_s,max_buffers_per_s,"
               "messages,seconds,stream_run_delay_s,stream_other_cpu_s,stream_attempts,"
               "p50_one_way_us,p99_one_way_us,round_trips,latency_run_delay_s,"
               "latency_other_cpu_s,latency_attempts,stream_error,"
               "latency_error\n");
  for (std::size_t size : o.sizes) {
    for (Transport t : o.transports) {
      auto it = results.find({size, t});
      if (it == results.end()) continue;
      const Cell& c = it->second;
      std::fprintf(f,
                   "%s,%zu,%.1f,%.4f,%.1f,%.1f,%" PRIu64
                   ",%.4f,%.4f,%.3f,%d,%.3f,%.3f,%u,%.4f,%.3f,%d,\"%s\",\"%s\"\n",
                   to_string(t), size, c.buffers_per_s, c.gb_per_s, c.min_buffers_per_s,
                   c.max_buffers_per_s, c.messages, c.seconds, c.stream_clean.run_delay_s,
                   c.stream_clean.other_cpu_s, c.stream_clean.attempts, c.p50_us, c.p99_us,
                   c.rtts, c.latency_clean.run_delay_s, c.latency_clean.other_cpu_s,
                   c.latency_clean.attempts, c.stream_error.c_str(),
                   c.latency_error.c_str());
    }
  }
  if (std::fclose(f) != 0) throw_errno("fclose(" + path + ")");
}

int producer_main(const Options& o, int argc, char** argv) {
  Runner r{o, {}, 0, {}, 0, 0};
  // Described before pinning, which narrows what the process may use.
  const std::vector<std::string> machine = describe_machine();
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() >= 2) {
    r.cpus = {cpus[0], cpus[1]};
    // Before any fbuf object exists, so that threads it starts inherit it.
    pin_to_cpu(r.cpus[0]);
  }

  Results results;
  const auto start = Clock::now();
  const double busy0 = system_busy_seconds();
  const double own0 = own_cpu_seconds();
  for (std::size_t size : o.sizes) {
    for (Transport t : o.transports) {
      Cell& c = results[{size, t}];
      std::fprintf(stderr, "[%6.1f s] %-9s %-7s throughput ... ",
                   Seconds(Clock::now() - start).count(), to_string(t), size_label(size).c_str());
      r.run_clean([&](Cell& into) { r.run_stream(t, size, into); }, c, &Cell::stream_error,
                  &Cell::stream_clean);
      if (c.stream_ok) {
        std::fprintf(stderr, "%s buffers/s, %.2f GB/s (delay %.3f s, other %.2f s, try %d); ",
                     grouped(c.buffers_per_s).c_str(), c.gb_per_s, c.stream_clean.run_delay_s,
                     c.stream_clean.other_cpu_s, c.stream_clean.attempts);
      } else {
        std::fprintf(stderr, "FAILED: %s; ", c.stream_error.c_str());
      }
      std::fprintf(stderr, "latency ... ");
      r.run_clean([&](Cell& into) { r.run_latency(t, size, into); }, c, &Cell::latency_error,
                  &Cell::latency_clean);
      if (c.latency_ok) {
        std::fprintf(stderr, "p50 %s us, p99 %s us (delay %.3f s, other %.2f s, try %d)\n",
                     micros(c.p50_us).c_str(), micros(c.p99_us).c_str(),
                     c.latency_clean.run_delay_s, c.latency_clean.other_cpu_s,
                     c.latency_clean.attempts);
      } else {
        std::fprintf(stderr, "FAILED: %s\n", c.latency_error.c_str());
      }
    }
  }
  const double wall = Seconds(Clock::now() - start).count();
  std::fprintf(stderr, "[%6.1f s] done\n", wall);
  // CPU time the rest of the machine used during the run: busy time of all
  // CPUs minus this benchmark's own (its consumers included).
  r.other_cpu_s = system_busy_seconds() - busy0 - (own_cpu_seconds() - own0);
  r.wall_s = wall;

  print_table(o, r, machine, results, argc, argv);
  if (!o.csv.empty()) write_csv(o.csv, o, results);

  for (const auto& [key, c] : results) {
    if (!c.stream_ok || !c.latency_ok) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fbuf::bench

int main(int argc, char** argv) {
  // A peer that dies must show up as EPIPE, not kill the other process.
  ::signal(SIGPIPE, SIG_IGN);
  try {
    fbuf::bench::Options o = fbuf::bench::parse_args(argc, argv);
    if (o.consumer) return fbuf::bench::consumer_main(o);
    return fbuf::bench::producer_main(o, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport_bench: %s\n", e.what());
    return 1;
  }
}

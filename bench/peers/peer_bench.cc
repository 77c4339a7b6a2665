// peer_bench: fbuf against the transports a user would otherwise pick --
// Eclipse iceoryx, Boost.Interprocess message_queue, a Unix domain socket
// and a pipe -- plus two references, a bare descriptor ring (the floor for
// passing a descriptor) and memcpy (what a copy costs), in one run: every
// transport at every payload size in two modes (`transport`: the
// transport's own cost; `touch`: end to end), throughput and ping-pong
// latency. It writes a Markdown report (also to stdout), a CSV and (with
// gnuplot) an SVG plot into results/, and prints each target of
// docs/results.md as met or not met.
//
// The process that is started is the orchestrator: it runs nothing
// measured itself. For every cell it starts a fresh producer and consumer
// (this binary again, with the hidden flag --role=producer|consumer, or
// --role=solo for memcpy and the thread handoff), hands them their
// descriptors at fixed numbers, reads the producer's result from a pipe
// and reaps both:
//   3  control socket between producer and consumer (consumer's reports)
//   4  data path (pipe end, socket, ring region memfd), if any
//   5  reply path (pipe end), if any
//   6  result pipe, producer -> orchestrator
// For the iceoryx cells it starts RouDi (iox-roudi) with a config written
// for the sizes measured, and stops it afterwards.
//
// `peer_bench --help` lists the options.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_sys.h"
#include "catalog.h"
#include "child_process.h"
#include "ends.h"
#include "report.h"
#include "roudi.h"
#include "session.h"

#ifndef PEER_BENCH_RESULTS_DIR
#define PEER_BENCH_RESULTS_DIR "results"
#endif
#ifndef PEER_BENCH_PLOT_SCRIPT
#define PEER_BENCH_PLOT_SCRIPT "bench/peers/plot.gp"
#endif

namespace fbuf::bench::peers {
namespace {

using fbuf::testing::Child;
using fbuf::testing::ExitStatus;
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// The control socket and the result pipe of a cell; its data and reply
// descriptors are at kDataFd and kReplyFd (ends.h).
constexpr int kControlFd = 3;
constexpr int kResultFd = 6;

enum class Role { kOrchestrator, kProducer, kConsumer, kRelay, kSolo };

struct Options : Settings {
  std::string out_dir = PEER_BENCH_RESULTS_DIR;
  bool write_files = true;
  std::string roudi;
  std::vector<std::string> args;  // the command line, which every child gets too

  // Children (hidden flags).
  Role role = Role::kOrchestrator;
  Peer peer = Peer::kFbufVolatile;
  Mode mode = Mode::kTransport;
  std::size_t size = 0;
  int cpu = -1;
  int cpu2 = -1;
  std::string name;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "peer_bench: %s (try --help)\n", msg.c_str());
  std::exit(2);
}

void print_help() {
  std::printf(
      "usage: peer_bench [options]\n"
      "\n"
      "Runs every transport at every size in both modes and writes a Markdown report (also to\n"
      "stdout), a CSV and an SVG plot into the results directory.\n"
      "\n"
      "  --quick                 a ~1 minute smoke run (short cells; rough numbers)\n"
      "  --only=LIST             transports, comma-separated: fbuf (= the four below), fbuf-volatile,\n"
      "                          fbuf-volatile-fd (fbuf-volatile, the consumer waiting in epoll),\n"
      "                          fbuf-read_only, fbuf-copy_on_write, fbuf-thread, iceoryx, mq, unix,\n"
      "                          pipe, unix-block, pipe-block (readers that block at once), streams\n"
      "                          (= the four before), ring, memcpy, path-fbuf, path-fbuf-copy,\n"
      "                          path-iceoryx (three processes in a line: the middle one forwards\n"
      "                          without a copy, or copies), path (= the three and fbuf-volatile),\n"
      "                          all (default)\n"
      "  --sizes=LIST            payload sizes, multiples of 64: 64,4K,64K,1M,16M (default)\n"
      "  --modes=LIST            transport,touch (default: both)\n"
      "  --out-dir=DIR           where peers-<UTC time>.{md,csv,svg} go (default %s)\n"
      "  --no-files              print the report only\n"
      "  --repeats=N             throughput windows and latency batches per cell (default 5)\n"
      "  --window=S              seconds per throughput window (default 0.15)\n"
      "  --warmup=S              streaming warm-up per cell (default 0.05)\n"
      "  --latency-seconds=S     ping-pong time per cell, at most (default 0.3)\n"
      "  --rtts=N                ping-pong round trips per cell, at most (default 20000)\n"
      "  --spin-us=N             how long waiting peers poll before they block (default 20, as fbuf)\n"
      "  --depth=N               messages in flight for every transport and size (default 16)\n"
      "  --ring-reuse=lazy|eager the ring floor takes returned buffers back only when it has no free\n"
      "                          one, using every buffer in turn (lazy, default: the cheapest), or\n"
      "                          before every allocation, reusing the warmest one first (eager, as\n"
      "                          fbuf's pool does)\n"
      "  --pipe-size=BYTES       F_SETPIPE_SZ of the pipes (default 1 MiB; 0: the kernel's default)\n"
      "  --sock-buf=BYTES        SO_SNDBUF and SO_RCVBUF of the sockets (default 4 MiB; 0: the kernel's)\n"
      "  --retries=N             re-runs of a cell other processes disturbed (default 1)\n"
      "  --roudi=PATH            the iox-roudi to start (default: iox-roudi on PATH)\n",
      PEER_BENCH_RESULTS_DIR);
}

std::size_t size_arg(std::string_view s) {
  std::optional<std::size_t> n = parse_size(s);
  if (!n) usage_error("bad size '" + std::string(s) + "'");
  return *n;
}

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto pos = s.find(',');
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) break;
    s.remove_prefix(pos + 1);
  }
  return out;
}

double parse_seconds(std::string_view s) {
  std::string str(s);
  char* end = nullptr;
  double v = std::strtod(str.c_str(), &end);
  if (end == str.c_str() || *end != '\0' || !(v > 0)) usage_error("bad duration '" + str + "'");
  return v;
}

int parse_int(std::string_view s, int min) {
  std::string str(s);
  char* end = nullptr;
  long v = std::strtol(str.c_str(), &end, 10);
  if (end == str.c_str() || *end != '\0' || v < min || v > 1000000000) usage_error("bad number '" + str + "'");
  return static_cast<int>(v);
}

Mode parse_mode(std::string_view s) {
  if (s == "transport") return Mode::kTransport;
  if (s == "touch") return Mode::kTouch;
  usage_error("unknown mode '" + std::string(s) + "'");
}

Options parse_args(int argc, char** argv) {
  Options o;
  o.args.assign(argv + 1, argv + argc);
  o.peers = *parse_peers("all");
  o.quick = std::find(o.args.begin(), o.args.end(), "--quick") != o.args.end();
  if (o.quick) {
    // About a minute for everything: short windows, few batches (options
    // given explicitly still win).
    o.plan = Plan{.warmup_s = 0.02, .repeats = 3, .window_s = 0.04, .latency_s = 0.06, .max_rtts = 3000};
  }
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
    if (a == "-h" || a == "--help") {
      print_help();
      std::exit(0);
    } else if (a == "--quick") {
    } else if (a == "--no-files") {
      o.write_files = false;
    } else if (auto v = value("--only")) {
      auto p = parse_peers(*v);
      if (!p || p->empty()) usage_error("unknown transport in '" + std::string(*v) + "'");
      o.peers = *p;
    } else if (auto v1 = value("--sizes")) {
      o.sizes.clear();
      for (auto s : split(*v1)) o.sizes.push_back(size_arg(s));
    } else if (auto v2 = value("--modes")) {
      o.modes.clear();
      for (auto s : split(*v2)) {
        Mode m = parse_mode(s);
        if (std::find(o.modes.begin(), o.modes.end(), m) == o.modes.end()) o.modes.push_back(m);
      }
    } else if (auto v3 = value("--out-dir")) {
      o.out_dir = *v3;
    } else if (auto v4 = value("--repeats")) {
      o.plan.repeats = parse_int(*v4, 1);
      if (o.plan.repeats > kMaxRepeats) usage_error("--repeats is at most 16");
    } else if (auto v5 = value("--window")) {
      o.plan.window_s = parse_seconds(*v5);
    } else if (auto v6 = value("--warmup")) {
      o.plan.warmup_s = parse_seconds(*v6);
    } else if (auto v7 = value("--latency-seconds")) {
      o.plan.latency_s = parse_seconds(*v7);
    } else if (auto v8 = value("--rtts")) {
      o.plan.max_rtts = static_cast<std::uint32_t>(parse_int(*v8, 10));
    } else if (auto v9 = value("--spin-us")) {
      o.spin_us = parse_int(*v9, 0);
    } else if (auto v19 = value("--depth")) {
      o.depth = static_cast<std::uint32_t>(parse_int(*v19, 1));
      if (o.depth > 256) usage_error("--depth is at most 256 (an iceoryx subscriber queue holds 256)");
    } else if (auto v20 = value("--ring-reuse")) {
      if (*v20 != "lazy" && *v20 != "eager") usage_error("--ring-reuse is lazy or eager");
      o.ring_eager_reuse = *v20 == "eager";
    } else if (auto v21 = value("--pipe-size")) {
      o.pipe_size = parse_int(*v21, 0);
    } else if (auto v22 = value("--sock-buf")) {
      o.sock_buf = parse_int(*v22, 0);
    } else if (auto v10 = value("--retries")) {
      o.retries = parse_int(*v10, 0);
    } else if (auto v11 = value("--roudi")) {
      o.roudi = *v11;
    } else if (auto v12 = value("--role")) {
      if (*v12 == "producer") o.role = Role::kProducer;
      else if (*v12 == "consumer") o.role = Role::kConsumer;
      else if (*v12 == "relay") o.role = Role::kRelay;
      else if (*v12 == "solo") o.role = Role::kSolo;
      else usage_error("unknown role");
    } else if (auto v13 = value("--peer")) {
      auto p = parse_peer(*v13);
      if (!p) usage_error("unknown peer");
      o.peer = *p;
    } else if (auto v14 = value("--mode")) {
      o.mode = parse_mode(*v14);
    } else if (auto v15 = value("--size")) {
      o.size = size_arg(*v15);
    } else if (auto v16 = value("--cpu")) {
      o.cpu = parse_int(*v16, -1);
    } else if (auto v17 = value("--cpu2")) {
      o.cpu2 = parse_int(*v17, -1);
    } else if (auto v18 = value("--name")) {
      o.name = *v18;
    } else {
      usage_error("unknown argument '" + std::string(a) + "'");
    }
  }
  if (o.sizes.empty()) usage_error("no sizes");
  for (std::size_t s : o.sizes) {
    if (s < 64 || s % 64 != 0) usage_error("sizes must be multiples of 64 bytes");
    if (s > (std::size_t{1} << 30)) usage_error("sizes are at most 1 GiB");
  }
  std::sort(o.sizes.begin(), o.sizes.end());
  o.sizes.erase(std::unique(o.sizes.begin(), o.sizes.end()), o.sizes.end());
  return o;
}

std::uint32_t depth_of(const Options& o) { return o.depth != 0 ? o.depth : kDefaultDepth; }

EndConfig end_config(const Options& o) {
  EndConfig c;
  c.size = o.size;
  c.mode = o.mode;
  c.depth = depth_of(o);
  c.spin = std::chrono::microseconds(o.spin_us);
  c.ring_eager_reuse = o.ring_eager_reuse;
  return c;
}

// --- the children -------------------------------------------------------------------

void write_result(const CellResult& r) {
  if (!write_full(kResultFd, &r, sizeof(r))) {
    std::fprintf(stderr, "peer_bench producer: cannot write the result: %s\n", std::strerror(errno));
  }
}

CellResult failed(const std::string& why) {
  CellResult r;
  std::snprintf(r.error, sizeof(r.error), "%s", why.c_str());
  return r;
}

int producer_main(const Options& o) {
  const EndConfig c = end_config(o);
  std::unique_ptr<ProducerEnd> end;
  try {
    if (o.cpu >= 0) pin_to_cpu(o.cpu);
    end = make_ends(o.peer, Side::kProducer, c, o.name).producer;
  } catch (const std::exception& e) {
    write_result(failed(std::string("producer setup: ") + e.what()));
    return 1;
  }
  CellResult r = run_producer(*end, kControlFd, c, o.plan);
  write_result(r);
  return r.ok ? 0 : 1;
}

int consumer_main(const Options& o) {
  const EndConfig c = end_config(o);
  std::unique_ptr<ConsumerEnd> end;
  try {
    if (o.cpu >= 0) pin_to_cpu(o.cpu);
    end = make_ends(o.peer, Side::kConsumer, c, o.name).consumer;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer_bench consumer (%s): setup: %s\n", info(o.peer).key, e.what());
    return 1;
  }
  return run_consumer(*end, kControlFd, info(o.peer).key);
}

// The middle process of a path cell: passes every message on until the
// last (kFlagStop). Unpinned: the producer and the consumer have the two
// CPUs the run uses.
int relay_main(const Options& o) {
  const EndConfig c = end_config(o);
  try {
    std::unique_ptr<Relay> relay = make_relay(o.peer, c, o.name);
    for (bool last = false; !last;) {
      if (!relay->pass(last)) {
        std::fprintf(stderr, "peer_bench relay (%s): %s\n", info(o.peer).key, relay->error().c_str());
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer_bench relay (%s): %s\n", info(o.peer).key, e.what());
    return 1;
  }
  return 0;
}

// memcpy, or the fbuf thread handoff (producer in this thread on `cpu`,
// consumer in a second thread on `cpu2`).
int solo_main(const Options& o) {
  const EndConfig c = end_config(o);
  CellResult r;
  try {
    if (o.cpu >= 0) pin_to_cpu(o.cpu);
    if (o.peer == Peer::kMemcpy) {
      r = run_memcpy(c, o.plan);
    } else if (o.peer == Peer::kFbufThread) {
      Ends pair = make_ends(o.peer, Side::kBoth, c, o.name);
      Fd producer_side, consumer_side;
      make_socketpair(SOCK_STREAM, producer_side, consumer_side);
      int consumer_status = 0;
      std::thread consumer([&] {
        try {
          if (o.cpu2 >= 0) pin_to_cpu(o.cpu2);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "peer_bench consumer thread: %s\n", e.what());
        }
        consumer_status = run_consumer(*pair.consumer, consumer_side.get(), info(o.peer).key);
        // A consumer that failed hangs up, so the producer does not wait
        // for reports that never come.
        if (consumer_status != 0) ::shutdown(consumer_side.get(), SHUT_RDWR);
      });
      r = run_producer(*pair.producer, producer_side.get(), c, o.plan);
      if (!r.ok) ::shutdown(producer_side.get(), SHUT_RDWR);
      // A producer that failed mid-stream leaves the consumer waiting for
      // a message: closing the producer's end of the channel ends it.
      if (!r.ok) pair.producer.reset();
      consumer.join();
    } else {
      throw std::logic_error("not a one-process transport");
    }
  } catch (const std::exception& e) {
    r = failed(e.what());
  }
  write_result(r);
  return r.ok ? 0 : 1;
}

// --- the orchestrator -----------------------------------------------------------------

// Starts this binary with `args`; `fds` maps descriptors of this process to
// the fixed numbers the child expects. The child's output goes to stderr:
// stdout is the report.
Child spawn(const std::vector<std::string>& args, const std::vector<std::pair<int, int>>& fds) {
  // The binary's own path (not /proc/self/exe), so that children show up
  // as peer_bench in ps, top and perf.
  static const std::string self = [] {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
  }();
  return Child(self, args, fds, fbuf::testing::Output::kStderr);
}

std::string now_utc(const char* format) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

// Named shared memory of the current message_queue cell, removed by the
// orchestrator's SIGINT/SIGTERM handler so that an interrupted run leaves
// nothing in /dev/shm (children die with the orchestrator: PR_SET_PDEATHSIG).
char g_shm_paths[2][128];

void on_terminate(int sig) {
  for (auto& path : g_shm_paths) {
    if (path[0] != '\0') ::unlink(path);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Registers (or, with "", clears) the queues of the cell being run.
void set_shm_cleanup(const std::string& name) {
  if (name.empty()) {
    g_shm_paths[0][0] = g_shm_paths[1][0] = '\0';
    return;
  }
  std::snprintf(g_shm_paths[0], sizeof(g_shm_paths[0]), "/dev/shm/%s-d", name.c_str());
  std::snprintf(g_shm_paths[1], sizeof(g_shm_paths[1]), "/dev/shm/%s-r", name.c_str());
}

// CPU time other processes used meanwhile above this counts as disturbed:
// 30 ms (the accounting is in 10 ms ticks per CPU) plus 2% of one CPU.
bool is_disturbed(double other_cpu_s, double wall_s) { return other_cpu_s > 0.03 + 0.02 * wall_s; }

class Orchestrator {
 public:
  Orchestrator(const Options& o, RunInfo& run) : o_(o), run_(run) {}

  void run_all(Results& results) {
    start_ = Clock::now();
    std::vector<CellKey> all;
    for (Peer p : o_.peers) {
      for (Mode m : o_.modes) {
        for (std::size_t size : o_.sizes) all.push_back({p, m, size});
      }
    }
    run_pass(all, results, false);
    // A burst of load from elsewhere (a build, another benchmark) often
    // outlasts a cell's immediate retry: cells that stayed disturbed get
    // one more try at the end of the run, and keep the less disturbed
    // result.
    std::vector<CellKey> again;
    for (const CellKey& k : all) {
      const Cell& c = results[k];
      if (c.ok() && c.disturbed) again.push_back(k);
    }
    if (o_.retries > 0 && !again.empty()) {
      std::fprintf(stderr, "peer_bench: %zu disturbed cells, once more at the end\n", again.size());
      run_pass(again, results, true);
    }
  }

 private:
  // Runs `keys` (grouped by transport, in order), starting RouDi around the
  // iceoryx ones. With `again`, a cell's new result replaces the old one
  // only if it was less disturbed.
  void run_pass(const std::vector<CellKey>& keys, Results& results, bool again) {
    for (std::size_t i = 0; i < keys.size();) {
      const Peer p = keys[i].peer;
      std::size_t j = i;
      while (j < keys.size() && keys[j].peer == p) ++j;
      std::unique_ptr<RouDi> roudi;
      std::string skip;
      if (p == Peer::kIceoryx || p == Peer::kPathIceoryx) skip = start_roudi(roudi);
      for (; i < j; ++i) {
        const CellKey& k = keys[i];
        std::fprintf(stderr, "[%6.1f s] %-9s %-18s %-7s ", Seconds(Clock::now() - start_).count(),
                     to_string(k.mode), info(p).label, size_label(k.size).c_str());
        Cell& cell = results[k];
        if (!skip.empty()) {
          if (!again) cell.skipped = skip;
          std::fprintf(stderr, "skipped\n");
          continue;
        }
        Cell fresh;
        run_clean(p, k.mode, k.size, fresh);
        if (!again || (fresh.ok() && fresh.other_cpu_s < cell.other_cpu_s)) {
          fresh.attempts += again ? cell.attempts : 0;
          cell = std::move(fresh);
        } else {
          cell.attempts += fresh.attempts;
        }
        if (cell.ok()) {
          std::fprintf(stderr, "%13s buffers/s  p50 %9.2f us  p99 %9.2f us%s\n",
                       std::to_string(static_cast<long long>(cell.rate())).c_str(), cell.r.p50_us,
                       cell.r.p99_us, cell.disturbed ? "  (disturbed)" : "");
        } else {
          std::fprintf(stderr, "FAILED: %s\n", cell.r.error);
        }
      }
      if (roudi) {
        const std::string how = roudi->stop();
        run_.iceoryx_status += "; stopped: " + how;
        std::fprintf(stderr, "peer_bench: RouDi %s\n", how.c_str());
      }
    }
  }

  // Starts RouDi for the iceoryx cells; returns why they are skipped, or "".
  std::string start_roudi(std::unique_ptr<RouDi>& roudi) {
    if (!iceoryx_compiled()) {
      run_.iceoryx_status = "not measured: peer_bench was built without iceoryx (CMake found no iceoryx_posh)";
      std::fprintf(stderr, "peer_bench: %s\n", run_.iceoryx_status.c_str());
      return "built without iceoryx (CMake found no iceoryx_posh package)";
    }
    const std::string binary = find_roudi(o_.roudi);
    if (binary.empty()) {
      run_.iceoryx_status = "not measured: iox-roudi not found (" +
                            (o_.roudi.empty() ? std::string("not on PATH") : o_.roudi + " is not executable") +
                            "; Debian package `iceoryx`)";
      std::fprintf(stderr, "peer_bench: %s\n", run_.iceoryx_status.c_str());
      return "iox-roudi not found";
    }
    // One mempool per size (and the one-line replies), each chunk the
    // payload plus iceoryx's chunk header plus 1 KiB of headroom; enough
    // chunks for a full subscriber queue twice over and some slack.
    std::vector<Mempool> pools;
    std::vector<std::size_t> sizes = o_.sizes;
    sizes.push_back(kReplySize);
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    for (std::size_t s : sizes) {
      const std::size_t chunk = (s + iceoryx_chunk_overhead(s) + 1024 + 63) / 64 * 64;
      std::uint32_t count = 2 * depth_of(o_) + 16;
      if (s == kReplySize) count += 64;
      pools.push_back({chunk, count});
    }
    try {
      roudi = std::make_unique<RouDi>(binary, pools);
    } catch (const std::exception& e) {
      run_.iceoryx_status = std::string("not measured: RouDi did not start: ") + e.what();
      std::fprintf(stderr, "peer_bench: %s\n", run_.iceoryx_status.c_str());
      return "RouDi did not start (see the iceoryx line at the top of the report)";
    }
    run_.roudi_config = roudi->config_text();
    run_.iceoryx_status = std::string("iceoryx ") + iceoryx_version() + ", RouDi `" + binary + " -c " +
                          roudi->config_path() + "` started by this run (pid " + std::to_string(roudi->pid()) +
                          ")";
    std::fprintf(stderr, "peer_bench: RouDi %s is up (pid %d)\n", binary.c_str(), roudi->pid());
    return "";
  }

  // Runs a cell, again if other processes disturbed it (keeping the least
  // disturbed attempt). A failure is not retried.
  void run_clean(Peer p, Mode m, std::size_t size, Cell& cell) {
    std::optional<Cell> best;
    for (int attempt = 1; attempt <= 1 + o_.retries; ++attempt) {
      Cell trial;
      const double busy0 = system_busy_seconds();
      const double own0 = own_cpu_seconds();
      const auto t0 = Clock::now();
      trial.r = run_once(p, m, size);
      trial.ran = true;
      trial.wall_s = Seconds(Clock::now() - t0).count();
      trial.other_cpu_s = system_busy_seconds() - busy0 - (own_cpu_seconds() - own0);
      trial.disturbed = is_disturbed(trial.other_cpu_s, trial.wall_s);
      if (!trial.ok()) {
        trial.attempts = attempt;
        cell = std::move(trial);
        return;
      }
      if (!best || trial.other_cpu_s < best->other_cpu_s) best = std::move(trial);
      best->attempts = attempt;
      if (!best->disturbed) break;
    }
    cell = std::move(*best);
  }

  // A child's command line: what it runs, then the orchestrator's own
  // options (the plan, the spin, the depth, ...).
  std::vector<std::string> child_args(Peer p, Mode m, std::size_t size, const std::string& role, int cpu,
                                      const std::string& name) const {
    std::vector<std::string> a = {
        "--role=" + role,
        std::string("--peer=") + info(p).key,
        std::string("--mode=") + to_string(m),
        "--size=" + std::to_string(size),
        "--cpu=" + std::to_string(cpu),
        "--cpu2=" + std::to_string(run_.cpus.size() >= 2 ? run_.cpus[1] : -1),
        "--name=" + name,
    };
    a.insert(a.end(), o_.args.begin(), o_.args.end());
    return a;
  }

  // How long a cell may take before it is killed: its plan, generously.
  std::chrono::milliseconds cell_timeout() const {
    const double planned = o_.plan.warmup_s + o_.plan.repeats * o_.plan.window_s + o_.plan.latency_s;
    return std::chrono::milliseconds(static_cast<long>(60000 + 20000 * planned));
  }

  CellResult run_once(Peer p, Mode m, std::size_t size) {
    const std::string name = "peer_bench-" + std::to_string(::getpid()) + "-" + std::to_string(++cells_);
    const int cpu0 = run_.cpus.size() >= 2 ? run_.cpus[0] : -1;
    const int cpu1 = run_.cpus.size() >= 2 ? run_.cpus[1] : -1;
    try {
      Fd result_r, result_w;
      make_pipe(result_r, result_w);

      if (!info(p).cross_process) {
        Child solo = spawn(child_args(p, m, size, "solo", cpu0, name), {{result_w.get(), kResultFd}});
        result_w.reset();
        return collect(result_r.get(), {&solo});
      }

      Fd control_p, control_c;
      make_socketpair(SOCK_STREAM, control_p, control_c);
      std::vector<std::pair<int, int>> pfds = {{control_p.get(), kControlFd}, {result_w.get(), kResultFd}};
      std::vector<std::pair<int, int>> cfds = {{control_c.get(), kControlFd}};
      Fd a, b, c, d;  // transport descriptors, closed here once both children have theirs
      std::unique_ptr<MqQueues> queues;
      switch (info(p).family) {
        case Family::kPipe: {
          make_pipe(a, b);  // data: consumer reads a, producer writes b
          tune_pipe(b.get());
          make_pipe(c, d);  // replies: producer reads c, consumer writes d
          pfds.push_back({b.get(), kDataFd});
          pfds.push_back({c.get(), kReplyFd});
          cfds.push_back({a.get(), kDataFd});
          cfds.push_back({d.get(), kReplyFd});
          break;
        }
        case Family::kUnix: {
          make_socketpair(SOCK_STREAM, a, b);
          tune_socket(a.get());
          tune_socket(b.get());
          pfds.push_back({a.get(), kDataFd});
          cfds.push_back({b.get(), kDataFd});
          break;
        }
        case Family::kRing: {
          EndConfig ec;
          ec.size = size;
          ec.mode = m;
          ec.depth = depth_of(o_);
          a = Fd(create_ring_region(ec));
          pfds.push_back({a.get(), kDataFd});
          cfds.push_back({a.get(), kDataFd});
          break;
        }
        case Family::kMessageQueue:
          set_shm_cleanup(name);
          queues = std::make_unique<MqQueues>(name, size, depth_of(o_));
          break;
        default:
          break;  // fbuf and iceoryx meet by name
      }
      Child consumer = spawn(child_args(p, m, size, "consumer", cpu1, name), cfds);
      std::optional<Child> relay;
      if (is_path(p)) relay.emplace(spawn(child_args(p, m, size, "relay", -1, name), {}));
      Child producer = spawn(child_args(p, m, size, "producer", cpu0, name), pfds);
      result_w.reset();
      control_p.reset();
      control_c.reset();
      a.reset();
      b.reset();
      c.reset();
      d.reset();
      std::vector<Child*> children = {&producer, &consumer};
      if (relay) children.push_back(&*relay);
      CellResult r = collect(result_r.get(), children);
      queues.reset();
      set_shm_cleanup("");
      return r;
    } catch (const std::exception& e) {
      set_shm_cleanup("");
      return failed(std::string("starting the cell: ") + e.what());
    }
  }

  // Reads the producer's result and reaps the children.
  CellResult collect(int result_fd, std::vector<Child*> children) {
    CellResult r;
    const bool got = read_full_timed(result_fd, &r, sizeof(r),
                                     std::chrono::duration_cast<std::chrono::milliseconds>(cell_timeout()));
    if (!got) {
      r = failed(errno == ETIMEDOUT ? "the cell did not finish in time; killed"
                                    : "the producer exited without a result");
    }
    std::string problems;
    const char* names[] = {"producer", "consumer", "relay"};
    for (std::size_t i = 0; i < children.size(); ++i) {
      const ExitStatus st = children[i]->wait(std::chrono::milliseconds(got ? 10000 : 100));
      if (!st.exited_with(0)) problems += std::string(problems.empty() ? "" : "; ") + names[i] + " " + st.describe();
    }
    if (r.ok && !problems.empty()) r = failed(problems);
    if (!r.ok && !problems.empty() && std::strstr(r.error, "exited") == nullptr) {
      std::string e = std::string(r.error) + " (" + problems + ")";
      std::snprintf(r.error, sizeof(r.error), "%s", e.c_str());
    }
    return r;
  }

  void tune_pipe(int fd) {
    if (o_.pipe_size > 0 && ::fcntl(fd, F_SETPIPE_SZ, o_.pipe_size) < 0) throw_errno("F_SETPIPE_SZ");
    run_.pipe_size_got = ::fcntl(fd, F_GETPIPE_SZ);
  }

  void tune_socket(int fd) {
    int v = o_.sock_buf;
    if (v > 0 && ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) != 0) throw_errno("SO_SNDBUF");
    if (v > 0 && ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) != 0) throw_errno("SO_RCVBUF");
    socklen_t len = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &run_.sock_snd, &len);
    len = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &run_.sock_rcv, &len);
  }

  const Options& o_;
  RunInfo& run_;
  int cells_ = 0;
  Clock::time_point start_;
};

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return static_cast<bool>(out);
}

// Plots the run's CSV into its SVG with gnuplot (plot.gp). Returns "", or
// why there is no plot.
std::string plot(const RunInfo& run) {
  const std::string gnuplot = find_program("gnuplot");
  if (gnuplot.empty()) return "gnuplot is not on PATH (Debian package gnuplot-nox)";
  // gnuplot's single-quoted strings escape a quote by doubling it.
  auto quoted = [](std::string v) {
    for (std::size_t i = 0; (i = v.find('\'', i)) != std::string::npos; i += 2) v.insert(i, 1, '\'');
    return "'" + v + "'";
  };
  std::string modes, peers;
  for (Mode m : run.modes) modes += std::string(modes.empty() ? "" : " ") + to_string(m);
  for (Peer p : run.peers) peers += std::string(peers.empty() ? "" : " ") + info(p).key;
  const std::string vars = "csv=" + quoted(run.csv_path) + "; svg=" + quoted(run.svg_path) +
                           "; modes=" + quoted(modes) + "; peers=" + quoted(peers) +
                           "; subtitle=" + quoted(run.started_utc + " - " + run.command);
  try {
    Child g(gnuplot, {"-e", vars, PEER_BENCH_PLOT_SCRIPT});
    const ExitStatus st = g.wait(std::chrono::seconds(60));
    if (!st.exited_with(0)) {
      std::string out = g.output().substr(0, 400);
      std::replace(out.begin(), out.end(), '\n', ' ');
      return "gnuplot " + st.describe() + ": " + out;
    }
  } catch (const std::exception& e) {
    return std::string("gnuplot: ") + e.what();
  }
  return "";
}

int orchestrator_main(const Options& o, int argc, char** argv) {
  ::signal(SIGINT, on_terminate);
  ::signal(SIGTERM, on_terminate);
  RunInfo run;
  run.command = "peer_bench";
  for (int i = 1; i < argc; ++i) run.command += std::string(" ") + argv[i];
  run.started_utc = now_utc("%Y-%m-%d %H:%M:%S UTC");
  run.machine = describe_machine();
  const std::vector<int> cpus = allowed_cpus();
  if (cpus.size() >= 2) run.cpus = {cpus[0], cpus[1]};
  static_cast<Settings&>(run) = o;
  run.iceoryx_status = "not selected (--only)";

  const std::string stamp = now_utc("%Y%m%dT%H%M%SZ");
  if (o.write_files) {
    if (::mkdir(o.out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
      std::fprintf(stderr, "peer_bench: cannot create %s: %s\n", o.out_dir.c_str(), std::strerror(errno));
      return 1;
    }
    run.md_path = o.out_dir + "/peers-" + stamp + ".md";
    run.csv_path = o.out_dir + "/peers-" + stamp + ".csv";
    run.svg_path = o.out_dir + "/peers-" + stamp + ".svg";
  }

  std::fprintf(stderr, "peer_bench: %zu transports x %zu modes x %zu sizes%s\n", o.peers.size(), o.modes.size(),
               o.sizes.size(), o.quick ? " (--quick)" : "");
  Results results;
  const auto t0 = Clock::now();
  const double busy0 = system_busy_seconds();
  const double own0 = own_cpu_seconds();
  Orchestrator(o, run).run_all(results);
  run.wall_s = Seconds(Clock::now() - t0).count();
  run.other_cpu_s = system_busy_seconds() - busy0 - (own_cpu_seconds() - own0);

  if (o.write_files) {
    if (!write_text(run.csv_path, render_csv(run, results))) {
      std::fprintf(stderr, "peer_bench: cannot write %s\n", run.csv_path.c_str());
      return 1;
    }
    run.plot_error = plot(run);
  }
  const std::string md = render_markdown(run, results);
  std::fputs(md.c_str(), stdout);
  std::fflush(stdout);
  if (o.write_files) {
    if (!write_text(run.md_path, md)) {
      std::fprintf(stderr, "peer_bench: cannot write %s\n", run.md_path.c_str());
      return 1;
    }
    std::fprintf(stderr, "peer_bench: wrote %s and %s%s%s\n", run.md_path.c_str(), run.csv_path.c_str(),
                 run.plot_error.empty() ? " and " : "; no plot: ",
                 run.plot_error.empty() ? run.svg_path.c_str() : run.plot_error.c_str());
  }
  for (const auto& [key, c] : results) {
    if (c.ran && !c.ok()) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fbuf::bench::peers

int main(int argc, char** argv) {
  // A peer that dies must show up as EPIPE, not kill the other process.
  ::signal(SIGPIPE, SIG_IGN);
  using namespace fbuf::bench::peers;
  try {
    Options o = parse_args(argc, argv);
    switch (o.role) {
      case Role::kProducer: return producer_main(o);
      case Role::kConsumer: return consumer_main(o);
      case Role::kRelay: return relay_main(o);
      case Role::kSolo: return solo_main(o);
      case Role::kOrchestrator: return orchestrator_main(o, argc, argv);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer_bench: %s\n", e.what());
  }
  return 1;
}

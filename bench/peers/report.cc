#include "report.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fbuf::bench::peers {

namespace {

constexpr std::size_t kMiB = 1024 * 1024;

std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof(buf), format, ap);
  va_end(ap);
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
  if (us < 0.1) return fmt("%.4f", us);
  if (us < 10) return fmt("%.2f", us);
  if (us < 1000) return fmt("%.1f", us);
  return fmt("%.0f", us);
}

std::string gbps(double v) {
  if (v < 0.01) return fmt("%.4f", v);
  if (v < 1) return fmt("%.3f", v);
  return fmt("%.2f", v);
}

std::string times(double r) {
  if (r >= 100) return fmt("%.0fx", r);
  if (r >= 10) return fmt("%.1fx", r);
  return fmt("%.2fx", r);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::vector<double> window_rates(const CellResult& r) {
  std::vector<double> rates;
  for (int i = 0; i < r.windows; ++i) {
    if (r.window_seconds[i] > 0) {
      rates.push_back(static_cast<double>(r.window_messages[i]) / r.window_seconds[i]);
    }
  }
  return rates;
}

const Cell* find_ok(const Results& results, Peer p, Mode m, std::size_t size) {
  auto it = results.find({p, m, size});
  return it != results.end() && it->second.ok() ? &it->second : nullptr;
}

double gb_per_s(const Cell& c, std::size_t size) { return c.rate() * static_cast<double>(size) / 1e9; }

bool has(const std::vector<Peer>& v, Peer p) { return std::find(v.begin(), v.end(), p) != v.end(); }

const std::vector<Peer> kFbufProcess = {Peer::kFbufVolatile, Peer::kFbufReadOnly, Peer::kFbufCopyOnWrite};
const std::vector<Peer> kFbufAll = {Peer::kFbufVolatile, Peer::kFbufReadOnly, Peer::kFbufCopyOnWrite,
                                    Peer::kFbufThread};

// --- the measurement tables ------------------------------------------------------

void table(std::string& o, const RunInfo& run, const Results& results, Mode mode) {
  o += "| size | transport | buffers/s (median) | min - max | GB/s | one-way p50 (us) | p99 (us) | "
       "p99.9 (us) | round trips |\n";
  o += "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (std::size_t size : run.sizes) {
    for (Peer p : run.peers) {
      auto it = results.find({p, mode, size});
      if (it == results.end()) continue;
      const Cell& c = it->second;
      const std::string label = info(p).label;
      if (!c.ran) {
        o += fmt("| %s | %s | skipped | | | | | | |\n", size_label(size).c_str(), label.c_str());
        continue;
      }
      if (!c.ok()) {
        o += fmt("| %s | %s | FAILED | | | | | | |\n", size_label(size).c_str(), label.c_str());
        continue;
      }
      const std::string mark = c.disturbed ? " *" : "";
      o += fmt("| %s | %s | %s%s | %s - %s | %s | %s | %s | %s | %u |\n", size_label(size).c_str(),
               label.c_str(), grouped(c.rate()).c_str(), mark.c_str(), grouped(c.rate_min()).c_str(),
               grouped(c.rate_max()).c_str(), gbps(gb_per_s(c, size)).c_str(), micros(c.r.p50_us).c_str(),
               micros(c.r.p99_us).c_str(), micros(c.r.p999_us).c_str(), c.r.samples);
    }
  }
}

// fbuf volatile against the pipes and sockets, blocking and polling: the
// ratio columns divide fbuf's buffers/s by the blocking pipe's and socket's;
// the tables below divide each one's latency by fbuf's.
void streams_table(std::string& o, const RunInfo& run, const Results& results, Mode mode) {
  const Peer f = Peer::kFbufVolatile;
  std::vector<Peer> others;
  for (Peer p : {Peer::kPipeBlock, Peer::kUnixBlock, Peer::kPipe, Peer::kUnix}) {
    if (has(run.peers, p)) others.push_back(p);
  }
  if (!has(run.peers, f) || others.empty()) {
    o += "Needs fbuf volatile and at least one pipe or unix socket; not all of them ran.\n\n";
    return;
  }
  auto ratio = [&](const Cell* a, const Cell* b, double (*v)(const Cell&)) {
    return a != nullptr && b != nullptr && v(*b) > 0 ? times(v(*a) / v(*b)) : std::string("-");
  };
  auto rate = [](const Cell& c) { return c.rate(); };
  auto p50 = [](const Cell& c) { return c.r.p50_us; };
  auto p99 = [](const Cell& c) { return c.r.p99_us; };
  o += "| size | transport | buffers/s | GB/s | one-way p50 (us) | p99 (us) | fbuf/pipe, blocking | "
       "fbuf/unix, blocking |\n|---:|---|---:|---:|---:|---:|---:|---:|\n";
  std::vector<Peer> rows = {f};
  rows.insert(rows.end(), others.begin(), others.end());
  for (std::size_t size : run.sizes) {
    const Cell* cf = find_ok(results, f, mode, size);
    for (Peer p : rows) {
      const Cell* c = find_ok(results, p, mode, size);
      if (c == nullptr) {
        o += fmt("| %s | %s | FAILED or skipped | | | | | |\n", size_label(size).c_str(), info(p).label);
        continue;
      }
      const bool is_f = p == f;
      o += fmt("| %s | %s | %s%s | %s | %s | %s | %s | %s |\n", size_label(size).c_str(), info(p).label,
               grouped(c->rate()).c_str(), c->disturbed ? " *" : "", gbps(gb_per_s(*c, size)).c_str(),
               micros(c->r.p50_us).c_str(), micros(c->r.p99_us).c_str(),
               is_f ? ratio(cf, find_ok(results, Peer::kPipeBlock, mode, size), rate).c_str() : "",
               is_f ? ratio(cf, find_ok(results, Peer::kUnixBlock, mode, size), rate).c_str() : "");
    }
  }
  for (auto [name, v] : {std::pair{"p50", +p50}, std::pair{"p99", +p99}}) {
    o += fmt("\n%s one-way latency of each transport divided by fbuf volatile's (above 1 means fbuf is "
             "faster):\n\n| size |",
             name);
    for (Peer p : others) o += fmt(" %s |", info(p).label);
    o += "\n|---:|";
    for (std::size_t i = 0; i < others.size(); ++i) o += "---:|";
    o += "\n";
    for (std::size_t size : run.sizes) {
      o += fmt("| %s |", size_label(size).c_str());
      for (Peer p : others) {
        o += fmt(" %s |", ratio(find_ok(results, p, mode, size), find_ok(results, f, mode, size), v).c_str());
      }
      o += "\n";
    }
  }
  o += "\n";
}

// --- targets ----------------------------------------------------------------------

enum class State { kMet, kNotMet, kNotAvailable, kInfo };

struct Verdict {
  std::string id;
  std::string target;
  std::string who;
  std::string values;
  State state = State::kNotAvailable;
  std::string verdict;
};

const char* state_text(State s) {
  switch (s) {
    case State::kMet: return "met";
    case State::kNotMet: return "NOT met";
    case State::kNotAvailable: return "n/a";
    case State::kInfo: return "info";
  }
  return "?";
}

// A per-size comparison: `value(size)` is the ratio (nullopt when a cell is
// missing); met when every ratio passes `pass`.
Verdict per_size(const RunInfo& run, std::string id, std::string target, Peer who,
                 const std::function<std::optional<double>(std::size_t)>& value,
                 const std::function<bool(double)>& pass, bool higher_is_better, const std::string& missing) {
  Verdict v{std::move(id), std::move(target), info(who).label, "", State::kNotAvailable, ""};
  bool all = true, any = false, ok = true;
  double worst = 0;
  std::size_t worst_size = 0;
  for (std::size_t size : run.sizes) {
    std::optional<double> r = value(size);
    if (!v.values.empty()) v.values += ", ";
    if (!r) {
      v.values += size_label(size) + " -";
      all = false;
      continue;
    }
    any = true;
    v.values += size_label(size) + " " + times(*r);
    if (!pass(*r)) ok = false;
    const bool worse = higher_is_better ? *r < worst : *r > worst;
    if (worst_size == 0 || worse) {
      worst = *r;
      worst_size = size;
    }
  }
  if (!any) {
    v.verdict = missing;
    return v;
  }
  v.state = ok ? State::kMet : State::kNotMet;
  v.verdict = fmt("worst %s at %s", times(worst).c_str(), size_label(worst_size).c_str());
  if (!all) v.verdict += " (some sizes missing)";
  return v;
}

std::vector<Verdict> targets(const RunInfo& run, const Results& results) {
  std::vector<Verdict> out;
  using Metric = double (*)(const Cell&);
  const Metric kRate = [](const Cell& c) { return c.rate(); };
  const Metric kP50 = [](const Cell& c) { return c.r.p50_us; };
  const Metric kP99 = [](const Cell& c) { return c.r.p99_us; };
  // A metric of one cell; nullopt if the cell did not run or failed.
  auto get = [&](Metric v, Peer p, Mode m, std::size_t s) -> std::optional<double> {
    const Cell* c = find_ok(results, p, m, s);
    return c ? std::optional<double>(v(*c)) : std::nullopt;
  };
  auto rate = [&](Peer p, Mode m, std::size_t s) { return get(kRate, p, m, s); };
  auto p50 = [&](Peer p, Mode m, std::size_t s) { return get(kP50, p, m, s); };
  auto quotient = [](std::optional<double> a, std::optional<double> b) -> std::optional<double> {
    if (!a || !b || !(*b > 0)) return std::nullopt;
    return *a / *b;
  };
  auto at_most = [](double limit) { return [limit](double r) { return r <= limit; }; };
  const bool have_transport = std::find(run.modes.begin(), run.modes.end(), Mode::kTransport) != run.modes.end();
  const bool have_touch = std::find(run.modes.begin(), run.modes.end(), Mode::kTouch) != run.modes.end();

  for (Mode m : {Mode::kTransport, Mode::kTouch}) {
    if ((m == Mode::kTransport && !have_transport) || (m == Mode::kTouch && !have_touch)) continue;
    const std::string mode = to_string(m);
    const std::string n = m == Mode::kTransport ? "1" : "5";
    // a, b, c: each fbuf process transport against iceoryx (c is shown, not a target).
    struct VsIceoryx {
      const char* id;
      const char* what;
      Metric v;
    };
    for (const VsIceoryx& t : {VsIceoryx{"a", ": buffers/s >= 1.0x iceoryx at every size", kRate},
                               {"b", ": one-way p50 <= 1.0x iceoryx at every size (ratio fbuf/iceoryx)", kP50},
                               {"c", ": one-way p99 vs iceoryx (ratio fbuf/iceoryx; not a target)", kP99}}) {
      const bool higher_is_better = t.v == kRate;
      for (Peer f : kFbufProcess) {
        if (!has(run.peers, f)) continue;
        Verdict v = per_size(
            run, n + t.id, mode + t.what, f,
            [&, f, m](std::size_t s) { return quotient(get(t.v, f, m, s), get(t.v, Peer::kIceoryx, m, s)); },
            [&](double r) { return higher_is_better ? r >= 1.0 : r <= 1.0; }, higher_is_better,
            "iceoryx did not run");
        if (t.v == kP99 && v.state != State::kNotAvailable) {
          v.verdict = (v.state == State::kMet ? "<= 1.0x everywhere" : "above 1.0x somewhere");
          v.state = State::kInfo;
        }
        out.push_back(v);
      }
    }
    // P1, P2: the path (three processes in a line). Forwarding should cost
    // the line little against two processes, and beat a relay that must
    // copy (iceoryx).
    if (has(run.peers, Peer::kPathFbuf)) {
      auto ratio_at = [&](Peer other, std::size_t s) { return quotient(rate(Peer::kPathFbuf, m, s), rate(other, m, s)); };
      struct PathTarget {
        const char* id;
        const char* what;
        Peer other;
        std::vector<std::size_t> sizes;
        double at_least;
      };
      for (const PathTarget& t :
           {PathTarget{"P1", ": path buffers/s >= 0.9x fbuf's two-process line (fbuf volatile) at 1 MiB and 16 MiB",
                       Peer::kFbufVolatile, {kMiB, 16 * kMiB}, 0.9},
            PathTarget{"P2", ": path buffers/s >= 3x the iceoryx path (its relay copies) at 1 MiB",
                       Peer::kPathIceoryx, {kMiB}, 3.0}}) {
        Verdict v{t.id, mode + t.what, info(Peer::kPathFbuf).label, "", State::kNotAvailable, ""};
        bool all = true, ok = true;
        double worst = 0;
        for (std::size_t s : t.sizes) {
          auto r = ratio_at(t.other, s);
          if (!v.values.empty()) v.values += ", ";
          if (!r) {
            v.values += size_label(s) + " -";
            all = false;
            continue;
          }
          v.values += size_label(s) + " " + times(*r);
          if (*r < t.at_least) ok = false;
          worst = worst == 0 ? *r : std::min(worst, *r);
        }
        if (!all) {
          v.verdict = std::string("needs ") + info(Peer::kPathFbuf).key + " and " + info(t.other).key +
                      " at those sizes";
        } else {
          v.state = ok ? State::kMet : State::kNotMet;
          v.verdict = "worst " + times(worst);
        }
        out.push_back(v);
      }
    }
    if (m != Mode::kTransport) continue;

    // 2: fbuf >= 10x a pipe and a Unix socket at 1 MiB.
    for (Peer f : kFbufAll) {
      if (!has(run.peers, f)) continue;
      Verdict v{"2", "transport: buffers/s >= 10x pipe and unix socket at 1 MiB", info(f).label, "",
                State::kNotAvailable, ""};
      auto vp = quotient(rate(f, m, kMiB), rate(Peer::kPipe, m, kMiB));
      auto vu = quotient(rate(f, m, kMiB), rate(Peer::kUnix, m, kMiB));
      auto lp = quotient(p50(Peer::kPipe, m, kMiB), p50(f, m, kMiB));
      auto lu = quotient(p50(Peer::kUnix, m, kMiB), p50(f, m, kMiB));
      if (vp) v.values += "vs pipe " + times(*vp);
      if (vu) v.values += std::string(v.values.empty() ? "" : ", ") + "vs unix " + times(*vu);
      if (lp || lu) {
        v.values += " (p50 latency: ";
        if (lp) v.values += "pipe " + times(*lp) + " slower";
        if (lu) v.values += std::string(lp ? ", " : "") + "unix " + times(*lu) + " slower";
        v.values += ")";
      }
      if (!vp || !vu) {
        v.verdict = "needs fbuf, pipe and unix at 1 MiB";
      } else {
        const double worst = std::min(*vp, *vu);
        v.state = worst >= 10 ? State::kMet : State::kNotMet;
        v.verdict = "worst " + times(worst);
      }
      out.push_back(v);
    }

    // 3: buffers/s at 16 MiB >= 0.9x buffers/s at 64 B.
    for (Peer f : kFbufAll) {
      if (!has(run.peers, f)) continue;
      Verdict v{"3", "transport: buffers/s at 16 MiB >= 0.9x buffers/s at 64 B", info(f).label, "",
                State::kNotAvailable, ""};
      auto small = rate(f, m, 64), large = rate(f, m, 16 * kMiB);
      if (!small || !large) {
        v.verdict = "needs 64 B and 16 MiB";
      } else {
        const double r = *large / *small;
        v.values = grouped(*large) + " / " + grouped(*small) + " buffers/s = " + times(r);
        v.state = r >= 0.9 ? State::kMet : State::kNotMet;
        v.verdict = times(r);
      }
      out.push_back(v);
    }

    // 4: one-way latency <= 2x the bare ring floor.
    for (Peer f : kFbufProcess) {
      if (!has(run.peers, f)) continue;
      out.push_back(per_size(
          run, "4", "transport: one-way p50 <= 2x the ring floor at every size (ratio fbuf/floor)", f,
          [&, f, m](std::size_t s) { return quotient(p50(f, m, s), p50(Peer::kRing, m, s)); }, at_most(2.0), false,
          "the ring floor did not run"));
    }
  }
  return out;
}

// Touch mode against what copying costs: see the explanation printed with
// the table.
void copy_bound(std::string& o, const RunInfo& run, const Results& results) {
  const Peer f = Peer::kFbufVolatile;
  std::vector<Peer> copiers;
  for (Peer p : {Peer::kPipe, Peer::kUnix, Peer::kMessageQueue}) {
    if (has(run.peers, p)) copiers.push_back(p);
  }
  if (copiers.empty() || !has(run.peers, f) || !has(run.peers, Peer::kMemcpy)) {
    o += "Needs fbuf volatile, memcpy and at least one of pipe, unix socket, message_queue in both modes; "
         "not all of them ran.\n\n";
    return;
  }
  o += "| size | copying peer | t_fbuf (us/buffer) | t_peer (us/buffer) | t_memcpy (us) | measured speed-up "
       "t_peer/t_fbuf | bound 1 + t_memcpy/t_fbuf | vs bound | one-way p50 ratio peer/fbuf | latency "
       "bound 1 + 2 t_memcpy/L_fbuf | vs bound |\n";
  o += "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
  for (std::size_t size : run.sizes) {
    const Cell* cf = find_ok(results, f, Mode::kTouch, size);
    const Cell* cm = find_ok(results, Peer::kMemcpy, Mode::kTransport, size);
    for (Peer p : copiers) {
      const Cell* cp = find_ok(results, p, Mode::kTouch, size);
      if (cf == nullptr || cm == nullptr || cp == nullptr) {
        o += fmt("| %s | %s | (a cell is missing) | | | | | | | | |\n", size_label(size).c_str(), info(p).label);
        continue;
      }
      const double tf = 1e6 / cf->rate();
      const double tp = 1e6 / cp->rate();
      // The memcpy cell's median rate, as the cost of one copy.
      const double tm = 1e6 / cm->rate();
      const double speedup = tp / tf;
      const double bound = 1 + tm / tf;
      const double lat = cp->r.p50_us / cf->r.p50_us;
      const double lat_bound = 1 + 2 * tm / cf->r.p50_us;
      o += fmt("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", size_label(size).c_str(),
               info(p).label, micros(tf).c_str(), micros(tp).c_str(), micros(tm).c_str(), times(speedup).c_str(),
               times(bound).c_str(), speedup >= bound ? "at or above" : "below", times(lat).c_str(),
               times(lat_bound).c_str(), lat >= lat_bound ? "at or above" : "below");
    }
  }
  o += "\n";
}

}  // namespace

double Cell::rate() const noexcept { return median(window_rates(r)); }

double Cell::rate_min() const noexcept {
  auto v = window_rates(r);
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

double Cell::rate_max() const noexcept {
  auto v = window_rates(r);
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

std::string render_markdown(const RunInfo& run, const Results& results) {
  std::string o;
  o += "# peer_bench: fbuf vs iceoryx, Boost.Interprocess, pipes and Unix sockets\n\n";
  o += fmt("Measured %s with `%s`%s; the run took %.0f s.\n\n", run.started_utc.c_str(), run.command.c_str(),
           run.quick ? " (--quick: short cells, numbers are rough)" : "", run.wall_s);
  o += "Machine:\n\n";
  for (const auto& line : run.machine) o += "- " + line + "\n";
  o += fmt("- CPU time other processes used during the run: %.1f s (busy time of all CPUs from /proc/stat\n"
           "  minus the benchmark's own and its children's; near 0 means an undisturbed run)\n",
           run.other_cpu_s);
  o += "- iceoryx: " + run.iceoryx_status + "\n\n";

  o += "## How it was measured\n\n";
  if (run.cpus.size() >= 2) {
    o += fmt("- **Processes and cores.** Producer and consumer are separate processes (a fresh pair per cell:\n"
             "  this binary re-executed with `--role=producer` / `--role=consumer`), pinned to CPU %d and CPU %d.\n"
             "  Exceptions: *fbuf thread handoff* runs its two ends as two threads of one process (pinned the\n"
             "  same way) and *memcpy* runs in one thread on CPU %d.\n",
             run.cpus[0], run.cpus[1], run.cpus[0]);
  } else {
    o += "- **Processes and cores.** Fewer than 2 usable CPUs: nothing is pinned, numbers are not comparable.\n";
  }
  o += "- **A message** is `size` bytes; its first 16 bytes are a header (sequence number, flags).\n"
       "  - `transport` mode: the producer writes the header, the consumer reads it. This isolates the\n"
       "    transport's own cost (like iceoryx's iceperf). Copying transports still move all `size` bytes\n"
       "    (write()/read(), send()/receive()); only the application's touching of the payload is skipped.\n"
       "  - `touch` mode: the producer also writes one 8-byte word into every 64-byte cache line and the\n"
       "    consumer reads and checks every one: the end-to-end cost.\n"
       "  - Every cell checks that every message arrived, in order, with the right size (and in `touch`\n"
       "    mode with every line intact); a cell that loses or corrupts one fails.\n";
  o += "- **Transports.**\n"
       "  - *fbuf volatile / read_only / copy_on_write*: `fbuf::Pool` (one size class of `depth` buffers, that\n"
       "    policy), `fbuf::Sender(pool, service)` in the producer, `fbuf::Receiver::connect(service)` in the\n"
       "    consumer; allocate -> produce -> send; receive -> consume -> drop the View. Replies: a second fbuf\n"
       "    channel from a pool of the consumer with the same policy.\n"
       "  - *fbuf volatile, epoll on fd*: fbuf volatile, but the consumer waits the event-loop way:\n"
       "    receive() for at most --spin-us (the library's own polling), then `arm()` and `epoll_wait()` on\n"
       "    `Receiver::fd()`. Its ratio to\n"
       "    fbuf volatile is the cost of the readiness fd.\n"
       "  - *fbuf thread handoff*: `Sender tx(pool); Receiver rx = tx.connect_local();` consumer in a second\n"
       "    thread; volatile pools.\n";
  o += "  - *iceoryx* " + std::string(iceoryx_version()) +
       ": `iox::popo::UntypedPublisher` / `UntypedSubscriber`; loan(size, 64-byte aligned) -> produce ->\n"
       "    publish; take -> consume -> release. Loss-free: `WAIT_FOR_CONSUMER` publisher, `BLOCK_PRODUCER`\n"
       "    subscriber queue of `depth` chunks. RouDi is started by this run with the config below, and stopped.\n"
       "    Every process registers a unique runtime name.\n";
  o += "  - *message_queue*: `boost::interprocess::message_queue` of `depth` messages of `size` bytes, created\n"
       "    per cell; send() copies the producer's buffer into the queue, receive() copies it out.\n";
  o += fmt("  - *unix socket*: `SOCK_STREAM` socketpair, SO_SNDBUF/SO_RCVBUF %d requested (0: the kernel's\n"
           "    default; it reported %d / %d); write() of `size` bytes, read() until `size` bytes; replies on\n"
           "    the same socket.\n",
           run.sock_buf, run.sock_snd, run.sock_rcv);
  o += fmt("  - *pipe*: pipe2(), F_SETPIPE_SZ %d requested (0: the kernel's default; it reported %d); replies\n"
           "    through a second pipe.\n"
           "  - *unix socket, blocking* and *pipe, blocking*: the same, with readers that block in read() at\n"
           "    once instead of polling first: what a plain pipe or socket costs, wake-ups included.\n",
           run.pipe_size, run.pipe_size_got);
  o += "  - *ring floor*: fbuf's own SPSC ring (`ipc/ring.h`, `RingProducer`/`RingConsumer`) between the two\n"
       "    processes in one memfd both map read-write: a send ring and a return ring of 32-byte\n"
       "    descriptors and `depth` buffers, a private free list, and the same wait as fbuf (poll, then\n"
       "    `detail::sleep_until` on the ring's futex). It is what fbuf is built on, without the pool's\n"
       "    bookkeeping and mutex, generations, validation of what the peer returns, lent-buffer tracking,\n"
       "    protection policies and the doorbell: the floor for passing a descriptor.\n";
  o += run.ring_eager_reuse
           ? "    **--ring-reuse=eager**: like fbuf's pool, it takes returned buffers back before every\n"
             "    allocation and reuses the one released last, while it is still in the caches.\n"
           : "    It takes returned buffers back only when it has no free one left (no read of the return\n"
             "    ring's index per message: the cheapest way to pass descriptors), so it uses every buffer in\n"
             "    turn. fbuf's pool collects returns at every allocation and reuses the buffer released last;\n"
             "    `--ring-reuse=eager` gives the floor that order too.\n";
  o += 
       "  - *memcpy*: one thread copies `size` bytes between two private, pre-faulted, page-aligned buffers,\n"
       "    the same two every time (hot in cache: the cheapest a copy gets). `touch` mode: produce, copy,\n"
       "    consume. Its latency is the time of one operation (measured over k = clamp(64 KiB / size, 1,\n"
       "    1024) back-to-back operations, divided by k, to keep the clock's cost out).\n";
  {
    const std::uint32_t depth = run.depth != 0 ? run.depth : kDefaultDepth;
    const std::size_t largest = run.sizes.empty() ? 0 : run.sizes.back();
    o += fmt("- **Depth** (messages in flight): %u at every size%s, for the fbuf pools (%s of buffers at\n"
             "  %s), the ring floor's buffers, the message_queue and the iceoryx subscriber queue, so that\n"
             "  across sizes only the size changes. Pipes and sockets hold what their kernel buffer holds.\n",
             depth, run.depth != 0 ? " (--depth)" : "", size_label(depth * largest).c_str(),
             size_label(largest).c_str());
  }
  o += fmt("- **Waiting.** Every side that waits for a message or a reply polls for %d us (the blocking pipe\n"
           "  and socket: not at all), then sleeps in the\n"
           "  kernel: fbuf's receive() spins 20 us then sleeps on a futex (a library constant); the ring floor\n"
           "  does the same; iceoryx polls take() then sleeps in a WaitSet; message_queue polls try_receive()\n"
           "  then blocks in timed_receive(); pipe and unix poll a non-blocking read() then sleep in poll().\n"
           "  A producer facing a full transport: fbuf's allocate() sleeps on the pool's doorbell futex at\n"
           "  once; iceoryx's publish() yields in a loop; message_queue polls try_send() for %d us then\n"
           "  blocks; pipe and unix block in write().\n",
           run.spin_us, run.spin_us);
  o += fmt("- **Throughput.** Warm-up of max(%.2f s, two laps of `depth`), then %d windows of %.2f s (at least 8\n"
           "  messages each); a window ends when the consumer has reported its last message over a control\n"
           "  socket, so each starts and ends with an empty pipeline. buffers/s is the median window, min - max\n"
           "  the slowest and fastest; GB/s = buffers/s x size / 1e9.\n",
           run.plan.warmup_s, run.plan.repeats, run.plan.window_s);
  o += fmt("- **Latency.** Ping-pong in the same processes after the throughput windows: the producer reads the\n"
           "  clock (steady_clock), produces and sends a message, the consumer consumes it and replies with one\n"
           "  cache line over the same kind of transport, the producer reads the clock when the reply is in.\n"
           "  One-way = round trip / 2. 50 warm-up round trips (at most 0.05 s), then %d batches for at most\n"
           "  %.2f s and %u round trips in all (at least %u per batch). p50, p99 and p99.9 are nearest-rank over\n"
           "  all batches (p99.9 of fewer than 1000 round trips is the maximum); the CSV has each batch's p50.\n",
           run.plan.repeats, run.plan.latency_s, run.plan.max_rtts, run.plan.min_rtts);
  o += fmt("- **Disturbance.** Each cell compares the busy time of all CPUs (/proc/stat) with the CPU time of the\n"
           "  benchmark and its children (getrusage). If other processes used more than 30 ms + 2%% of one CPU\n"
           "  meanwhile, the cell is run again at once (up to %d more times) and, if it stayed disturbed, once\n"
           "  more at the end of the run; the least disturbed attempt is kept. A cell that stayed disturbed is\n"
           "  marked * (details below and in the CSV). During the iceoryx cells RouDi's own CPU time counts as\n"
           "  other processes'.\n\n",
           run.retries);

  for (Mode m : run.modes) {
    o += fmt("## Mode `%s`: %s\n\n", to_string(m),
             m == Mode::kTransport ? "the transport's own cost (header only)"
                                   : "end to end (every cache line written and read)");
    table(o, run, results, m);
    o += "\n";
  }
  for (Mode m : run.modes) {
    o += fmt("## Mode `%s`: fbuf against pipes and Unix sockets, blocking and polling\n\n", to_string(m));
    streams_table(o, run, results, m);
  }

  o += "## Targets\n\n"
       "Ratios from this run. *fbuf volatile* is the like-for-like comparison with iceoryx (neither protects\n"
       "a sent buffer from its sender). read_only and copy_on_write pay for that protection per message:\n"
       "read_only an mprotect() at send and another when the buffer is allocated again; copy_on_write an\n"
       "mmap(MAP_PRIVATE) at send, and an mremap() plus MADV_POPULATE_WRITE of every page of the buffer when\n"
       "it is allocated again, which grows with the buffer's size.\n\n";
  o += "| # | target | fbuf transport | values | verdict |\n|---|---|---|---|---|\n";
  for (const Verdict& v : targets(run, results)) {
    o += fmt("| %s | %s | %s | %s | **%s** (%s) |\n", v.id.c_str(), v.target.c_str(), v.who.c_str(),
             v.values.c_str(), state_text(v.state), v.verdict.c_str());
  }
  o += "\n";

  o += "## Touch mode against the memcpy bound\n\n"
       "A copying transport (pipe, unix socket: write() copies into the kernel and read() copies out;\n"
       "message_queue: send() copies in and receive() copies out) pays at least one extra memcpy of the\n"
       "payload per buffer on top of what a zero-copy transport pays, and on the one-way path both of its\n"
       "copies. With t_fbuf = 1 / (fbuf volatile buffers/s in `touch` mode), t_peer the same for the peer,\n"
       "and t_memcpy = 1 / (memcpy buffers/s in `transport` mode, a pure hot-cache copy of that size):\n\n"
       "- predicted minimum throughput speed-up = (t_fbuf + t_memcpy) / t_fbuf = 1 + t_memcpy / t_fbuf: what\n"
       "  one extra copy would cost a transport that is otherwise exactly as fast as fbuf (producer and\n"
       "  consumer overlap on two cores, so only one of its two copies is on the critical stage);\n"
       "- predicted minimum latency ratio = 1 + 2 t_memcpy / L_fbuf (L_fbuf = fbuf's one-way p50): both\n"
       "  copies are on a message's one-way path.\n\n"
       "\"at or above\" means fbuf's measured lead is at least what the copies alone explain (the rest is the\n"
       "peer's syscalls, wake-ups and cache misses); \"below\" means the peer hides its copies better than\n"
       "the model assumes, or fbuf loses elsewhere part of what not copying saves.\n\n";
  copy_bound(o, run, results);

  bool any_disturbed = false;
  for (const auto& [key, c] : results) {
    if (c.ok() && c.disturbed) {
      if (!any_disturbed) o += "## Disturbed cells\n\n";
      any_disturbed = true;
      o += fmt("- %s %s %s: other processes used %.2f s of CPU in %.1f s (best of %d attempts)\n",
               to_string(key.mode), info(key.peer).label, size_label(key.size).c_str(), c.other_cpu_s, c.wall_s,
               c.attempts);
    }
  }
  if (any_disturbed) o += "\n";

  bool any_missing = false;
  std::vector<std::string> skipped_seen;
  for (const auto& [key, c] : results) {
    if (c.ok()) continue;
    if (!any_missing) o += "## Skipped and failed cells\n\n";
    any_missing = true;
    if (!c.ran) {
      std::string line = std::string(info(key.peer).label) + ": skipped: " + c.skipped;
      if (std::find(skipped_seen.begin(), skipped_seen.end(), line) == skipped_seen.end()) {
        skipped_seen.push_back(line);
        o += "- " + line + "\n";
      }
    } else {
      o += fmt("- %s %s %s: FAILED: %s\n", to_string(key.mode), info(key.peer).label,
               size_label(key.size).c_str(), c.r.error);
    }
  }
  if (any_missing) o += "\n";

  if (!run.roudi_config.empty()) {
    o += "## RouDi configuration used\n\n```toml\n" + run.roudi_config + "```\n\n";
  }
  if (!run.md_path.empty()) {
    o += "Files: `" + run.md_path + "` (this report), `" + run.csv_path + "` (every number), " +
         (run.plot_error.empty() ? "`" + run.svg_path + "` (plot, by gnuplot from the CSV).\n"
                                 : "no plot: " + run.plot_error + ".\n");
  }
  return o;
}

std::string render_csv(const RunInfo& run, const Results& results) {
  std::string o =
      "mode,transport,size_bytes,status,buffers_per_s_median,buffers_per_s_min,buffers_per_s_max,gb_per_s,"
      "windows,window_messages,window_seconds,p50_one_way_us,p99_one_way_us,p999_one_way_us,min_one_way_us,"
      "max_one_way_us,round_trips,batch_p50_us,messages_checked,other_cpu_s,cell_wall_s,attempts,disturbed,"
      "error\n";
  for (Mode m : run.modes) {
    for (Peer p : run.peers) {
      for (std::size_t size : run.sizes) {
        auto it = results.find({p, m, size});
        if (it == results.end()) continue;
        const Cell& c = it->second;
        const char* status = !c.ran ? "skipped" : c.ok() ? "ok" : "failed";
        std::string msgs, secs, batches;
        for (int i = 0; i < c.r.windows; ++i) {
          if (i > 0) msgs += ';', secs += ';';
          msgs += std::to_string(c.r.window_messages[i]);
          secs += fmt("%.4f", c.r.window_seconds[i]);
        }
        for (int i = 0; i < c.r.batches; ++i) {
          if (i > 0) batches += ';';
          batches += fmt("%.3f", c.r.batch_p50_us[i]);
        }
        std::string error = !c.ran ? c.skipped : c.r.error;
        std::replace(error.begin(), error.end(), '"', '\'');
        o += fmt("%s,%s,%zu,%s,%.1f,%.1f,%.1f,%.4f,%d,%s,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%u,%s,%" PRIu64
                 ",%.3f,%.2f,%d,%d,\"%s\"\n",
                 to_string(m), info(p).key, size, status, c.rate(), c.rate_min(), c.rate_max(),
                 c.ok() ? gb_per_s(c, size) : 0.0, c.r.windows, msgs.c_str(), secs.c_str(), c.r.p50_us,
                 c.r.p99_us, c.r.p999_us, c.r.min_us, c.r.max_us, c.r.samples, batches.c_str(), c.r.messages,
                 c.other_cpu_s, c.wall_s, c.attempts, c.disturbed ? 1 : 0, error.c_str());
      }
    }
  }
  return o;
}

}  // namespace fbuf::bench::peers

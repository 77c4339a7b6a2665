#include "session.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_sys.h"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;
using Micros = std::chrono::duration<double, std::micro>;

// How long the producer waits for a control report before it gives up.
constexpr std::chrono::milliseconds kReportTimeout{30000};
// A throughput window holds at least this many messages, however slow.
constexpr std::uint64_t kMinWindowMessages = 8;
// Latency warm-up: this many round trips, or this long, whichever is first.
constexpr std::uint32_t kWarmRtts = 50;
constexpr double kWarmRttSeconds = 0.05;

enum class ReportKind : std::uint64_t { kAck = 1, kFinal = 2 };

struct Report {
  ReportKind kind;
  std::uint64_t received;  // messages consumed so far
  std::uint64_t bad_seq;   // messages that arrived out of order
  std::uint64_t bad_data;  // messages whose size or payload was wrong
};

Report expect(int control_fd, ReportKind kind) {
  Report r{};
  if (!read_full_timed(control_fd, &r, sizeof(r), kReportTimeout)) {
    throw std::runtime_error(errno == ETIMEDOUT ? "timed out waiting for the consumer's report"
                                                : "the consumer hung up (its error is above)");
  }
  if (r.kind != kind) throw std::runtime_error("unexpected report from the consumer");
  return r;
}

// Nearest-rank percentile of sorted samples.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

void set_error(CellResult& r, const std::string& what) {
  std::snprintf(r.error, sizeof(r.error), "%s", what.c_str());
  r.ok = 0;
}

// Fills the latency fields from per-batch samples (microseconds).
void summarise_latency(CellResult& r, const std::vector<std::vector<double>>& batches) {
  std::vector<double> all;
  r.batches = 0;
  for (const auto& b : batches) {
    std::vector<double> s = b;
    std::sort(s.begin(), s.end());
    if (r.batches < kMaxRepeats) r.batch_p50_us[r.batches++] = percentile(s, 0.50);
    all.insert(all.end(), b.begin(), b.end());
  }
  std::sort(all.begin(), all.end());
  r.samples = static_cast<std::uint32_t>(all.size());
  r.p50_us = percentile(all, 0.50);
  r.p99_us = percentile(all, 0.99);
  r.p999_us = percentile(all, 0.999);
  r.min_us = all.empty() ? 0 : all.front();
  r.max_us = all.empty() ? 0 : all.back();
}

// How often a throughput loop reads the clock: about every 20 us of work at
// the rate the warm-up ran (`messages` in `seconds`), so that reading it
// (tens of ns in a VM) costs little next to a 64-byte message, and a
// window still ends within ~20 us of its time.
std::uint64_t clock_stride(std::uint64_t messages, double seconds) {
  const double rate = seconds > 0 ? static_cast<double>(messages) / seconds : 0;
  return std::clamp<std::uint64_t>(static_cast<std::uint64_t>(rate * 20e-6), 1, 256);
}

// Runs the plan's throughput windows into `r`. `window(until)` sends
// messages until the time `until` (and until the pipeline is empty again)
// and returns how many.
template <class Window>
void run_windows(CellResult& r, const Plan& plan, Window window) {
  for (int w = 0; w < plan.repeats && w < kMaxRepeats; ++w) {
    const auto t0 = Clock::now();
    r.window_messages[w] = window(t0 + Seconds(plan.window_s));
    r.window_seconds[w] = Seconds(Clock::now() - t0).count();
    r.windows = w + 1;
  }
}

// Runs the plan's latency batches of `sample()` (one-way microseconds each)
// and fills the latency fields of `r`.
template <class Sample>
void run_latency(CellResult& r, const Plan& plan, Sample sample) {
  const int batches = std::clamp(plan.repeats, 1, kMaxRepeats);
  const double batch_s = plan.latency_s / batches;
  const std::uint32_t batch_max = std::max(plan.max_rtts / static_cast<std::uint32_t>(batches), plan.min_rtts);
  std::vector<std::vector<double>> samples(static_cast<std::size_t>(batches));
  for (auto& b : samples) {
    b.reserve(batch_max);
    const auto until = Clock::now() + Seconds(batch_s);
    while (b.size() < batch_max && (b.size() < plan.min_rtts || Clock::now() < until)) b.push_back(sample());
  }
  summarise_latency(r, samples);
}

}  // namespace

CellResult run_producer(ProducerEnd& end, int control_fd, const EndConfig& c, const Plan& plan) {
  CellResult r;
  try {
    std::uint64_t seq = 0;
    auto send = [&](std::uint64_t flags) {
      if (!end.send(seq++, flags)) throw std::runtime_error(end.error());
    };

    // Warm-up: at least two laps of the pool (every buffer faulted in on
    // both sides) and at least plan.warmup_s.
    std::uint64_t stride = 1;
    {
      const std::uint64_t min_warm = 2ULL * c.depth + 2;
      const auto t0 = Clock::now();
      const auto until = t0 + Seconds(plan.warmup_s);
      std::uint64_t n = 0;
      for (; n < min_warm || Clock::now() < until; ++n) send(0);
      send(kFlagAck);
      expect(control_fd, ReportKind::kAck);
      stride = clock_stride(n + 1, Seconds(Clock::now() - t0).count());
    }

    // Throughput windows: each runs from its first send until the
    // consumer has reported its last message, so each starts and ends with
    // an empty pipeline.
    run_windows(r, plan, [&](auto until) {
      std::uint64_t count = 0;
      for (;;) {
        ++count;
        const bool last = count >= kMinWindowMessages && count % stride == 0 && Clock::now() >= until;
        send(last ? kFlagAck : 0);
        if (last) break;
      }
      expect(control_fd, ReportKind::kAck);
      return count;
    });

    // Ping-pong: one message out, a one-line reply back; one-way = RTT / 2.
    auto round_trip = [&]() -> double {
      const auto t0 = Clock::now();
      const std::uint64_t s = seq;
      send(kFlagReply);
      if (!end.wait_reply(s)) throw std::runtime_error(end.error());
      return Micros(Clock::now() - t0).count() / 2;
    };
    {
      const auto until = Clock::now() + Seconds(kWarmRttSeconds);
      for (std::uint32_t i = 0; i < kWarmRtts && (i < 3 || Clock::now() < until); ++i) round_trip();
    }
    run_latency(r, plan, round_trip);

    send(kFlagStop);
    const Report fin = expect(control_fd, ReportKind::kFinal);
    if (fin.received != seq || fin.bad_seq != 0 || fin.bad_data != 0) {
      throw std::runtime_error("the consumer saw " + std::to_string(fin.received) + " of " +
                               std::to_string(seq) + " messages, " + std::to_string(fin.bad_seq) +
                               " out of order, " + std::to_string(fin.bad_data) + " corrupt");
    }
    r.messages = fin.received;
    r.ok = 1;
  } catch (const std::exception& e) {
    set_error(r, e.what());
  }
  return r;
}

int run_consumer(ConsumerEnd& end, int control_fd, const char* label) {
  Report report{ReportKind::kAck, 0, 0, 0};
  std::uint64_t expected = 0;
  for (;;) {
    Consumed c;
    if (!end.next(c)) {
      std::fprintf(stderr, "peer_bench consumer (%s): %s\n", label, end.error().c_str());
      return 1;
    }
    ++report.received;
    if (c.header.seq != expected) ++report.bad_seq;
    expected = c.header.seq + 1;
    if (!c.data_ok) ++report.bad_data;
    if ((c.header.flags & kFlagReply) != 0 && !end.reply(c.header.seq)) {
      std::fprintf(stderr, "peer_bench consumer (%s): %s\n", label, end.error().c_str());
      return 1;
    }
    if ((c.header.flags & (kFlagAck | kFlagStop)) != 0) {
      report.kind = (c.header.flags & kFlagStop) != 0 ? ReportKind::kFinal : ReportKind::kAck;
      if (!write_full(control_fd, &report, sizeof(report))) {
        std::fprintf(stderr, "peer_bench consumer (%s): control write: %s\n", label,
                     std::strerror(errno));
        return 1;
      }
      if (report.kind == ReportKind::kFinal) return 0;
    }
  }
}

CellResult run_memcpy(const EndConfig& c, const Plan& plan) {
  CellResult r;
  try {
    PageBuffer src(c.size), dst(c.size);
    std::uint64_t seq = 0;
    std::uint64_t bad = 0;
    auto op = [&] {
      if (c.mode == Mode::kTouch) produce(src.data(), c.size, seq, 0, c.mode);
      std::memcpy(dst.data(), src.data(), c.size);
      clobber_memory();
      if (c.mode == Mode::kTouch) {
        Consumed got = consume(dst.data(), c.size, c.mode);
        if (!got.data_ok || got.header.seq != seq) ++bad;
      }
      ++seq;
    };

    std::uint64_t stride = 1;
    {
      const auto t0 = Clock::now();
      const auto until = t0 + Seconds(plan.warmup_s);
      std::uint64_t n = 0;
      for (; Clock::now() < until; ++n) op();
      stride = clock_stride(n, Seconds(Clock::now() - t0).count());
    }
    run_windows(r, plan, [&](auto until) {
      std::uint64_t count = 0;
      do {
        op();
        ++count;
      } while (count < kMinWindowMessages || count % stride != 0 || Clock::now() < until);
      return count;
    });

    // One sample = the time of `k` back-to-back operations / k, so that the
    // clock's own cost (tens of ns) does not swamp a 64-byte copy.
    const auto k = static_cast<std::uint32_t>(std::clamp<std::size_t>(64 * 1024 / c.size, 1, 1024));
    run_latency(r, plan, [&] {
      const auto t0 = Clock::now();
      for (std::uint32_t i = 0; i < k; ++i) op();
      return Micros(Clock::now() - t0).count() / k;
    });
    if (bad != 0) throw std::runtime_error(std::to_string(bad) + " copies did not match");
    r.messages = seq;
    r.ok = 1;
  } catch (const std::exception& e) {
    set_error(r, e.what());
  }
  return r;
}

}  // namespace fbuf::bench::peers

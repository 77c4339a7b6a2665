// What immutability after send costs: per-buffer time of allocate + fill +
// send + receive + return for each protection policy, at 4 KiB .. 16 MiB,
// beside a memcpy of the same size (what a copying transport pays on top
// of the fill). One thread, an in-process receiver: the numbers are the
// policies' own costs (mprotect, mmap/mremap, page faults, TLB flushes)
// without scheduling noise. Both restore strategies are measured: lazy (at
// the next allocation: "cached fbufs", the default) and eager (at return).
//
//   policy_bench [--quick] [--csv FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_sys.h"
#include "fbuf/fbuf.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kLine = 64;

// The producer writes every cache line, as a real producer fills a buffer.
void fill(std::byte* p, std::size_t n, std::uint64_t seq) {
  for (std::size_t i = 0; i < n; i += kLine) std::memcpy(p + i, &seq, sizeof seq);
}

volatile std::uint64_t g_sink;

struct Cell {
  double ns_per_buffer;  // median of the repetitions
  double spread;         // (max - min) / median
};

template <class Body>
Cell measure(Body body, std::size_t size, bool quick) {
  // Enough iterations for ~100 ms per repetition, at least 8.
  const std::size_t iters =
      std::max<std::size_t>(8, (quick ? 2 : 8) * (std::size_t{64} << 20) / std::max<std::size_t>(size, 4096) / 4);
  for (std::size_t i = 0; i < std::min<std::size_t>(iters, 64); ++i) body(i);  // warm-up
  std::vector<double> reps;
  for (int r = 0; r < (quick ? 3 : 5); ++r) {
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < iters; ++i) body(i);
    reps.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(iters));
  }
  std::sort(reps.begin(), reps.end());
  double med = reps[reps.size() / 2];
  return {med, (reps.back() - reps.front()) / med};
}

Cell run_policy(fbuf::Policy policy, bool eager, fbuf::SealedCopies sealed, std::size_t size, bool quick) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "policy-bench",
                                    .classes = {{size, 4}},
                                    .policy = policy,
                                    .eager_restore = eager,
                                    .sealed_copies = sealed,
                                    .sealed_copy_limit = size});
  fbuf::Sender tx(pool);
  fbuf::Receiver rx = tx.connect_local();
  return measure(
      [&](std::size_t i) {
        auto b = tx.try_allocate(size);
        if (!b) std::abort();
        fill(b->data(), size, i);
        if (tx.try_send(std::move(*b), size)) std::abort();
        auto v = rx.try_receive();
        if (!v) std::abort();
        std::uint64_t x;
        std::memcpy(&x, v->data(), sizeof x);
        g_sink = x;
      },
      size, quick);
}

Cell run_fill(std::size_t size, bool quick) {
  fbuf::bench::PageBuffer src(size);
  return measure(
      [&](std::size_t i) {
        fill(src.data(), size, i);
        g_sink = static_cast<std::uint64_t>(src.data()[size - 1]);
      },
      size, quick);
}

Cell run_memcpy(std::size_t size, bool quick) {
  fbuf::bench::PageBuffer src(size), dst(size);
  return measure(
      [&](std::size_t i) {
        fill(src.data(), size, i);
        std::memcpy(dst.data(), src.data(), size);
        g_sink = static_cast<std::uint64_t>(dst.data()[size - 1]);
      },
      size, quick);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  const char* csv_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--csv") == 0 && i + 1 < argc) csv_path = argv[++i];
  }
  const std::size_t sizes[] = {4096, 65536, 1 << 20, 16 << 20};
  struct Config {
    const char* name;
    fbuf::Policy policy;
    bool eager;
    fbuf::SealedCopies sealed;
  };
  // The protecting configurations without sealed copies, and both policies
  // with sealed copies forced on at every size (docs/design.md, "Sealed
  // copies").
  constexpr auto kNever = fbuf::SealedCopies::kNever;
  constexpr auto kSealed = fbuf::SealedCopies::kUpTo;
  const Config configs[] = {
      {"volatile", fbuf::Policy::kVolatile, false, kNever},
      {"read_only (lazy)", fbuf::Policy::kReadOnly, false, kNever},
      {"read_only (eager)", fbuf::Policy::kReadOnly, true, kNever},
      {"copy_on_write (lazy)", fbuf::Policy::kCopyOnWrite, false, kNever},
      {"copy_on_write (eager)", fbuf::Policy::kCopyOnWrite, true, kNever},
      {"read_only (sealed copy)", fbuf::Policy::kReadOnly, false, kSealed},
      {"copy_on_write (sealed copy)", fbuf::Policy::kCopyOnWrite, false, kSealed},
  };

  std::printf("# fbuf policy cost: allocate + fill + send + receive + return, per buffer\n\n");
  for (const auto& l : fbuf::bench::describe_machine()) std::printf("- %s\n", l.c_str());
  std::printf("- one thread, in-process receiver; the producer writes every cache line of each buffer;\n"
              "  median of %d repetitions after warm-up; spread = (max - min) / median\n\n",
              quick ? 3 : 5);
  std::printf("| size | fill (us) | memcpy+fill (us) |");
  for (const auto& c : configs) std::printf(" %s (us) |", c.name);
  std::printf(" copy (us) | read_only overhead / copy | copy_on_write overhead / copy | sealed overhead / copy |"
              " auto seals |\n|---|---|---|");
  for (std::size_t i = 0; i < std::size(configs); ++i) std::printf("---|");
  std::printf("---|---|---|---|---|\n");

  FILE* csv = csv_path != nullptr ? std::fopen(csv_path, "w") : nullptr;
  if (csv != nullptr) std::fprintf(csv, "size,config,ns_per_buffer,spread\n");
  for (std::size_t size : sizes) {
    Cell filled = run_fill(size, quick);
    Cell copy = run_memcpy(size, quick);
    std::vector<Cell> cells;
    for (const auto& c : configs) cells.push_back(run_policy(c.policy, c.eager, c.sealed, size, quick));
    // What the calibration of a pool made now chooses for this size.
    const fbuf::Pool measured(
        fbuf::PoolOptions{.name = "policy-bench-auto", .classes = {{size, 4}}, .policy = fbuf::Policy::kReadOnly});
    const bool auto_seals = measured.sealed_copy_size() != 0;
    std::printf("| %s | %.2f (±%.0f%%) | %.2f (±%.0f%%) |", fbuf::bench::size_label(size).c_str(), filled.ns_per_buffer / 1e3,
                filled.spread * 100, copy.ns_per_buffer / 1e3, copy.spread * 100);
    for (const auto& cell : cells) std::printf(" %.2f (±%.0f%%) |", cell.ns_per_buffer / 1e3, cell.spread * 100);
    // What a protection policy adds over volatile, against what one copy
    // of the buffer adds over filling it: the extra a copying transport
    // pays at least once per buffer.
    const double copy_alone = copy.ns_per_buffer - filled.ns_per_buffer;
    const double ro_over = std::min(cells[1].ns_per_buffer, cells[2].ns_per_buffer) - cells[0].ns_per_buffer;
    const double cow_over = std::min(cells[3].ns_per_buffer, cells[4].ns_per_buffer) - cells[0].ns_per_buffer;
    const double sealed_over = std::min(cells[5].ns_per_buffer, cells[6].ns_per_buffer) - cells[0].ns_per_buffer;
    std::printf(" %.2f | %.2f | %.2f | %.2f | %s |\n", copy_alone / 1e3, ro_over / copy_alone, cow_over / copy_alone,
                sealed_over / copy_alone, auto_seals ? "yes" : "no");
    if (csv != nullptr) {
      std::fprintf(csv, "%zu,fill,%.1f,%.3f\n", size, filled.ns_per_buffer, filled.spread);
      std::fprintf(csv, "%zu,memcpy+fill,%.1f,%.3f\n", size, copy.ns_per_buffer, copy.spread);
      for (std::size_t i = 0; i < cells.size(); ++i)
        std::fprintf(csv, "%zu,%s,%.1f,%.3f\n", size, configs[i].name, cells[i].ns_per_buffer, cells[i].spread);
    }
    std::fflush(stdout);
  }
  if (csv != nullptr) std::fclose(csv);
  std::printf("\ncopy = (memcpy+fill) - fill: what one copy of the buffer costs.\n"
              "X overhead / copy = (best of X's lazy and eager - volatile) / copy (sealed: best of both policies);\n"
              "auto seals: whether a read_only pool made now (SealedCopies::kAuto) chose sealed copies for the size;\n"
              "below 1 means protecting by X costs less than copying the buffer once.\n");
  return 0;
}

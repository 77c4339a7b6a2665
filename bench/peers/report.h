// What a peer_bench run produced, and its two renderings: the Markdown
// report (tables, rules, target verdicts) and a CSV with every number, which
// gnuplot turns into the plot (plot.gp).
#pragma once

#include <compare>
#include <cstdint>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "bench_sys.h"
#include "catalog.h"
#include "message.h"
#include "session.h"

namespace fbuf::bench::peers {

struct CellKey {
  Peer peer;
  Mode mode;
  std::size_t size;
  auto operator<=>(const CellKey&) const = default;
};

struct Cell {
  bool ran = false;
  std::string skipped;  // why the cell did not run (empty if it ran)
  CellResult r;
  double other_cpu_s = 0;  // CPU time other processes used during the cell
  double wall_s = 0;
  int attempts = 0;
  bool disturbed = false;  // other_cpu_s above the threshold in every attempt

  bool ok() const noexcept { return ran && r.ok != 0; }
  // buffers/s of the median throughput window, and of the slowest and
  // fastest window.
  double rate() const noexcept;
  double rate_min() const noexcept;
  double rate_max() const noexcept;
};

using Results = std::map<CellKey, Cell>;

// What a run measures and how: peer_bench's options.
struct Settings {
  std::vector<Peer> peers;
  std::vector<Mode> modes = {Mode::kTransport, Mode::kTouch};
  std::vector<std::size_t> sizes = {64, 4 << 10, 64 << 10, 1 << 20, 16 << 20};
  Plan plan;
  bool quick = false;
  int spin_us = 20;
  int retries = 1;
  std::uint32_t depth = 0;        // --depth; 0: kDefaultDepth
  bool ring_eager_reuse = false;  // --ring-reuse=eager
  int pipe_size = 1 << 20;        // --pipe-size: F_SETPIPE_SZ; 0 keeps the kernel's default
  int sock_buf = 4 << 20;         // --sock-buf: SO_SNDBUF and SO_RCVBUF; 0 keeps the kernel's
};

// Everything about the run that the report states next to the numbers.
struct RunInfo : Settings {
  std::string command;
  std::string started_utc;
  std::vector<std::string> machine;
  std::vector<int> cpus;  // producer's, consumer's; empty if not pinned
  int pipe_size_got = 0;  // what F_GETPIPE_SZ reported
  int sock_snd = 0;       // what SO_SNDBUF / SO_RCVBUF reported
  int sock_rcv = 0;
  std::string iceoryx_status;  // version, RouDi binary/pid/stop, or why skipped
  std::string roudi_config;    // the TOML written for RouDi ("" if not started)
  double wall_s = 0;
  double other_cpu_s = 0;
  std::string md_path, csv_path, svg_path;
  std::string plot_error;  // why there is no plot ("" if there is)
};

std::string render_markdown(const RunInfo& run, const Results& results);
std::string render_csv(const RunInfo& run, const Results& results);

}  // namespace fbuf::bench::peers

// iceoryx's central daemon, RouDi, as a child of the benchmark: a config
// whose mempools fit the sizes measured, started with `iox-roudi -c FILE`,
// waited for until it is ready, and stopped by its pid.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"

namespace fbuf::bench::peers {

struct Mempool {
  std::size_t chunk_size;  // bytes, including iceoryx's chunk header
  std::uint32_t count;
};

// The iox-roudi to run: `hint` if it is executable, else the first
// iox-roudi on PATH; "" if there is none.
std::string find_roudi(const std::string& hint);

class RouDi {
 public:
  // Writes the config into a fresh directory under /tmp and starts
  // `binary`. Returns once RouDi
  // says it is ready for clients. Throws std::runtime_error with the log's
  // tail if it exits or is not ready within 10 s.
  RouDi(const std::string& binary, const std::vector<Mempool>& pools);
  // Stops RouDi: SIGTERM, then SIGKILL if it has not exited after 5 s.
  ~RouDi();
  RouDi(const RouDi&) = delete;
  RouDi& operator=(const RouDi&) = delete;

  pid_t pid() const noexcept { return child_ ? child_->pid() : -1; }
  const std::string& config_path() const noexcept { return config_path_; }
  const std::string& config_text() const noexcept { return config_; }
  // How the last stop went ("exited after SIGTERM in 12 ms", ...).
  std::string stop() noexcept;

 private:
  // The end of RouDi's output, on one line.
  std::string log_tail() const;
  void remove_files() noexcept;

  std::optional<fbuf::testing::Child> child_;
  std::string dir_;
  std::string config_path_;
  std::string config_;
};

}  // namespace fbuf::bench::peers

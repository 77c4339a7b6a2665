#include "roudi.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "bench_sys.h"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kStartTimeout{10};
constexpr std::chrono::seconds kStopTimeout{5};
// RouDi prints this line once it accepts runtimes.
constexpr const char* kReadyLine = "RouDi is ready for clients";

}  // namespace

std::string find_roudi(const std::string& hint) {
  if (!hint.empty()) return ::access(hint.c_str(), X_OK) == 0 ? hint : std::string();
  return find_program("iox-roudi");
}

RouDi::RouDi(const std::string& binary, const std::vector<Mempool>& pools) {
  char tmpl[] = "/tmp/peer_bench-roudi-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  dir_ = tmpl;
  config_path_ = dir_ + "/roudi.toml";

  std::ostringstream c;
  c << "# Written by peer_bench: one mempool per payload size measured (chunk\n"
       "# size = payload + iceoryx's chunk header, with headroom).\n"
       "[general]\nversion = 1\n\n[[segment]]\n";
  for (const Mempool& m : pools) {
    c << "\n[[segment.mempool]]\nsize = " << m.chunk_size << "\ncount = " << m.count << "\n";
  }
  config_ = c.str();
  {
    std::ofstream out(config_path_);
    out << config_;
    if (!out) {
      remove_files();
      throw std::runtime_error("cannot write " + config_path_);
    }
  }
  try {
    // RouDi goes when the benchmark goes, however the benchmark ends, and
    // cleans up after itself on SIGTERM.
    child_.emplace(binary, std::vector<std::string>{"-c", config_path_}, std::vector<std::pair<int, int>>{},
                   fbuf::testing::Output::kCapture, SIGTERM);
  } catch (const std::exception& e) {
    remove_files();
    throw std::runtime_error(std::string("starting iox-roudi: ") + e.what());
  }
  if (child_->wait_for_output(kReadyLine, kStartTimeout)) return;
  const std::string tail = log_tail();
  const fbuf::testing::ExitStatus st = child_->wait(std::chrono::milliseconds(0));
  child_.reset();
  remove_files();
  throw std::runtime_error("iox-roudi " + (st.timed_out ? "was not ready after 10 s" : st.describe() + " at start") +
                           "; its output: " + tail);
}

RouDi::~RouDi() {
  stop();
  remove_files();
}

void RouDi::remove_files() noexcept {
  ::unlink(config_path_.c_str());
  ::rmdir(dir_.c_str());
}

std::string RouDi::stop() noexcept {
  if (!child_) return "not running";
  const auto t0 = Clock::now();
  child_->kill(SIGTERM);
  std::string how;
  try {
    // wait() kills with SIGKILL at the deadline.
    const fbuf::testing::ExitStatus st = child_->wait(kStopTimeout);
    how = st.timed_out ? "did not exit within 5 s of SIGTERM; killed with SIGKILL" : "exited after SIGTERM";
  } catch (const std::exception& e) {
    how = std::string("could not be waited for: ") + e.what();
  }
  child_.reset();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  return how + " (" + std::to_string(ms) + " ms)";
}

std::string RouDi::log_tail() const {
  const std::string raw = child_ ? child_->output() : std::string();
  // One line without terminal colour codes, so that it fits a Markdown
  // bullet.
  std::string log;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\x1b') {
      while (i < raw.size() && raw[i] != 'm') ++i;
      continue;
    }
    log += raw[i] == '\n' || raw[i] == '\r' ? ' ' : raw[i];
  }
  if (log.size() > 1000) log = "..." + log.substr(log.size() - 1000);
  return log.empty() ? "(nothing)" : log;
}

}  // namespace fbuf::bench::peers

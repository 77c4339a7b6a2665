#include "roudi.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kStartTimeout{10};
constexpr std::chrono::seconds kStopTimeout{5};
// RouDi prints this line once it accepts runtimes.
constexpr const char* kReadyLine = "RouDi is ready for clients";

bool executable(const std::string& path) { return !path.empty() && ::access(path.c_str(), X_OK) == 0; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits up to `timeout` for `pid` to exit; true if it did.
bool wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace

std::string find_roudi(const std::string& hint) {
  if (!hint.empty()) return executable(hint) ? hint : std::string();
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream s(dirs);
  std::string dir;
  while (std::getline(s, dir, ':')) {
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/iox-roudi";
    if (executable(candidate)) return candidate;
  }
  return {};
}

RouDi::RouDi(const std::string& binary, const std::vector<Mempool>& pools) {
  char tmpl[] = "/tmp/peer_bench-roudi-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  dir_ = tmpl;
  config_path_ = dir_ + "/roudi.toml";
  log_path_ = dir_ + "/roudi.log";

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

  const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) {
    remove_files();
    throw std::runtime_error("cannot create " + log_path_);
  }
  std::string b = binary, flag = "-c", cfg = config_path_;
  char* argv[] = {b.data(), flag.data(), cfg.data(), nullptr};
  pid_ = ::fork();
  if (pid_ < 0) {
    ::close(log);
    remove_files();
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid_ == 0) {
    // Only async-signal-safe calls between fork and exec.
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    // RouDi goes when the benchmark goes, however the benchmark ends.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::execv(argv[0], argv);
    ::_exit(127);
  }
  ::close(log);

  const auto deadline = Clock::now() + kStartTimeout;
  for (;;) {
    if (read_file(log_path_).find(kReadyLine) != std::string::npos) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      const std::string how = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                                : "was killed by signal " + std::to_string(WTERMSIG(status));
      const std::string tail = log_tail();
      remove_files();
      throw std::runtime_error("iox-roudi " + how + " at start; its output: " + tail);
    }
    if (Clock::now() > deadline) {
      const std::string tail = log_tail();
      stop();
      remove_files();
      throw std::runtime_error("iox-roudi was not ready after 10 s; its output: " + tail);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

RouDi::~RouDi() {
  stop();
  remove_files();
}

void RouDi::remove_files() noexcept {
  ::unlink(config_path_.c_str());
  ::unlink(log_path_.c_str());
  ::rmdir(dir_.c_str());
}

std::string RouDi::stop() noexcept {
  if (pid_ <= 0) return "not running";
  const auto t0 = Clock::now();
  ::kill(pid_, SIGTERM);
  std::string how;
  if (wait_exit(pid_, kStopTimeout)) {
    how = "exited after SIGTERM";
  } else {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_, kStopTimeout);
    how = "did not exit within 5 s of SIGTERM; killed with SIGKILL";
  }
  pid_ = -1;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  return how + " (" + std::to_string(ms) + " ms)";
}

std::string RouDi::log_tail() const {
  const std::string raw = read_file(log_path_);
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

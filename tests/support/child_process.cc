#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace fbuf::testing {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Creates an unlinked, close-on-exec temporary file for a child's output.
int make_output_file() {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") +
                     "/fbuf-child-output-XXXXXX";
  int fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) throw_errno("mkostemp(" + path + ")");
  ::unlink(path.c_str());
  return fd;
}

}  // namespace

std::string ExitStatus::describe() const {
  std::ostringstream out;
  if (timed_out) {
    out << "timed out (killed)";
  } else if (exited) {
    out << "exited with status " << code;
  } else {
    out << "killed by signal " << signal << " (" << ::strsignal(signal) << ")";
  }
  return out.str();
}

Child::Child(std::string path, std::vector<std::string> args, std::vector<std::pair<int, int>> fds,
             Output output, int death_signal)
    : command_(path) {
  for (const std::string& a : args) command_ += " " + a;
  constexpr std::size_t kMaxFds = 8;
  constexpr int kAbove = 64;
  if (fds.size() > kMaxFds) throw std::invalid_argument("Child: at most 8 descriptors");
  for (const auto& [fd, target] : fds) {
    if (fd < 0 || target < 0 || target >= kAbove) throw std::invalid_argument("Child: bad descriptor");
  }

  // Everything the child needs is prepared before fork: between fork and
  // exec only async-signal-safe calls are allowed, because the parent may
  // have other threads (a Sender's listener, for one).
  std::vector<std::string> argv_storage;
  argv_storage.reserve(args.size() + 1);
  argv_storage.push_back(std::move(path));
  for (std::string& a : args) argv_storage.push_back(std::move(a));
  std::vector<char*> argv;
  argv.reserve(argv_storage.size() + 1);
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  static constexpr char kExecFailed[] = "fbuf-testkit: execv failed\n";
  const pid_t parent = ::getpid();

  if (output == Output::kCapture) output_fd_ = make_output_file();
  std::fflush(stdout);
  std::fflush(stderr);
  pid_ = ::fork();
  if (pid_ < 0) {
    if (output_fd_ >= 0) ::close(output_fd_);
    throw_errno("fork(" + command_ + ")");
  }
  if (pid_ == 0) {
    // A child whose parent died goes with it.
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    if (::getppid() != parent) ::_exit(126);
    // Every source first moves above the targets, so that no dup2 clobbers
    // a source still to be moved; dup2 then clears O_CLOEXEC on the target.
    int moved[kMaxFds];
    std::size_t n = 0;
    for (const auto& [fd, target] : fds) moved[n++] = ::fcntl(fd, F_DUPFD_CLOEXEC, kAbove);
    const int out = output_fd_ >= 0 ? ::fcntl(output_fd_, F_DUPFD_CLOEXEC, kAbove) : STDERR_FILENO;
    if (out < 0 || ::dup2(out, STDOUT_FILENO) < 0 || ::dup2(out, STDERR_FILENO) < 0) ::_exit(126);
    n = 0;
    for (const auto& [fd, target] : fds) {
      if (moved[n] < 0 || ::dup2(moved[n], target) < 0) ::_exit(126);
      ++n;
    }
    ::execv(argv[0], argv.data());
    [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, kExecFailed, sizeof kExecFailed - 1);
    ::_exit(127);
  }
}

Child::Child(Child&& other) noexcept
    : command_(std::move(other.command_)),
      pid_(std::exchange(other.pid_, -1)),
      output_fd_(std::exchange(other.output_fd_, -1)),
      line_pos_(other.line_pos_),
      status_(std::move(other.status_)) {}

Child::~Child() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (output_fd_ >= 0) ::close(output_fd_);
}

void Child::reap(int status) noexcept {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.exited = true;
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
  }
  s.raw = status;
  status_ = s;
}

ExitStatus Child::wait(std::chrono::milliseconds timeout) {
  if (status_) return *status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reap(status);
      return *status_;
    }
    if (r < 0 && errno != EINTR) throw_errno("waitpid(" + command_ + ")");
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reap(status);
  status_->timed_out = true;
  return *status_;
}

bool Child::poll_exit() {
  if (status_) return true;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
  reap(status);
  return true;
}

bool Child::wait_for_output(std::string_view text, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (output().find(text) != std::string::npos) return true;
    if (poll_exit()) return output().find(text) != std::string::npos;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string Child::line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Checked before the output is read: output printed before the exit is
    // then still seen.
    const bool ended = poll_exit();
    const std::string out = output();
    const std::size_t nl = out.find('\n', line_pos_);
    if (nl != std::string::npos) {
      std::string l = out.substr(line_pos_, nl - line_pos_);
      line_pos_ = nl + 1;
      return l;
    }
    if (ended) return "<eof>";
    if (std::chrono::steady_clock::now() >= deadline) return "<timeout>";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Child::kill(int sig) noexcept {
  if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

std::string Child::output() const {
  std::string out;
  if (output_fd_ < 0) return out;
  char chunk[8192];
  off_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(output_fd_, chunk, sizeof chunk, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(chunk, static_cast<std::size_t>(n));
    offset += n;
  }
  return out;
}

std::optional<std::string> field(std::string_view output, std::string_view key) {
  const std::string needle = std::string(key) + "=";
  std::optional<std::string> found;
  std::size_t pos = 0;
  while ((pos = output.find(needle, pos)) != std::string_view::npos) {
    const bool word_start = pos == 0 || output[pos - 1] == ' ' || output[pos - 1] == '\n' ||
                            output[pos - 1] == '\t';
    const std::size_t begin = pos + needle.size();
    if (word_start) {
      std::size_t end = output.find_first_of(" \t\n", begin);
      if (end == std::string_view::npos) end = output.size();
      found = std::string(output.substr(begin, end - begin));
    }
    pos = begin;
  }
  return found;
}

std::string hex(std::uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof text, "%016" PRIx64, v);
  return text;
}

std::string unique_service(std::string_view tag) {
  return "fbuf-it-" + std::to_string(::getpid()) + "/" + std::string(tag);
}

}  // namespace fbuf::testing

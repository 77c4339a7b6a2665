// Child processes for the tests and the benchmarks: a program started by
// fork + exec, optionally with some of this process's descriptors at fixed
// numbers, whose stdout and stderr go to an unlinked temporary file that the
// caller reads back (or to this process's stderr), and whose exit status the
// caller asserts on.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fbuf::testing {

// How a child ended.
struct ExitStatus {
  bool timed_out = false;  // still running at the deadline; it was killed
  bool exited = false;     // WIFEXITED
  int code = -1;           // WEXITSTATUS when exited
  int signal = 0;          // WTERMSIG when killed by a signal
  int raw = 0;             // the status waitpid() reported (WIFEXITED and friends)

  bool exited_with(int c) const noexcept { return exited && code == c; }
  bool killed_by(int s) const noexcept { return !exited && !timed_out && signal == s; }
  std::string describe() const;
};

// Where a child's stdout and stderr go.
enum class Output {
  kCapture,  // an unlinked temporary file: output() and line() read it
  kStderr,   // this process's stderr (when stdout carries a report)
};

// A running program. The destructor kills (SIGKILL) and reaps a child that
// is still running, so a failed assertion or a failed benchmark cell never
// leaves one behind; so does the death of this process (PR_SET_PDEATHSIG).
// Not thread-safe: one thread starts, waits for and reads a Child.
class Child {
 public:
  // Starts `path` with `args` (argv[1..]). Each pair of `fds` puts this
  // process's descriptor `first` at number `second` (below 64) in the child,
  // without O_CLOEXEC; {fd, fd} keeps `fd` open under its own number. Every
  // other descriptor is closed in the child only if it is O_CLOEXEC, as
  // everything fbuf opens is. The child gets `death_signal` when this
  // process dies. Throws std::system_error when the fork or the output file
  // fails; a failed exec shows as exit code 127.
  Child(std::string path, std::vector<std::string> args, std::vector<std::pair<int, int>> fds = {},
        Output output = Output::kCapture, int death_signal = SIGKILL);
  ~Child();
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const noexcept { return pid_; }
  bool started() const noexcept { return pid_ > 0; }
  // The command line, for failure messages.
  const std::string& command() const noexcept { return command_; }

  // Waits for the child to end; kills it at the deadline.
  ExitStatus wait(std::chrono::milliseconds timeout);
  // Waits until the child's output contains `text`; false at the deadline
  // or when the child ended without printing it.
  bool wait_for_output(std::string_view text, std::chrono::milliseconds timeout);
  // The next line of output that this call has not returned yet, without its
  // newline; "<timeout>" at the deadline, "<eof>" when the child ended
  // without printing another whole line.
  std::string line(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Sends `sig` to this child (and only to it).
  void kill(int sig) noexcept;

  // Everything the child has printed so far (stdout and stderr); "" with
  // Output::kStderr.
  std::string output() const;

 private:
  // Reaps the child if it has ended; true if it has.
  bool poll_exit();
  void reap(int status) noexcept;

  std::string command_;
  pid_t pid_ = -1;
  int output_fd_ = -1;
  std::size_t line_pos_ = 0;  // how much of the output line() has returned
  std::optional<ExitStatus> status_;
};

// The value of `key=VALUE` in `output`: the last occurrence of `key=` at the
// start of a word, up to the next white space; nullopt when there is none.
std::optional<std::string> field(std::string_view output, std::string_view key);

// `v` as the peers print checksums: 16 lower-case hex digits.
std::string hex(std::uint64_t v);

// A service name unique to this process and `tag`, short enough for any
// socket path, e.g. "fbuf-it-12345/stream".
std::string unique_service(std::string_view tag);

}  // namespace fbuf::testing

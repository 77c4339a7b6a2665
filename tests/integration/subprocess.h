// Child processes for the integration tests: a peer program started by
// fork + exec, whose stdout and stderr go to an unlinked temporary file that
// the test reads back, and whose exit status the test asserts on.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fbuf::testing {

// How a child ended.
struct ExitStatus {
  bool timed_out = false;  // still running at the deadline; it was killed
  bool exited = false;     // WIFEXITED
  int code = -1;           // WEXITSTATUS when exited
  int signal = 0;          // WTERMSIG when killed by a signal

  bool exited_with(int c) const noexcept { return exited && code == c; }
  bool killed_by(int s) const noexcept { return !exited && !timed_out && signal == s; }
  std::string describe() const;
};

// A running peer program. The destructor kills (SIGKILL) and reaps a child
// that is still running, so a failed assertion never leaves one behind.
// Not thread-safe: one thread starts, waits for and reads a Child.
class Child {
 public:
  // Starts `path` with `args` (argv[1..]). Throws std::system_error when the
  // fork or the output file fails; a failed exec shows as exit code 127.
  Child(std::string path, std::vector<std::string> args);
  ~Child();
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // The command line, for failure messages.
  const std::string& command() const noexcept { return command_; }

  // Waits for the child to end; kills it at the deadline.
  ExitStatus wait(std::chrono::milliseconds timeout);
  // Waits until the child's output contains `text`; false at the deadline
  // or when the child ended without printing it.
  bool wait_for_output(std::string_view text, std::chrono::milliseconds timeout);
  // Sends `sig` to this child (and only to it).
  void kill(int sig) noexcept;

  // Everything the child has printed so far (stdout and stderr).
  std::string output() const;

 private:
  void reap(int status) noexcept;

  std::string command_;
  pid_t pid_ = -1;
  int output_fd_ = -1;
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

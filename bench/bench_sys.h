// Small helpers the benchmarks share: an owned file descriptor, whole reads
// and writes, CPU pinning, a description of the machine, payload sizes.
// Everything here is for the benchmark binaries only; the library has its
// own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fbuf::bench {

// Owns a file descriptor and closes it on destruction. Move-only.
class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// Throws std::system_error built from errno, with `what` as context.
[[noreturn]] void throw_errno(const std::string& what);

// Writes all `n` bytes (retrying short writes and EINTR; on an O_NONBLOCK
// descriptor it waits in poll() when full). Returns false on an error or
// when the peer is gone (EPIPE); errno tells which.
bool write_full(int fd, const void* data, std::size_t n) noexcept;
// Sets O_NONBLOCK on `fd`. Throws on failure.
void set_nonblocking(int fd);
// Reads exactly `n` bytes; false on an error, on end-of-file (errno 0)
// before `n` bytes, or (errno ETIMEDOUT) if no byte arrives for `timeout`.
// For control messages, not for the measured path.
bool read_full_timed(int fd, void* data, std::size_t n, std::chrono::milliseconds timeout) noexcept;

// A pipe and a socketpair; both ends O_CLOEXEC. Throw on failure.
void make_pipe(Fd& read_end, Fd& write_end);
void make_socketpair(int type, Fd& a, Fd& b);

// The first executable `name` on PATH; "" if there is none.
std::string find_program(const std::string& name);

// CPUs this process may run on, in ascending order.
std::vector<int> allowed_cpus();
// Pins the calling thread (and the threads it creates later) to `cpu`.
// Throws on failure.
void pin_to_cpu(int cpu);

// A few lines describing the machine: CPU model, online CPUs, the CPUs this
// process may use, SMT siblings, kernel, compiler, load average.
std::vector<std::string> describe_machine();

// CPU time all CPUs spent busy (not idle, not iowait) since boot, from
// /proc/stat; -1 if it cannot be read.
double system_busy_seconds();
// CPU time used by this process and its reaped children (getrusage).
double own_cpu_seconds();

// "64", "4K", "64KiB", "1M", "16MiB" -> bytes; nullopt if malformed.
std::optional<std::size_t> parse_size(std::string_view s);
// 64 -> "64 B", 4096 -> "4 KiB", 16 << 20 -> "16 MiB".
std::string size_label(std::size_t size);

// Memory for a payload: page-aligned, every page touched once so that no
// page fault lands in a measurement. Freed on destruction.
class PageBuffer {
 public:
  explicit PageBuffer(std::size_t size);
  ~PageBuffer();
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t mapped_ = 0;
};

}  // namespace fbuf::bench

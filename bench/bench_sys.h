// Small POSIX helpers for the benchmarks: an owned file descriptor, whole
// reads and writes, CPU pinning and a description of the machine. Everything
// here is for the benchmark binaries only; the library has its own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
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
// Reads exactly `n` bytes. Returns false on an error or on end-of-file
// before `n` bytes; errno is 0 for end-of-file. On an O_NONBLOCK
// descriptor it retries for up to `spin` while nothing is there, then
// waits in poll(); `spin` is measured from the call.
bool read_full(int fd, void* data, std::size_t n,
               std::chrono::nanoseconds spin = std::chrono::nanoseconds(0)) noexcept;
// Sets O_NONBLOCK on `fd`. Throws on failure.
void set_nonblocking(int fd);
// As read_full, but gives up (returns false, errno ETIMEDOUT) if no byte
// arrives for `timeout`. For control messages, not for the measured path.
bool read_full_timed(int fd, void* data, std::size_t n, std::chrono::milliseconds timeout) noexcept;

// A pipe and a socketpair; both ends O_CLOEXEC. Throw on failure.
void make_pipe(Fd& read_end, Fd& write_end);
void make_socketpair(int type, Fd& a, Fd& b);

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
// How long the calling thread has been runnable but waiting for a CPU
// (the run_delay of /proc/thread-self/schedstat), in seconds; 0 if the
// kernel does not report it.
double run_delay_seconds();

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

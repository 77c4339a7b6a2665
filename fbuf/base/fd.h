// Owned Linux resources: file descriptors, mappings, sealed memfds.
// Private to the library.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace fbuf::detail {

// A move-only file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// An owned memory mapping, unmapped on destruction.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(void* addr, std::size_t length) noexcept : addr_(addr), length_(length) {}
  ~Mapping() { reset(); }
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Maps `length` bytes of `fd` from offset 0 with MAP_SHARED.
  static Mapping map(int fd, std::size_t length, int prot, const std::string& context);

  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return length_; }
  void reset() noexcept;

 private:
  void* addr_ = nullptr;
  std::size_t length_ = 0;
};

// A memfd of `size` bytes, sealed against shrinking and growing so no
// holder can truncate it under another's mapping (which would raise SIGBUS).
// With `final`, the seals are closed too (F_SEAL_SEAL); without, the caller
// adds more seals later and must then add F_SEAL_SEAL itself.
UniqueFd make_sealed_memfd(const std::string& name, std::size_t size, bool final = true);

// Re-opens `fd` read-only through /proc/self/fd: a holder of the result can
// never obtain a writable shared mapping of it.
UniqueFd reopen_read_only(int fd, const std::string& context);

std::size_t page_size() noexcept;
inline std::size_t round_up(std::size_t n, std::size_t to) noexcept { return (n + to - 1) / to * to; }

}  // namespace fbuf::detail

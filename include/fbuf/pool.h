// fbuf::Pool: a memfd-backed region split into page-aligned buffers of a few
// size classes. The owner process maps it read-write; receivers get a
// read-only descriptor of it. All bookkeeping (free lists, who holds what,
// generations) lives in the owner's private memory.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fbuf/buffer.h"
#include "fbuf/error.h"

namespace fbuf {

namespace detail {
class PoolCore;
struct PoolAccess;
}

// What happens to the sender's access to a buffer once it is sent.
enum class Policy : std::uint8_t {
  kVolatile = 0,     // nothing changes; a later write reaches the receivers
  kReadOnly = 1,     // the sender's pages become PROT_READ; a write faults
  kCopyOnWrite = 2,  // the sender's pages become PROT_READ; a write makes its page private (fbuf's SIGSEGV
                     // handler maps it MAP_PRIVATE) and goes on there; a system call writing there gets EFAULT
};
const char* to_string(Policy p) noexcept;

struct SizeClass {
  std::size_t buffer_size;  // rounded up to a whole number of pages
  std::uint32_t count;
};

struct PoolOptions {
  std::string name = "fbuf";       // shows in /proc/<pid>/maps and errors
  std::vector<SizeClass> classes;  // at least one; any order
  Policy policy = Policy::kVolatile;
  // read_only / copy_on_write: when a sent buffer has come back from every
  // receiver, restore the sender's write access at once (eager) rather than
  // when the buffer is next allocated (lazy, the default: a buffer that is
  // never reused costs nothing). docs/results.md has both measured.
  bool eager_restore = false;
};

struct PoolStats {
  std::uint32_t total = 0;      // buffers in the pool
  std::uint32_t free = 0;       // ready to allocate
  std::uint32_t allocated = 0;  // held by the owner as a Buffer, not yet sent
  std::uint32_t in_flight = 0;  // sent, awaiting return from some receiver
  std::uint64_t rejected_returns = 0;  // forged, duplicate or foreign returns
};

// A handle to a pool; copies refer to the same pool, which lives until the
// last handle, Buffer, Sender and in-process View referring to it is gone.
// All members are thread-safe.
class Pool {
 public:
  explicit Pool(PoolOptions options);  // throws Error
  ~Pool();
  Pool(const Pool&) noexcept;
  Pool& operator=(const Pool&) noexcept;
  Pool(Pool&&) noexcept;
  Pool& operator=(Pool&&) noexcept;

  // Takes a free buffer of the smallest class that holds `size` bytes. A
  // class is a reservation: small requests never take large buffers, so
  // a burst of small ones cannot starve the large ones. Fails fast with
  // Errc::kWouldBlock when that class has none free, Errc::kTooLarge when
  // no class is big enough.
  Result<Buffer> try_allocate(std::size_t size) noexcept;
  // As try_allocate, but waits up to `timeout` for a buffer to come back.
  // Fails with Errc::kTimedOut.
  Result<Buffer> allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept;

  PoolStats stats() const;
  const PoolOptions& options() const noexcept;  // classes as rounded
  std::size_t max_buffer_size() const noexcept;

 private:
  friend struct detail::PoolAccess;  // the library's own way to the core
  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace fbuf

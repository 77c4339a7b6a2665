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

// read_only / copy_on_write: which size classes send small buffers as
// sealed copies (docs/design.md, "Sealed copies"): at send the bytes are
// copied into a slot the application never maps writable, the Buffer is
// free again at once, and nothing is protected or restored. A class
// without sealed copies (or whose sealed slots are all in flight)
// protects the buffer itself. Volatile pools have none.
enum class SealedCopies : std::uint8_t {
  kAuto = 0,   // classes where a copy costs less than protect + restore, measured at pool creation
  kNever = 1,  // every send protects its buffer
  kUpTo = 2,   // classes of buffers up to PoolOptions::sealed_copy_limit bytes (after rounding)
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
  // read_only / copy_on_write: sealed copies for small buffers (above).
  SealedCopies sealed_copies = SealedCopies::kAuto;
  std::size_t sealed_copy_limit = 0;  // kUpTo only
};

struct PoolStats {
  std::uint32_t total = 0;      // buffers in the pool
  std::uint32_t free = 0;       // ready to allocate
  std::uint32_t allocated = 0;  // held by the owner as a Buffer, not yet sent
  std::uint32_t in_flight = 0;  // sent, awaiting return from some receiver
  std::uint64_t rejected_returns = 0;  // forged, duplicate or foreign returns
  // Sealed copies (SealedCopies): slots of their own, never allocated,
  // not counted above.
  std::uint32_t sealed_total = 0;      // sealed slots in the pool
  std::uint32_t sealed_free = 0;       // ready for a send's copy
  std::uint32_t sealed_in_flight = 0;  // copies sent, awaiting return
  std::uint64_t sealed_copies = 0;     // sends made by copying into a sealed slot
  std::uint64_t sealed_fallbacks = 0;  // sends of a sealed class that protected instead (none free)
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
  // The largest buffer size whose class sends sealed copies, 0 if none (as
  // decided at creation, SealedCopies).
  std::size_t sealed_copy_size() const noexcept;

 private:
  friend struct detail::PoolAccess;  // the library's own way to the core
  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace fbuf

// Immutability after send: how a pool ends its sender's write access to a
// buffer once it is sent, and gives it back when the buffer is allocated
// again. One policy per pool (fbuf::Policy); adding a policy or another
// protection mechanism changes this file and its test only.
// Private to the library.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fbuf/base/fd.h"
#include "fbuf/pool.h"

namespace fbuf::detail {

// Failure injection for tests of the pool's protection failure paths
// (tests/unit/protection_test.cc); never set in production. When a hook
// is set, every protect() and restore() asks it first: a non-zero errno
// makes the call fail with it, after applying the real operation to the
// first `length` bytes only (the hook may shorten `length`, to 0 for a
// call that changes nothing), the way mprotect can fail half-way through
// a range of several mappings. Unset, it costs one load and one
// predictable branch per call.
struct ProtectionFaults {
  enum class Op { kProtect, kRestore };
  using Hook = int (*)(Op op, std::size_t offset, std::size_t& length) noexcept;
  // relaxed: the hook is a function pointer with no data behind it; tests
  // set it before the calls it is meant for, in the same thread or with
  // their own synchronisation.
  static void set(Hook h) noexcept { hook.store(h, std::memory_order_relaxed); }
  static std::atomic<Hook> hook;
};

class Protection {
 public:
  Protection() = default;
  // `base` is the owner's shared writable mapping of `memfd` (`size`
  // bytes). Must be made before the pool is sealed against new writable
  // mappings: copy_on_write keeps a master mapping to restore from.
  // Throws Error.
  Protection(Policy policy, int memfd, std::byte* base, std::size_t size, const std::string& what);

  Policy policy() const noexcept { return policy_; }
  bool active() const noexcept { return policy_ != Policy::kVolatile; }

  // Ends the sender's write access to [offset, offset + length): the pages
  // become read-only (read_only) or private (copy_on_write). Returns 0 or
  // an errno; on failure that range is unchanged or already protected in
  // part (the caller restores it).
  int protect(std::size_t offset, std::size_t length) noexcept;
  // Shared and writable again. Returns 0 or an errno (ENOMEM when a split
  // would exceed vm.max_map_count); on failure the range may be restored
  // in part, so the caller must treat all of it as still protected.
  int restore(std::size_t offset, std::size_t length) noexcept;

  // copy_on_write: the SIGSEGV reporter's hook (segv_report.h) for a write
  // to a protected page of the sender's mapping: maps that one page
  // private, so the write lands in a private copy, and records it for
  // restore(). False (the write is reported) for any other policy, an
  // address outside the pool, or a failed mmap. Async-signal-safe.
  static bool on_write_fault(void* self, void* addr) noexcept;

 private:
  int apply_protect(std::size_t offset, std::size_t length) noexcept;
  int apply_restore(std::size_t offset, std::size_t length) noexcept;

  // copy_on_write: the private pages within [offset, offset + length)
  // become shared again, copied from the master mapping.
  int share_private_pages(std::size_t offset, std::size_t length) noexcept;

  Policy policy_ = Policy::kVolatile;
  int fd_ = -1;  // the pool's memfd, owned by the pool
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t page_ = 4096;
  Mapping master_;  // copy_on_write only: shared pages to restore from
  // copy_on_write only: one bit per page of the pool, set by
  // on_write_fault (any thread, in a signal handler) when it maps that
  // page private, cleared by restore (the pool's lock held) once the page
  // is shared again.
  std::unique_ptr<std::atomic<std::uint64_t>[]> private_pages_;
  // copy_on_write only: the same bits, set once the page's mmap is done
  // (others faulting on that page wait for it).
  std::unique_ptr<std::atomic<std::uint64_t>[]> mapped_pages_;
};

}  // namespace fbuf::detail

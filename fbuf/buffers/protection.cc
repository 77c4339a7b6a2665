#include "fbuf/buffers/protection.h"

#include <sys/mman.h>

#include <cerrno>

namespace fbuf::detail {

std::atomic<ProtectionFaults::Hook> ProtectionFaults::hook{nullptr};

namespace {

// Asks the test hook, if any, whether this call fails. Returns 0 to go on
// with the whole range, or the errno to fail with once the first `changed`
// bytes (as the hook left them, at most `length`) have been changed.
inline int injected(ProtectionFaults::Op op, std::size_t offset, std::size_t length,
                    std::size_t& changed) noexcept {
  // relaxed: a test sets the hook before the calls it wants to fail; the
  // function it points to is code, not data published through it.
  ProtectionFaults::Hook h = ProtectionFaults::hook.load(std::memory_order_relaxed);
  if (h == nullptr) [[likely]]
    return 0;
  changed = length;
  const int err = h(op, offset, changed);
  if (changed > length) changed = length;
  return err;
}

}  // namespace

Protection::Protection(Policy policy, int memfd, std::byte* base, std::size_t size, const std::string& what)
    : policy_(policy), fd_(memfd), base_(base) {
  if (policy_ == Policy::kCopyOnWrite)
    master_ = Mapping::map(memfd, size, PROT_READ | PROT_WRITE, what + " master");
}

int Protection::protect(std::size_t offset, std::size_t length) noexcept {
  std::size_t changed = 0;
  if (int err = injected(ProtectionFaults::Op::kProtect, offset, length, changed); err != 0) [[unlikely]] {
    if (changed != 0) apply_protect(offset, changed);
    return err;
  }
  return apply_protect(offset, length);
}

int Protection::restore(std::size_t offset, std::size_t length) noexcept {
  std::size_t changed = 0;
  if (int err = injected(ProtectionFaults::Op::kRestore, offset, length, changed); err != 0) [[unlikely]] {
    if (changed != 0) apply_restore(offset, changed);
    return err;
  }
  return apply_restore(offset, length);
}

int Protection::apply_protect(std::size_t offset, std::size_t length) noexcept {
  std::byte* at = base_ + offset;
  switch (policy_) {
    case Policy::kVolatile:
      return 0;
    case Policy::kReadOnly:
      return ::mprotect(at, length, PROT_READ) == 0 ? 0 : errno;
    case Policy::kCopyOnWrite: {
      // The same memfd pages at the same address, mapped private: a later
      // write by the sender lands in a private copy. A MAP_PRIVATE mapping
      // is not a snapshot, but receivers map read-only, so the sender is
      // the only one who could write and its writes now stay private.
      void* p = ::mmap(at, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd_,
                       static_cast<off_t>(offset));
      return p == MAP_FAILED ? errno : 0;
    }
  }
  return EINVAL;
}

int Protection::apply_restore(std::size_t offset, std::size_t length) noexcept {
  std::byte* at = base_ + offset;
  switch (policy_) {
    case Policy::kVolatile:
      return 0;
    case Policy::kReadOnly:
      return ::mprotect(at, length, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
    case Policy::kCopyOnWrite: {
      // Shared and writable again, dropping any private copies. The pool
      // is sealed against new writable mappings, so the shared pages are
      // duplicated from the master mapping made before the seal (mremap
      // with old_size 0 copies a shared mapping's pages).
      void* p = ::mremap(master_.data() + offset, 0, length, MREMAP_MAYMOVE | MREMAP_FIXED, at);
      if (p == MAP_FAILED) return errno;
      // The new mapping has no page-table entries yet: the sender's next
      // fill would take one page fault per page. Populating them in one
      // call is several times cheaper (docs/results.md). Best effort:
      // before Linux 5.14 it fails and faults happen lazily.
      ::madvise(at, length, MADV_POPULATE_WRITE);
      return 0;
    }
  }
  return EINVAL;
}

}  // namespace fbuf::detail

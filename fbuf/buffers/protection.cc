#include "fbuf/buffers/protection.h"

#include <sys/mman.h>
#include <unistd.h>

#include <bit>
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
    : policy_(policy), fd_(memfd), base_(base), size_(size), page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {
  if (policy_ == Policy::kCopyOnWrite) {
    master_ = Mapping::map(memfd, size, PROT_READ | PROT_WRITE, what + " master");
    const std::size_t words = (size / page_ + 63) / 64;
    private_pages_ = std::make_unique<std::atomic<std::uint64_t>[]>(words);
    mapped_pages_ = std::make_unique<std::atomic<std::uint64_t>[]>(words);
  }
}

bool Protection::on_write_fault(void* self, void* addr) noexcept {
  auto* p = static_cast<Protection*>(self);
  if (p == nullptr || p->policy_ != Policy::kCopyOnWrite || !p->private_pages_ || !p->mapped_pages_) return false;
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const auto b = reinterpret_cast<std::uintptr_t>(p->base_);
  if (a < b || a - b >= p->size_) return false;
  const std::size_t page = (a - b) / p->page_;
  const std::uint64_t bit = std::uint64_t{1} << (page % 64);
  std::atomic<std::uint64_t>& claimed = p->private_pages_[page / 64];
  std::atomic<std::uint64_t>& mapped = p->mapped_pages_[page / 64];
  // acq_rel: the thread that sets the claim maps the page. One that finds
  // it set waits until that mmap is done (`mapped`, acquire: pairs with
  // the release below, so its re-run write happens after the mmap), or
  // until the claim is withdrawn because the mmap failed (then its write
  // is reported too). The claim pairs with the acquire load in
  // share_private_pages(), which runs once the buffer came back through
  // the pool's lock.
  if ((claimed.fetch_or(bit, std::memory_order_acq_rel) & bit) != 0) {
    for (;;) {
      if ((mapped.load(std::memory_order_acquire) & bit) != 0) return true;
      if ((claimed.load(std::memory_order_acquire) & bit) == 0) return false;
    }
  }
  const int saved = errno;
  const std::size_t offset = page * p->page_;
  // The page as the receivers see it now, private to this mapping: the
  // write that faulted makes the copy.
  void* m = ::mmap(p->base_ + offset, p->page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, p->fd_,
                   static_cast<off_t>(offset));
  const bool ok = m != MAP_FAILED;
  // release, both: publish the mmap to threads waiting above.
  if (ok)
    mapped.fetch_or(bit, std::memory_order_release);
  else
    claimed.fetch_and(~bit, std::memory_order_release);
  errno = saved;
  return ok;
}

int Protection::share_private_pages(std::size_t offset, std::size_t length) noexcept {
  const std::size_t first = offset / page_;
  const std::size_t end = (offset + length + page_ - 1) / page_;
  std::size_t run = end;  // first page of the current run of private pages
  auto flush = [&](std::size_t stop) -> int {
    if (run == end) return 0;
    const std::size_t at = run * page_, len = (stop - run) * page_;
    run = end;
    // Shared and writable again, dropping the private copies. The pool is
    // sealed against new writable mappings, so the shared pages are
    // duplicated from the master mapping made before the seal (mremap
    // with old_size 0 copies a shared mapping's pages). The new pages have
    // no page-table entries yet: one call builds them, cheaper than the
    // sender's next fill taking one fault per page (docs/results.md).
    void* p = ::mremap(master_.data() + at, 0, len, MREMAP_MAYMOVE | MREMAP_FIXED, base_ + at);
    if (p == MAP_FAILED) return errno;
    ::madvise(base_ + at, len, MADV_POPULATE_WRITE);  // best effort, as before Linux 5.14
    for (std::size_t i = at / page_; i < stop; ++i) {
      // relaxed: this thread reads and clears; the acquire load below
      // ordered the handler's mmap before this mremap.
      mapped_pages_[i / 64].fetch_and(~(std::uint64_t{1} << (i % 64)), std::memory_order_relaxed);
      private_pages_[i / 64].fetch_and(~(std::uint64_t{1} << (i % 64)), std::memory_order_relaxed);
    }
    return 0;
  };
  for (std::size_t i = first; i < end;) {
    // acquire: pairs with the handler's fetch_or (on_write_fault).
    const std::uint64_t word = private_pages_[i / 64].load(std::memory_order_acquire);
    if (word == 0 && i % 64 == 0 && i + 64 <= end) {
      if (int err = flush(i); err != 0) return err;
      i += 64;
      continue;
    }
    if ((word >> (i % 64)) & 1) {
      if (run == end) run = i;
    } else if (int err = flush(i); err != 0) {
      return err;
    }
    ++i;
  }
  return flush(end);
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
    case Policy::kCopyOnWrite:
      // Read-only, as read_only, keeping the page-table entries: a later
      // write by the sender faults, and on_write_fault (through the
      // SIGSEGV reporter) maps that one page private for it, so the write
      // lands in a private copy and the receivers' bytes stay as sent.
      return ::mprotect(at, length, PROT_READ) == 0 ? 0 : errno;
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
    case Policy::kCopyOnWrite:
      // The pages the sender wrote after send are shared again first; the
      // others never stopped being shared.
      if (int err = share_private_pages(offset, length); err != 0) return err;
      return ::mprotect(at, length, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
  }
  return EINVAL;
}

}  // namespace fbuf::detail

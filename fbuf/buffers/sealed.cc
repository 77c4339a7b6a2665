// Sealed copies (docs/design.md, "Sealed copies"): a protected pool sends a
// small buffer by copying it into a slot of its memfd that the
// application's mapping does not cover, instead of protecting the buffer
// and restoring it at reuse. Which classes get sealed slots is measured
// here at pool creation; the slots' part of PoolCore lives here too.
#include "fbuf/buffers/sealed.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "fbuf/base/assert.h"
#include "fbuf/base/cpu_cache.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/limits.h"
#include "fbuf/buffers/pool_core.h"

namespace fbuf::detail {
namespace {

// The calibration's span: long enough that its per-page slope is that of
// large ranges (the kernel flushes a short range from the TLB page by
// page, a long one at once, so the slope over a few pages is steeper than
// over many), short enough that creating a pool stays cheap (a few
// hundred microseconds) and the copy stays in the cache.
constexpr std::size_t kCalibrationPages = 64;
// Each cost is the least of this many timings: a foreign thread can only
// make a timing longer, never shorter.
constexpr int kRounds = 5;

double elapsed_ns(std::chrono::steady_clock::time_point from) noexcept {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - from).count();
}

}  // namespace

SealedCosts measure_sealed_costs() noexcept {
  const std::size_t page = page_size();
  const std::size_t bytes = kCalibrationPages * page;
  // A scratch memfd mapped shared, like a pool: the protection changes
  // are those of a send (mprotect to read-only) and of a restore (back to
  // read-write, then the application's write refills every page), both
  // policies alike. Raw calls, not Protection: its failure injection is
  // for the pool's own calls.
  UniqueFd fd(::memfd_create("fbuf:calibration", MFD_CLOEXEC));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(2 * bytes)) != 0) return {};
  void* at = ::mmap(nullptr, 2 * bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (at == MAP_FAILED) return {};
  Mapping map(at, 2 * bytes);
  std::byte* src = map.data();
  std::byte* dst = src + bytes;
  std::memset(src, 1, 2 * bytes);

  auto pair = [&](std::size_t pages) -> double {
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < kRounds; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      if (::mprotect(src, pages * page, PROT_READ) != 0) return -1;
      if (::mprotect(src, pages * page, PROT_READ | PROT_WRITE) != 0) return -1;
      for (std::size_t p = 0; p < pages; ++p) static_cast<volatile std::byte*>(src)[p * page] = std::byte{2};
      best = std::min(best, elapsed_ns(t0));
    }
    return best;
  };
  const double one = pair(1);
  const double many = pair(kCalibrationPages);
  if (one < 0 || many < 0) return {};

  double copy = std::numeric_limits<double>::infinity();
  for (int r = 0; r < kRounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst, src, bytes);
    // The copy must happen before the clock is read again.
    asm volatile("" ::: "memory");
    copy = std::min(copy, elapsed_ns(t0));
  }

  SealedCosts c;
  c.pair_page_ns = std::max(0.0, (many - one) / static_cast<double>(kCalibrationPages - 1));
  c.pair_fixed_ns = std::max(0.0, one - c.pair_page_ns);
  c.copy_byte_ns = std::max(copy, 1.0) / static_cast<double>(bytes);
  return c;
}

std::size_t choose_sealed_copy_size(const PoolOptions& options, const std::vector<SizeClass>& classes) {
  if (options.policy == Policy::kVolatile) return 0;
  std::size_t chosen = 0;
  switch (options.sealed_copies) {
    case SealedCopies::kNever:
      return 0;
    case SealedCopies::kUpTo:
      for (const auto& c : classes)
        if (c.buffer_size <= options.sealed_copy_limit) chosen = c.buffer_size;
      return chosen;
    case SealedCopies::kAuto:
      break;
    default:
      throw_error(Errc::kInvalidArgument, "pool '" + options.name + "': unknown sealed_copies");
  }
  const SealedCosts k = measure_sealed_costs();
  if (k.copy_byte_ns <= 0) return 0;
  // The copy's cost is that of a copy within the core's cache,
  // extrapolated: it holds while a buffer fits in that cache, so larger
  // classes never get sealed slots (nor do they double their memory). The
  // last-level cache is no bound: a virtual machine may report a whole
  // socket's (256 MiB on the guest measured), and a copy streaming
  // through it costs more than the calibration saw. Without a cache size
  // from the kernel, only what was measured is trusted.
  const std::size_t page = page_size();
  std::size_t bound = core_cache_size();
  if (bound == 0) bound = kCalibrationPages * page;
  // Both costs are linear in the size and the copy is the cheaper at size
  // 0, so the classes where it stays cheaper are a prefix of the sorted
  // classes.
  for (const auto& c : classes) {
    if (c.buffer_size > bound) break;
    const double pages = static_cast<double>(c.buffer_size / page);
    const double copy = k.copy_byte_ns * static_cast<double>(c.buffer_size);
    if (copy >= k.pair_fixed_ns + k.pair_page_ns * pages) break;
    chosen = c.buffer_size;
  }
  return chosen;
}

void PoolCore::plan_sealed_slots() {
  geometry_ = options_.classes;
  sealed_class_.assign(options_.classes.size(), kNoClass);
  const std::size_t limit = choose_sealed_copy_size(options_, options_.classes);
  std::uint64_t count = 0;
  for (const auto& c : options_.classes) count += c.count;
  // As many sealed slots as the class has buffers, so a send waits for one
  // no more than for a buffer; the wire's limits on classes and buffers
  // bound them (a class past those limits protects, as without).
  for (std::size_t k = 0; k < options_.classes.size(); ++k) {
    const SizeClass& c = options_.classes[k];
    if (c.buffer_size > limit || geometry_.size() >= kMaxClasses || count + c.count > kMaxBuffers) break;
    sealed_class_[k] = static_cast<std::uint16_t>(geometry_.size());
    geometry_.push_back(c);
    count += c.count;
    sealed_copy_size_ = c.buffer_size;
  }
}

void PoolCore::map_sealed_region(const std::string& what) {
  if (total_size_ == app_size_) return;
  const std::size_t length = total_size_ - app_size_;
  void* at = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), static_cast<off_t>(app_size_));
  if (at == MAP_FAILED) throw_errno("mmap(sealed slots) for " + what);
  sealed_map_ = Mapping(at, length);
}

bool PoolCore::seal_locked(Buffer& b, std::uint32_t offset, std::uint32_t length) noexcept {
  const std::uint32_t from = b.index_;
  const std::uint16_t k = sealed_class_[slots_[from].size_class];
  if (k == kNoClass) return false;
  auto& list = free_[k];
  // Copies returned in this process come back without a drain; returns
  // from other processes are collected when the application allocates
  // in this class (try_allocate_locked).
  if (list.empty()) collect_local_returns_locked();
  if (list.empty()) {
    ++sealed_fallbacks_;
    return false;
  }
  const std::uint32_t index = list.back();
  list.pop_back();
  Slot& s = slots_[index];
  FBUF_ASSERT(s.state == State::kFree && s.origin == kNoSlot, "a sealed free list holds a slot that is not free");
  s.state = State::kAllocated;
  if (++s.generation == 0) s.generation = 1;
  s.origin = from;
  // The caller checked the range against the buffer's capacity, which is
  // the sealed slot's too.
  if (length != 0)
    std::memcpy(sealed_map_.data() + (s.offset - app_size_) + offset, map_.data() + slots_[from].offset + offset,
                length);
  b.index_ = index;
  b.generation_ = s.generation;
  return true;
}

void PoolCore::unseal_locked(Buffer& b) noexcept {
  if (!b.pool_ || !is_sealed(b.index_)) return;
  Slot& s = slots_[b.index_];
  FBUF_ASSERT(s.state == State::kAllocated && s.origin != kNoSlot, "unsealing a slot no send took");
  b.index_ = s.origin;
  b.generation_ = slots_[s.origin].generation;
  s.origin = kNoSlot;
  s.state = State::kFree;
  free_[s.size_class].push_back(static_cast<std::uint32_t>(&s - slots_.data()));
}

void PoolCore::mark_sealed_sent_locked(Buffer& b, std::uint32_t receivers) noexcept {
  Slot& s = slots_[b.index_];
  FBUF_ASSERT(s.state == State::kAllocated && s.generation == b.generation_ && s.origin != kNoSlot,
              "sending a sealed copy the pool did not make");
  FBUF_ASSERT(receivers > 0, "sending to nobody");
  s.state = State::kInFlight;
  s.refs = receivers;
  ++sealed_in_flight_;
  ++sealed_copies_;
  const std::uint32_t origin = s.origin;
  s.origin = kNoSlot;
  FBUF_ASSERT(slots_[origin].state == State::kAllocated, "a sealed copy's buffer is not allocated");
  // The application's buffer is free at once: nothing of it was sent.
  --allocated_;
  free_locked(origin);
  b.pool_.reset();
  b.data_ = nullptr;
  b.capacity_ = 0;
  // An allocate() waiting in another thread may take it.
  ring_doorbell_locked();
}

}  // namespace fbuf::detail

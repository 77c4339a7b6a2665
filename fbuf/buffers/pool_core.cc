#include "fbuf/buffers/pool_core.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <new>

#include "fbuf/base/assert.h"
#include "fbuf/base/cpu_cache.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/readiness.h"

namespace fbuf {
namespace detail {
namespace {

// The longest an owner sleeps before re-checking its inlets, so a peer
// that fails to ring the doorbell costs latency, never a hang.
constexpr std::chrono::milliseconds kMaxSleep{50};
// How often drains look for orphaned receivers that hung up.
constexpr std::chrono::milliseconds kPeerCheckEvery{5};

// Mapping entries that live protected pools may still need, beyond the
// ones they have now (PoolCore::reserve_mappings).
std::atomic<std::uint64_t> g_map_budget_reserved{0};

// A number from a one-line /proc file; 0 if it cannot be read.
std::uint64_t read_proc_number(const char* path) noexcept {
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return 0;
  unsigned long long v = 0;
  const bool ok = std::fscanf(f, "%llu", &v) == 1;
  std::fclose(f);
  return ok ? v : 0;
}

// The mappings this process has now (lines of /proc/self/maps); 0 if
// unknown.
std::uint64_t mappings_in_use() noexcept {
  std::FILE* f = std::fopen("/proc/self/maps", "re");
  if (f == nullptr) return 0;
  std::uint64_t lines = 0;
  for (int c; (c = std::fgetc(f)) != EOF;) lines += c == '\n';
  std::fclose(f);
  return lines;
}

}  // namespace

PoolCore::PoolCore(PoolOptions options) : options_(std::move(options)) {
  const std::string what = "pool '" + options_.name + "'";
  if (options_.classes.empty()) throw_error(Errc::kInvalidArgument, what + ": no size classes");
  if (options_.classes.size() > kMaxClasses)
    throw_error(Errc::kInvalidArgument, what + ": more than " + std::to_string(kMaxClasses) + " size classes");
  if (options_.policy != Policy::kVolatile && options_.policy != Policy::kReadOnly &&
      options_.policy != Policy::kCopyOnWrite)
    throw_error(Errc::kInvalidArgument, what + ": unknown policy");
  const std::size_t page = page_size();
  std::uint64_t count = 0;
  for (auto& c : options_.classes) {
    if (c.buffer_size == 0 || c.count == 0)
      throw_error(Errc::kInvalidArgument, what + ": a size class has zero size or count");
    if (c.buffer_size > std::numeric_limits<std::uint32_t>::max() - page)
      throw_error(Errc::kInvalidArgument, what + ": buffers are limited to 4 GiB - 1 page");
    c.buffer_size = round_up(c.buffer_size, page);
    count += c.count;
  }
  if (count > kMaxBuffers) throw_error(Errc::kInvalidArgument, what + ": more than 2^24 buffers");
  std::sort(options_.classes.begin(), options_.classes.end(),
            [](const SizeClass& a, const SizeClass& b) { return a.buffer_size < b.buffer_size; });

  reserve_mappings(count, what);
  // Sealed slots are never protected: they need no mapping of their own.
  plan_sealed_slots();

  slots_.reserve(count);
  free_.resize(geometry_.size());
  for (std::size_t k = 0; k < geometry_.size(); ++k) {
    if (k == options_.classes.size()) {
      app_count_ = static_cast<std::uint32_t>(slots_.size());
      app_size_ = total_size_;
    }
    const auto& c = geometry_[k];
    free_[k].reserve(c.count);
    for (std::uint32_t i = 0; i < c.count; ++i) {
      if (total_size_ > std::numeric_limits<std::size_t>::max() / 2 - c.buffer_size)
        throw_error(Errc::kInvalidArgument, what + ": too large");
      slots_.push_back(Slot{total_size_, c.buffer_size, 0, 0, static_cast<std::uint16_t>(k), State::kFree});
      total_size_ += c.buffer_size;
    }
  }
  if (geometry_.size() == options_.classes.size()) {
    app_count_ = static_cast<std::uint32_t>(slots_.size());
    app_size_ = total_size_;
  }
  // Whether a class collects returns at every allocation (docs/results.md,
  // "When returns are collected"). Cycling through a class's buffers
  // (collecting only when it runs dry) wins while a buffer the consumer
  // has just read still sits in that consumer core's own cache: reusing
  // it at once would make the producer invalidate those lines one by
  // one, while the next buffer of the cycle has long left it. A buffer
  // larger than a core's own cache (level 2) cannot stay there, so
  // reusing the one just returned costs no such transfer and keeps the
  // class's working set in the shared cache small; and a class whose
  // buffers together overflow the largest cache is read from memory when
  // cycled, so the warm buffer wins there too. Without cache sizes from
  // the kernel, every class reuses returned buffers: never much slower,
  // and never the collapse of a pool that cycles through memory.
  const std::size_t cache = last_level_cache_size();
  const std::size_t core_cache = core_cache_size();
  reuse_returned_.reserve(options_.classes.size());
  for (const auto& c : options_.classes)
    reuse_returned_.push_back(cache == 0 || core_cache == 0 || c.buffer_size > core_cache ||
                              std::uint64_t{c.count} * c.buffer_size > cache);
  extents_.reserve(slots_.size());
  for (const Slot& s : slots_) extents_.push_back(Extent{s.offset, s.capacity});
  local_returns_ = std::make_unique<LocalReturn[]>(slots_.size());
  // LIFO free lists, lowest index on top: recently used buffers are reused
  // first while their pages are warm.
  for (std::uint32_t i = static_cast<std::uint32_t>(slots_.size()); i-- > 0;)
    free_[slots_[i].size_class].push_back(i);

  fd_ = make_sealed_memfd("fbuf:" + options_.name, total_size_, /*final=*/false);
  // The application's mapping covers its own buffers only; the sealed
  // slots after them are written through sealed_map_ alone.
  map_ = Mapping::map(fd_.get(), app_size_, PROT_READ | PROT_WRITE, what);
  protection_ = Protection(options_.policy, fd_.get(), map_.data(), app_size_, what);
  map_sealed_region(what);
  // From here on nobody can make a new writable mapping of the pool, nor
  // write() to it: not a receiver that re-opens its read-only fd through
  // /proc read-write, and not this process either. The mappings made
  // above keep their write access (F_SEAL_FUTURE_WRITE spares existing
  // mappings, which is also why it is no substitute for the policies).
  if (::fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0)
    throw_errno("F_ADD_SEALS(F_SEAL_FUTURE_WRITE) for " + what);
  ro_fd_ = reopen_read_only(fd_.get(), what);
  alias_ = Mapping::map(ro_fd_.get(), total_size_, PROT_READ, what + " read-only alias");
  install_segv_report();
  // protection_ stays at this address while the registration lives (it is
  // unregistered first, in the destructor).
  map_segv_ = SegvRegistration(register_mapping(map_.data(), app_size_, MappingKind::kSender, options_.policy,
                                                options_.name.c_str(), options_.classes,
                                                WriteFaultHook{&Protection::on_write_fault, &protection_}));
  alias_segv_ = SegvRegistration(register_mapping(alias_.data(), total_size_, MappingKind::kAlias,
                                                  options_.policy, options_.name.c_str(), geometry_));

  doorbell_fd_ = make_sealed_memfd("fbuf-doorbell:" + options_.name, page);
  doorbell_map_ = Mapping::map(doorbell_fd_.get(), page, PROT_READ | PROT_WRITE, what + " doorbell");
  auto* d = new (doorbell_map_.data()) DoorbellHeader{};
  d->magic = kDoorbellMagic;
  d->version = kDoorbellVersion;
}

PoolCore::~PoolCore() = default;

PoolCore::MapReservation::~MapReservation() {
  // relaxed: a counter of reservations; no data is published through it.
  if (count != 0) g_map_budget_reserved.fetch_sub(count, std::memory_order_relaxed);
}

void PoolCore::reserve_mappings(std::uint64_t count, const std::string& what) {
  if (options_.policy == Policy::kVolatile) return;
  // A protected or private buffer between unprotected neighbours is a
  // mapping of its own, so a protected pool may need one mapping per
  // buffer, sent and held in any order. Refusing a pool that could pass
  // vm.max_map_count here is what keeps send from failing with ENOMEM
  // later. The process's other protected pools count with their own
  // worst case (their splits may not have happened yet); mappings made
  // later by anything else are not foreseen (docs/design.md).
  const std::uint64_t limit = read_proc_number("/proc/sys/vm/max_map_count");
  if (limit == 0) return;  // no /proc: nothing to check against
  const std::uint64_t need = count;
  // relaxed: a counter of reservations, as in the destructor; two pools
  // created at once each see the other's reservation or make their own
  // first, and both check the sum.
  const std::uint64_t others = g_map_budget_reserved.fetch_add(need, std::memory_order_relaxed);
  // Five mappings of the pool besides its buffers' (the read-only alias,
  // the copy_on_write master, the sealed slots', the doorbell, and one to
  // spare).
  const std::uint64_t in_use = mappings_in_use();
  const std::uint64_t want = in_use + others + need + 5;
  if (want > limit) {
    g_map_budget_reserved.fetch_sub(need, std::memory_order_relaxed);
    throw_error(Errc::kInvalidArgument,
                what + ": " + std::to_string(count) + " " +
                    (options_.policy == Policy::kReadOnly ? "read_only" : "copy_on_write") +
                    " buffers may need one memory mapping each; with the " + std::to_string(in_use) +
                    " this process has and " + std::to_string(others) +
                    " reserved by its other protected pools that makes " + std::to_string(want) +
                    ", over vm.max_map_count (" + std::to_string(limit) +
                    "): raise vm.max_map_count, use fewer and larger buffers, or the volatile policy");
  }
  map_reservation_.count = need;
}

Result<Buffer> PoolCore::try_allocate_locked(std::size_t size) noexcept {
  if (size > options_.classes.back().buffer_size) return Errc::kTooLarge;
  std::size_t first = 0;
  while (options_.classes[first].buffer_size < size) ++first;
  // Returns are collected when the class has run dry, and at every
  // allocation in a class that does not fit in the cache (see the
  // constructor): the free lists are LIFO, so the buffer just returned is
  // handed out next. That costs a cross-core read of each return ring's
  // tail (~60 ns per buffer), which only shows when the payload is not
  // touched.
  const std::size_t k = first;
  // Volatile: in-process returns are collected by the same rule
  // (drain_inlets_locked collects them first); reading the list at every
  // allocation moved its head's cache line between the two threads at
  // every buffer, as a return ring's tail would between two cores.
  // Protected policies collect them first at every allocation: there the
  // buffers just released lie guarded on top of the list and are restored
  // together (restore_top_locked), and a cache-line transfer is nothing
  // beside the restore.
  if (protection_.active()) collect_local_returns_locked();
  const bool empty = free_[k].empty();
  // A class with sealed slots also collects when they have run out, so
  // the send of this buffer finds its copies back.
  const bool sealed_dry = sealed_class_[k] != kNoClass && free_[sealed_class_[k]].empty();
  if (empty || reuse_returned_[k] != 0 || sealed_dry) drain_inlets_locked(/*slow=*/empty);
  auto& list = free_[k];
  if (list.empty()) return Errc::kWouldBlock;
  std::uint32_t index = list.back();
  if (slots_[index].guarded) {
    // Cached fbufs: a returned buffer keeps its protection until it is
    // handed out again. The buffers returned since the last restore lie
    // on top of the list; restoring them together costs one call per
    // contiguous run instead of one per buffer. Restoring one buffer inside
    // a protected run splits a mapping and can fail (ENOMEM at
    // vm.max_map_count): then it is tried alone, then passed over.
    restore_top_locked(list);
    if (int err = slots_[index].guarded ? restore_locked(index) : 0; err != 0) {
      if (!take_another_locked(list)) return std::error_code(err, std::system_category());
      index = list.back();
    }
  }
  list.pop_back();
  {
    Slot& s = slots_[index];
    FBUF_ASSERT(s.state == State::kFree && !s.guarded, "free list holds a buffer that is not free");
    s.state = State::kAllocated;
    // Generation 0 is never used, so a zeroed return can never match.
    if (++s.generation == 0) s.generation = 1;
    ++allocated_;
    Buffer b;
    b.pool_ = shared_from_this();
    b.data_ = map_.data() + s.offset;
    b.capacity_ = s.capacity;
    b.index_ = index;
    b.generation_ = s.generation;
    return b;
  }
}

bool PoolCore::can_allocate_locked(std::size_t size) noexcept {
  if (size > options_.classes.back().buffer_size) return true;
  std::size_t k = 0;
  while (options_.classes[k].buffer_size < size) ++k;
  if (free_[k].empty()) drain_inlets_locked(/*slow=*/true);
  return !free_[k].empty();
}

Result<Buffer> PoolCore::try_allocate(std::size_t size) noexcept {
  std::lock_guard lock(mu_);
  return try_allocate_locked(size);
}

Result<Buffer> PoolCore::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  // The clock is read only once the pool has run dry: an allocation that
  // succeeds at once (the common case) costs no clock_gettime.
  const auto wouldblock = make_error_code(Errc::kWouldBlock);
  Result<Buffer> r = try_allocate(size);
  if (r || r.error() != wouldblock) return r;
  const auto start = Clock::now();
  const auto deadline = deadline_from(start, timeout);
  // Poll before sleeping, as receive() does: a receiver a few microseconds
  // from returning a buffer then costs neither side a futex call (without
  // it, every time the pool ran dry the owner slept and the receiver's
  // next return made a futex wake).
  const auto spin_end = std::min(deadline, start + kSpinBeforeSleep);
  while (Clock::now() < spin_end) {
    cpu_relax();
    r = try_allocate(size);
    if (r || r.error() != wouldblock) return r;
  }
  for (;;) {
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    auto* d = doorbell();
    Result<Buffer> again = Errc::kWouldBlock;
    sleep_until(d->waiters, d->seq, left,
                     [&] {
                       again = try_allocate(size);
                       return again.ok() || again.error() != wouldblock;
                     });
    if (again || again.error() != wouldblock) return again;
  }
}

bool PoolCore::take_another_locked(std::vector<std::uint32_t>& list) noexcept {
  // The buffer on top could not be restored: it goes to the bottom, so this
  // class does not keep failing on it while others are free, and it is
  // tried again once the others have been handed out.
  std::rotate(list.begin(), list.end() - 1, list.end());
  // A free buffer that needs no restore costs no syscall and cannot fail.
  auto ready = std::find_if(list.rbegin(), list.rend(), [&](std::uint32_t i) { return !slots_[i].guarded; });
  if (ready != list.rend()) {
    std::iter_swap(ready, list.rbegin());
    return true;
  }
  // All guarded: one more try, with the next one, bounds the syscalls a
  // failing allocation makes. If it fails too it goes to the bottom as well.
  if (list.size() < 2) return false;
  if (restore_locked(list.back()) == 0) return true;
  std::rotate(list.begin(), list.end() - 1, list.end());
  return false;
}

void PoolCore::restore_top_locked(const std::vector<std::uint32_t>& list) noexcept {
  // The guarded buffers on top of the list, at most a batch of them.
  std::uint32_t batch[kStackBatch];
  std::size_t n = 0;
  for (auto it = list.rbegin(); it != list.rend() && n < kStackBatch && slots_[*it].guarded; ++it) batch[n++] = *it;
  if (n < 2) return;  // restore_locked does one alone
  std::sort(batch, batch + n);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && batch[j] == batch[j - 1] + 1) ++j;
    const Slot& a = slots_[batch[i]];
    const Slot& b = slots_[batch[j - 1]];
    // On failure the run stays guarded (a part may have been restored:
    // guarded is the safe answer), and its buffers are restored one by
    // one when they are handed out.
    if (protection_.restore(a.offset, b.offset + b.capacity - a.offset) == 0)
      for (std::size_t k = i; k < j; ++k) slots_[batch[k]].guarded = false;
    i = j;
  }
}

int PoolCore::restore_locked(std::uint32_t index) noexcept {
  Slot& s = slots_[index];
  int err = protection_.restore(s.offset, s.capacity);
  if (err == 0) {
    s.guarded = false;
    return 0;
  }
  // Restoring one buffer inside a protected range splits a mapping in
  // three, which fails at vm.max_map_count. Restoring the whole run of
  // free, guarded neighbours with it merges mappings instead.
  std::uint32_t first = index, last = index;
  auto free_guarded = [&](std::uint32_t i) {
    return slots_[i].state == State::kFree && slots_[i].guarded && slots_[i].size_class == s.size_class;
  };
  while (first > 0 && free_guarded(first - 1)) --first;
  while (last + 1 < slots_.size() && free_guarded(last + 1)) ++last;
  if (first == last) return err;
  const std::size_t begin = slots_[first].offset;
  const std::size_t end = slots_[last].offset + slots_[last].capacity;
  if (int again = protection_.restore(begin, end - begin); again != 0) return again;
  for (std::uint32_t i = first; i <= last; ++i) slots_[i].guarded = false;
  return 0;
}

std::error_code PoolCore::guard_locked(std::span<const std::uint32_t> indices) noexcept {
  if (!protection_.active() || indices.empty()) return {};
  // Indices are in offset order within the pool; sort a small copy and
  // change each contiguous run of buffers with one call.
  std::uint32_t local[kStackBatch];
  std::vector<std::uint32_t> heap;
  std::span<std::uint32_t> sorted;
  if (indices.size() <= kStackBatch) {
    std::copy(indices.begin(), indices.end(), local);
    sorted = std::span<std::uint32_t>(local, indices.size());
  } else {
    try {
      heap.assign(indices.begin(), indices.end());
    } catch (...) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    sorted = heap;
  }
  std::sort(sorted.begin(), sorted.end());
  auto run_end = [&](std::size_t i) {
    std::size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    return j;
  };
  auto range = [&](std::size_t i, std::size_t j) {
    const Slot& a = slots_[sorted[i]];
    const Slot& b = slots_[sorted[j - 1]];
    return std::pair{a.offset, b.offset + b.capacity - a.offset};
  };
  std::size_t done = 0;  // runs [0, done) are protected
  int err = 0;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = run_end(i);
    auto [offset, length] = range(i, j);
    if ((err = protection_.protect(offset, length)) != 0) {
      // A failed call may have changed part of its range: restore it too.
      done = j;
      break;
    }
    i = done = j;
  }
  if (err == 0) {
    for (std::uint32_t index : sorted) slots_[index].guarded = true;
    return {};
  }
  // Roll back run by run, the failed one included. Restoring exactly a
  // range this call changed merges mappings rather than splitting them;
  // should it fail anyway, each buffer of the run is tried alone, and the
  // slot of one that still fails says guarded, so the state matches the
  // mapping (a restore that failed may have changed part of its range:
  // guarded is the safe answer) and the next allocation restores it. A
  // successful restore also clears `guarded` left by an earlier rollback
  // that failed.
  for (std::size_t i = 0; i < done;) {
    std::size_t j = run_end(i);
    auto [offset, length] = range(i, j);
    if (protection_.restore(offset, length) == 0) {
      for (std::size_t k = i; k < j; ++k) slots_[sorted[k]].guarded = false;
    } else {
      for (std::size_t k = i; k < j; ++k) {
        Slot& s = slots_[sorted[k]];
        s.guarded = protection_.restore(s.offset, s.capacity) != 0;
      }
    }
    i = j;
  }
  return std::error_code(err, std::system_category());
}

void PoolCore::free_locked(std::uint32_t index) noexcept {
  Slot& s = slots_[index];
  s.state = State::kFree;
  s.refs = 0;
  free_[s.size_class].push_back(index);
  // Eager restore is best effort: a buffer that cannot be restored now
  // stays guarded and is restored (or passed over) when it is allocated.
  if (s.guarded && options_.eager_restore) restore_locked(index);
}

void PoolCore::mark_sent_locked(Buffer& b, std::uint32_t receivers) noexcept {
  if (is_sealed(b.index_)) return mark_sealed_sent_locked(b, receivers);
  Slot& s = slots_[b.index_];
  FBUF_ASSERT(s.state == State::kAllocated && s.generation == b.generation_,
              "sending a buffer the pool did not hand out");
  FBUF_ASSERT(receivers > 0, "sending to nobody");
  s.state = State::kInFlight;
  s.refs = receivers;
  --allocated_;
  ++in_flight_;
  // The handle gives up the buffer without returning it: the receivers
  // hold it now.
  b.pool_.reset();
  b.data_ = nullptr;
  b.capacity_ = 0;
}

bool PoolCore::release_ref_locked(std::uint32_t index, std::uint32_t generation) noexcept {
  if (index >= slots_.size()) {
    ++rejected_returns_;
    return false;
  }
  Slot& s = slots_[index];
  if (s.state != State::kInFlight || s.generation != generation || s.refs == 0) {
    ++rejected_returns_;
    return false;
  }
  if (--s.refs == 0) {
    --(is_sealed(index) ? sealed_in_flight_ : in_flight_);
    free_locked(index);
  }
  return true;
}

void PoolCore::release_unsent(std::uint32_t index, std::uint32_t generation) noexcept {
  {
    std::lock_guard lock(mu_);
    Slot& s = slots_[index];
    FBUF_ASSERT(s.state == State::kAllocated && s.generation == generation,
                "a Buffer handle does not match its pool slot");
    --allocated_;
    free_locked(index);
  }
  ring_doorbell_unlocked();
}

void PoolCore::release_ref(std::uint32_t index, std::uint32_t generation) noexcept {
  if (options_.eager_restore || index >= extents_.size()) {
    {
      std::lock_guard lock(mu_);
      release_ref_locked(index, generation);
    }
    ring_doorbell_unlocked();
    return;
  }
  // A View of this process: nothing to validate against a hostile peer,
  // and the View held a reference, so the slot stays in flight at this
  // generation until the release is applied. acq_rel: the release
  // orders this thread's reads of the buffer before the pool's reuse of
  // it (pairs with the exchange in collect_local_returns_locked()); the
  // acquire half orders the link store below after an earlier collect.
  LocalReturn& r = local_returns_[index];
  if (r.count.fetch_add(1, std::memory_order_acq_rel) == 0) {
    // relaxed: the link is published by the release CAS on the head.
    std::uint32_t head = local_head_.load(std::memory_order_relaxed);
    do {
      r.next.store(head, std::memory_order_relaxed);
      // release: publishes the link and the count; pairs with the acquire
      // exchange in collect_local_returns_locked().
    } while (!local_head_.compare_exchange_weak(head, index, std::memory_order_release, std::memory_order_relaxed));
  }
  ring_doorbell_unlocked();
}

void PoolCore::collect_local_returns_locked() noexcept {
  // relaxed: a cheap look; an empty list seen stale is collected at the
  // next allocation, and an allocate() waiter re-checks after the
  // doorbell's fences (the releaser rings after its push).
  if (local_head_.load(std::memory_order_relaxed) == kNoSlot) return;
  // acquire: sees the links and counts of every push; pairs with the
  // release CAS in release_ref().
  std::uint32_t at = local_head_.exchange(kNoSlot, std::memory_order_acquire);
  // The list is newest first: reverse it, so the buffers go back on their
  // free lists in the order they were released (the last one on top).
  // Nobody else writes these links while their counts are not 0. relaxed:
  // only this thread reads them now.
  std::uint32_t reversed = kNoSlot;
  while (at != kNoSlot) {
    const std::uint32_t next = local_returns_[at].next.load(std::memory_order_relaxed);
    local_returns_[at].next.store(reversed, std::memory_order_relaxed);
    reversed = at;
    at = next;
  }
  at = reversed;
  while (at != kNoSlot) {
    LocalReturn& r = local_returns_[at];
    // The link first: once the count is reset, a new release may push
    // this slot again and overwrite it. relaxed: ordered by the exchange.
    const std::uint32_t next = r.next.load(std::memory_order_relaxed);
    // acq_rel: takes the releases counted so far (pairs with their
    // fetch_add); releases after it push the slot again.
    const std::uint32_t n = r.count.exchange(0, std::memory_order_acq_rel);
    const std::uint32_t generation = slots_[at].generation;
    for (std::uint32_t i = 0; i < n; ++i) release_ref_locked(at, generation);
    at = next;
  }
}

void PoolCore::ring_doorbell_unlocked() noexcept {
  ring_doorbell(doorbell());
  // relaxed: ordered after the ring's seq_cst fence, which pairs with the
  // fence in SenderCore::arm(); a stale 0 means the Sender armed after
  // that fence and its own re-check finds the buffer freed above.
  if (doorbell()->armed.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(mu_);
  wake_owner_locked();
}

void PoolCore::wake_owner_locked() noexcept {
  if (take_doorbell_arming(doorbell())) signal_ready(owner_signal_);
}

void PoolCore::add_inlet_locked(std::shared_ptr<ReturnInlet> inlet) {
  inlets_.reserve(inlets_.size() + 1);  // nothing can throw after the token is taken
  inlet->set_token(next_token_);
  if (++next_token_ == 0) next_token_ = 1;
  inlets_.push_back(std::move(inlet));
}

ReturnInlet* PoolCore::find_inlet_locked(std::uint32_t token) const noexcept {
  for (const auto& in : inlets_)
    if (in->token() == token) return in.get();
  return nullptr;
}

bool PoolCore::add_ref_locked(std::uint32_t index, std::uint32_t generation) noexcept {
  if (index >= slots_.size()) return false;
  Slot& s = slots_[index];
  if (s.state != State::kInFlight || s.generation != generation || s.refs == 0) return false;
  ++s.refs;
  return true;
}

void PoolCore::drain_inlets_locked(bool slow) noexcept {
  collect_local_returns_locked();
  if (inlets_.empty()) return;
  // Orphaned inlets (their Sender is gone) are watched for a hang-up on
  // slow drains and at least every few milliseconds on fast ones, so a
  // receiver dying after its Sender cannot pin buffers for long.
  bool check_peer = slow;
  if (!check_peer && orphans_ != 0) {
    const auto now = Clock::now();
    if (now - last_peer_check_ >= kPeerCheckEvery) {
      last_peer_check_ = now;
      check_peer = true;
    }
  }
  // Inlets are few (one per remote receiver); drop the finished ones.
  // relaxed: DrainHooks::set().
  const DrainHooks::Hook hook = DrainHooks::hook.load(std::memory_order_relaxed);
  bool deferring = false;
  for (std::size_t i = 0; i < inlets_.size(); ++i) {
    inlets_[i]->drain_locked(check_peer);
    if (hook != nullptr) hook(i);
    deferring = deferring || inlets_[i]->deferring_locked();
  }
  // The path: a return (or lend record) that did not match may be waiting
  // for a lend record in another inlet's ring. That record was published
  // before the stage published the descriptor downstream, and the
  // downstream's return after it read the descriptor (release/acquire all
  // along), so it is visible to any reading of that ring after the return
  // was read: not necessarily to the reading earlier in this pass, which
  // may have come before the stage wrote it. So every ring is read once
  // more before the deferred records are retried; what still does not
  // match waits for the next pass (docs/design.md, "The path").
  if (deferring)
    for (const auto& in : inlets_) in->drain_locked(false);
  for (const auto& in : inlets_) in->retry_deferred_locked();
  std::erase_if(inlets_, [&](const std::shared_ptr<ReturnInlet>& in) {
    if (!in->finished_locked()) return false;
    if (in->orphaned_locked()) --orphans_;
    return true;
  });
}

PoolStats PoolCore::stats() {
  std::lock_guard lock(mu_);
  drain_inlets_locked();
  PoolStats st;
  st.total = app_count_;
  for (std::size_t k = 0; k < free_.size(); ++k)
    (k < options_.classes.size() ? st.free : st.sealed_free) += static_cast<std::uint32_t>(free_[k].size());
  sealed_counters_locked(st);
  st.allocated = allocated_;
  st.in_flight = in_flight_;
  st.rejected_returns = rejected_returns_;
  return st;
}

}  // namespace detail

}  // namespace fbuf

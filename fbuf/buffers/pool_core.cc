#include "fbuf/buffers/pool_core.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <new>

#include "fbuf/base/assert.h"
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

// Buffers at least this large are reused as soon as they come back.
constexpr std::size_t kReuseReturnedFrom = std::size_t{4} << 20;

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

  slots_.reserve(count);
  free_.resize(options_.classes.size());
  for (std::size_t k = 0; k < options_.classes.size(); ++k) {
    const auto& c = options_.classes[k];
    free_[k].reserve(c.count);
    for (std::uint32_t i = 0; i < c.count; ++i) {
      if (total_size_ > std::numeric_limits<std::size_t>::max() / 2 - c.buffer_size)
        throw_error(Errc::kInvalidArgument, what + ": too large");
      slots_.push_back(Slot{total_size_, c.buffer_size, 0, 0, static_cast<std::uint16_t>(k), State::kFree});
      total_size_ += c.buffer_size;
    }
  }
  // LIFO free lists, lowest index on top: recently used buffers are reused
  // first while their pages are warm.
  for (std::uint32_t i = static_cast<std::uint32_t>(slots_.size()); i-- > 0;)
    free_[slots_[i].size_class].push_back(i);

  fd_ = make_sealed_memfd("fbuf:" + options_.name, total_size_, /*final=*/false);
  map_ = Mapping::map(fd_.get(), total_size_, PROT_READ | PROT_WRITE, what);
  protection_ = Protection(options_.policy, fd_.get(), map_.data(), total_size_, what);
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
  map_segv_ = SegvRegistration(register_mapping(map_.data(), total_size_, MappingKind::kSender, options_.policy,
                                                options_.name.c_str(), options_.classes));
  alias_segv_ = SegvRegistration(register_mapping(alias_.data(), total_size_, MappingKind::kAlias,
                                                  options_.policy, options_.name.c_str(), options_.classes));

  doorbell_fd_ = make_sealed_memfd("fbuf-doorbell:" + options_.name, page);
  doorbell_map_ = Mapping::map(doorbell_fd_.get(), page, PROT_READ | PROT_WRITE, what + " doorbell");
  auto* d = new (doorbell_map_.data()) DoorbellHeader{};
  d->magic = kDoorbellMagic;
  d->version = kDoorbellVersion;
}

PoolCore::~PoolCore() = default;

Result<Buffer> PoolCore::try_allocate_locked(std::size_t size) noexcept {
  if (size > options_.classes.back().buffer_size) return Errc::kTooLarge;
  std::size_t first = 0;
  while (options_.classes[first].buffer_size < size) ++first;
  // When to collect pending returns is a measured choice (docs/results.md,
  // "When returns are collected"). Always when the class has run dry. For
  // buffers of 4 MiB and more, also at every allocation: the free lists are
  // LIFO, so the buffer just returned is handed out next, and a deep pool
  // of 16 MiB buffers no longer cycles through hundreds of MiB (2.3x the
  // buffers/s at 16 buffers of 16 MiB when the payload is written and
  // read). That costs a cross-core read of each return ring's tail (~60 ns
  // per buffer), which only shows when the payload is not touched. For
  // smaller buffers, cycling through the pool was measured faster (2x at
  // 64 KiB, 1.2x at 1 MiB): the just-returned buffer's lines still sit in
  // the receiving core's cache.
  const std::size_t k = first;
  const bool empty = free_[k].empty();
  if (empty || options_.classes[k].buffer_size >= kReuseReturnedFrom) drain_inlets_locked(/*slow=*/empty);
  auto& list = free_[k];
  if (list.empty()) return Errc::kWouldBlock;
  std::uint32_t index = list.back();
  if (slots_[index].guarded) {
    // Cached fbufs: a returned buffer keeps its protection until it is
    // handed out again. Restoring one buffer inside a protected run splits
    // a mapping and can fail (ENOMEM at vm.max_map_count).
    if (int err = restore_locked(index); err != 0) {
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
  const auto deadline = deadline_after(timeout);
  for (;;) {
    Result<Buffer> r = try_allocate(size);
    if (r || r.error() != make_error_code(Errc::kWouldBlock)) return r;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    auto* d = doorbell();
    Result<Buffer> again = Errc::kWouldBlock;
    sleep_until(d->waiters, d->seq, left,
                     [&] {
                       again = try_allocate(size);
                       return again.ok() || again.error() != make_error_code(Errc::kWouldBlock);
                     });
    if (again || again.error() != make_error_code(Errc::kWouldBlock)) return again;
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
    --in_flight_;
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
  {
    std::lock_guard lock(mu_);
    release_ref_locked(index, generation);
  }
  ring_doorbell_unlocked();
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
  st.total = buffer_count();
  for (const auto& f : free_) st.free += static_cast<std::uint32_t>(f.size());
  st.allocated = allocated_;
  st.in_flight = in_flight_;
  st.rejected_returns = rejected_returns_;
  return st;
}

}  // namespace detail

}  // namespace fbuf

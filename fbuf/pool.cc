#include "fbuf/pool.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <new>

#include "fbuf/assert.h"
#include "fbuf/pool_core.h"

namespace fbuf {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

// The longest an owner sleeps before re-checking its sources, so a peer
// that fails to ring the doorbell costs latency, never a hang.
constexpr std::chrono::milliseconds kMaxSleep{50};

// Buffers at least this large are reused as soon as they come back.
constexpr std::size_t kReuseReturnedFrom = std::size_t{4} << 20;

}  // namespace

PoolCore::PoolCore(PoolOptions options) : options_(std::move(options)) {
  const std::string what = "pool '" + options_.name + "'";
  if (options_.classes.empty()) throw_error(Errc::kInvalidArgument, what + ": no size classes");
  if (options_.classes.size() > 64) throw_error(Errc::kInvalidArgument, what + ": more than 64 size classes");
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
  if (count > (1u << 24)) throw_error(Errc::kInvalidArgument, what + ": more than 2^24 buffers");
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
  if (options_.policy == Policy::kCopyOnWrite)
    master_ = Mapping::map(fd_.get(), total_size_, PROT_READ | PROT_WRITE, what + " master");
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
  map_segv_ = SegvRegistration(register_mapping(map_.data(), total_size_, MappingKind::kSender,
                                                options_.policy, options_.name.c_str(), options_.classes));
  alias_segv_ = SegvRegistration(register_mapping(alias_.data(), total_size_, MappingKind::kAlias,
                                                  options_.policy, options_.name.c_str(), options_.classes));

  doorbell_fd_ = make_sealed_memfd("fbuf-doorbell:" + options_.name, page);
  doorbell_map_ = Mapping::map(doorbell_fd_.get(), page, PROT_READ | PROT_WRITE, what + " doorbell");
  auto* d = new (doorbell_map_.data()) ipc::DoorbellHeader{};
  d->magic = ipc::kDoorbellMagic;
  d->version = ipc::kProtocolVersion;
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
  if (empty || options_.classes[k].buffer_size >= kReuseReturnedFrom) drain_sources_locked(/*slow=*/empty);
  if (!free_[k].empty()) {
    std::uint32_t index = free_[k].back();
    free_[k].pop_back();
    Slot& s = slots_[index];
    FBUF_ASSERT(s.state == State::kFree, "free list holds a buffer that is not free");
    if (s.guarded) {
      // Cached fbufs: a returned buffer keeps its protection until it is
      // handed out again.
      if (int err = remap(s.offset, s.capacity, false); err != 0) {
        free_[k].push_back(index);
        return std::error_code(err, std::system_category());
      }
      s.guarded = false;
    }
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
  return Errc::kWouldBlock;
}

Result<Buffer> PoolCore::try_allocate(std::size_t size) noexcept {
  std::lock_guard lock(mu_);
  return try_allocate_locked(size);
}

Result<Buffer> PoolCore::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    Result<Buffer> r = try_allocate(size);
    if (r || r.error() != make_error_code(Errc::kWouldBlock)) return r;
    auto now = Clock::now();
    if (now >= deadline) return Errc::kTimedOut;
    auto* d = doorbell();
    Result<Buffer> again = Errc::kWouldBlock;
    ipc::sleep_until(d->waiters, d->seq, std::min<std::chrono::nanoseconds>(deadline - now, kMaxSleep),
                     [&] {
                       again = try_allocate(size);
                       return again.ok() || again.error() != make_error_code(Errc::kWouldBlock);
                     });
    if (again || again.error() != make_error_code(Errc::kWouldBlock)) return again;
  }
}

int PoolCore::remap(std::size_t offset, std::size_t length, bool protect) noexcept {
  std::byte* at = map_.data() + offset;
  switch (options_.policy) {
    case Policy::kVolatile:
      return 0;
    case Policy::kReadOnly:
      return ::mprotect(at, length, protect ? PROT_READ : PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
    case Policy::kCopyOnWrite: {
      void* p;
      if (protect) {
        // The same memfd pages at the same address, mapped private: a
        // later write by the sender lands in a private copy.
        p = ::mmap(at, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd_.get(),
                   static_cast<off_t>(offset));
      } else {
        // Shared and writable again, dropping any private copies. The pool
        // is sealed against new writable mappings, so the shared pages are
        // duplicated from the master mapping made before the seal
        // (mremap with old_size 0 copies a shared mapping's pages).
        p = ::mremap(master_.data() + offset, 0, length, MREMAP_MAYMOVE | MREMAP_FIXED, at);
        if (p == MAP_FAILED) return errno;
        // The new mapping has no page-table entries yet: the sender's
        // next fill would take one page fault per page. Populating them
        // in one call is several times cheaper (docs/results.md). Best
        // effort: before Linux 5.14 it fails and faults happen lazily.
        ::madvise(at, length, MADV_POPULATE_WRITE);
        return 0;
      }
      return p == MAP_FAILED ? errno : 0;
    }
  }
  return EINVAL;
}

std::error_code PoolCore::guard_locked(std::span<const std::uint32_t> indices) noexcept {
  if (options_.policy == Policy::kVolatile || indices.empty()) return {};
  // Indices are in offset order within the pool; sort a small copy and
  // change each contiguous run of buffers with one call.
  std::uint32_t local[64];
  std::vector<std::uint32_t> heap;
  std::span<std::uint32_t> sorted;
  if (indices.size() <= 64) {
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
  std::size_t done = 0;  // runs [0, done) are changed
  int err = 0;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    const Slot& first = slots_[sorted[i]];
    const Slot& last = slots_[sorted[j - 1]];
    if ((err = remap(first.offset, last.offset + last.capacity - first.offset, true)) != 0) break;
    done = j;
    i = j;
  }
  if (err != 0) {
    for (std::size_t i = 0; i < done; ++i) remap(slots_[sorted[i]].offset, slots_[sorted[i]].capacity, false);
    return std::error_code(err, std::system_category());
  }
  for (std::uint32_t index : sorted) slots_[index].guarded = true;
  return {};
}

void PoolCore::free_locked(std::uint32_t index) noexcept {
  Slot& s = slots_[index];
  if (s.guarded && options_.eager_restore && remap(s.offset, s.capacity, false) == 0) s.guarded = false;
  s.state = State::kFree;
  s.refs = 0;
  free_[s.size_class].push_back(index);
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
  ipc::ring_doorbell(doorbell());
}

void PoolCore::release_ref(std::uint32_t index, std::uint32_t generation) noexcept {
  {
    std::lock_guard lock(mu_);
    release_ref_locked(index, generation);
  }
  ipc::ring_doorbell(doorbell());
}

void PoolCore::add_source_locked(std::shared_ptr<ReturnSource> source) {
  sources_.push_back(std::move(source));
}

void PoolCore::drain_sources_locked(bool slow) noexcept {
  // Sources are few (one per remote receiver); drop the finished ones.
  std::erase_if(sources_, [slow](const std::shared_ptr<ReturnSource>& s) { return !s->drain_locked(slow); });
}

PoolStats PoolCore::stats() {
  std::lock_guard lock(mu_);
  drain_sources_locked();
  PoolStats st;
  st.total = buffer_count();
  for (const auto& f : free_) st.free += static_cast<std::uint32_t>(f.size());
  st.allocated = allocated_;
  st.in_flight = in_flight_;
  st.rejected_returns = rejected_returns_;
  return st;
}

}  // namespace detail

Pool::Pool(PoolOptions options) : core_(std::make_shared<detail::PoolCore>(std::move(options))) {}
Pool::~Pool() = default;
Pool::Pool(const Pool&) noexcept = default;
Pool& Pool::operator=(const Pool&) noexcept = default;
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&&) noexcept = default;

Result<Buffer> Pool::try_allocate(std::size_t size) noexcept { return core_->try_allocate(size); }
Result<Buffer> Pool::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  return core_->allocate(size, timeout);
}
PoolStats Pool::stats() const { return core_->stats(); }
const PoolOptions& Pool::options() const noexcept { return core_->options(); }
std::size_t Pool::max_buffer_size() const noexcept { return core_->options().classes.back().buffer_size; }

}  // namespace fbuf

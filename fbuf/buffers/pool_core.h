// The owner-private state of a pool: geometry, the shared memfd and its
// mappings, and the bookkeeping (free lists, generations, reference counts)
// that no peer can reach. Private to the library.
//
// Invariants (every slot field and list is guarded by mutex()):
//  - A slot is kFree exactly when its index is on its class's free list,
//    once; kAllocated while one Buffer handle holds it; kInFlight while
//    `refs` > 0 receivers hold it (refs is 0 in every other state).
//  - `generation` changes at every allocation and is never 0, so a return
//    that names an older generation (or a zeroed slot) never matches.
//  - `guarded` is true whenever any page of the sender's mapping of the
//    buffer may be protected or private: after a successful protect, and
//    after a protect or restore that failed part-way (the range may have
//    changed in part). It is false only after a restore of the whole
//    buffer succeeded. A buffer is handed out by try_allocate only after
//    it is unguarded; one whose restore fails is passed over.
//  - Sealed slots (sealed.cc) follow the application's slots, in classes of
//    their own appended to the geometry; they are never on an application
//    class's free list, never guarded, and map_ does not map them. One is
//    kAllocated only inside a send's critical section, with `origin` the
//    application slot it copies; `origin` is kNoSlot otherwise.
//  - Returns from other processes reach the pool only through its inlets
//    (returns.h), each validated against that receiver's LentSet first, so
//    `refs` drops at most once per receiver per lend.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fbuf/base/deadline.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/spin.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/protection.h"
#include "fbuf/buffers/returns.h"
#include "fbuf/buffers/segv_report.h"
#include "fbuf/buffers/view_owner.h"
#include "fbuf/pool.h"

namespace fbuf::detail {

// The library's way from a public Pool to its core.
struct PoolAccess {
  static const std::shared_ptr<PoolCore>& core(const Pool& p) noexcept { return p.core_; }
};

// Also the ViewOwner of views received in the owner's own process.
class PoolCore final : public ViewOwner, public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolOptions options);
  ~PoolCore() override;
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  Result<Buffer> try_allocate(std::size_t size) noexcept;
  Result<Buffer> allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept;
  PoolStats stats();

  // Geometry (immutable after construction).
  const PoolOptions& options() const noexcept { return options_; }
  // Every slot, sealed ones included: what receivers validate indices
  // against. Read by in-process receivers from their own thread: from
  // extents_, never from the slots, whose lines the owner writes at every
  // buffer.
  std::uint32_t buffer_count() const noexcept { return static_cast<std::uint32_t>(extents_.size()); }
  // The classes in buffer-index order as receivers map them: the
  // application's, then the sealed slots' (sealed.cc).
  const std::vector<SizeClass>& geometry() const noexcept { return geometry_; }
  // The largest buffer size with sealed slots, 0 if none.
  std::size_t sealed_copy_size() const noexcept { return sealed_copy_size_; }
  std::size_t total_size() const noexcept { return total_size_; }
  std::size_t buffer_offset(std::uint32_t index) const noexcept { return extents_[index].offset; }
  std::size_t buffer_capacity(std::uint32_t index) const noexcept { return extents_[index].capacity; }
  // The read-only alias in-process receivers read through, so the policy
  // applied to the sender's mapping never affects them.
  const std::byte* reader_base() const noexcept { return alias_.data(); }
  // The owner's writable mapping, for the I/O stage (io/), which hands it
  // to the kernel to fill buffers the owner has allocated.
  std::byte* writer_base() const noexcept { return map_.data(); }
  // Its length: the application's buffers, not the sealed slots after them.
  std::size_t writer_size() const noexcept { return app_size_; }
  int read_only_fd() const noexcept { return ro_fd_.get(); }
  int doorbell_fd() const noexcept { return doorbell_fd_.get(); }
  DoorbellHeader* doorbell() const noexcept { return reinterpret_cast<DoorbellHeader*>(doorbell_map_.data()); }

  // What a Sender needs from a Buffer it is handed.
  struct BufferRef {
    PoolCore* pool;
    std::uint32_t index;
    std::uint32_t generation;
    std::size_t capacity;
  };
  static BufferRef inspect(const Buffer& b) noexcept {
    return {b.pool_.get(), b.index_, b.generation_, b.capacity_};
  }

  SpinThenSleepMutex& mutex() const noexcept { return mu_; }

  // --- Called with mutex() held. ---
  // Ends the sender's write access to these allocated buffers as the
  // policy says (nothing for volatile), changing contiguous runs with one
  // call each. All or nothing: on failure every run changed is restored,
  // so the buffers are writable again, except (rarely) one whose restore
  // also fails: that one stays guarded, and read-only or private, until
  // it is sent or freed and allocated again.
  std::error_code guard_locked(std::span<const std::uint32_t> indices) noexcept;
  // Sealed copies (sealed.cc): if `b`'s class has sealed slots and one is
  // free, copies bytes [offset, offset + length) of `b` into it and makes
  // `b` name that slot (its own stays allocated until mark_sent_locked
  // frees it). False, changing nothing, otherwise: `b` is protected.
  bool seal_locked(Buffer& b, std::uint32_t offset, std::uint32_t length) noexcept;
  // Undoes seal_locked for a send that failed: `b` names its own slot
  // again. Does nothing to a Buffer that names its own slot.
  void unseal_locked(Buffer& b) noexcept;
  // `b` goes out to `receivers` receivers; the Buffer handle is emptied
  // without returning the buffer (a sealed copy's own slot is freed).
  void mark_sent_locked(Buffer& b, std::uint32_t receivers) noexcept;
  // One holder is done with (index, generation). Returns false, and counts
  // a rejected return, if that buffer is not in flight at that generation.
  bool release_ref_locked(std::uint32_t index, std::uint32_t generation) noexcept;
  // One more holder of (index, generation), lent on by a receiver that
  // holds it (a lend record, returns.h). False if that buffer is not in
  // flight at that generation.
  bool add_ref_locked(std::uint32_t index, std::uint32_t generation) noexcept;
  // The seam for returns from other processes (returns.h). Gives the inlet
  // its token.
  void add_inlet_locked(std::shared_ptr<ReturnInlet> inlet);
  // The inlet with this token, or nullptr (finished inlets are dropped at
  // the next drain).
  ReturnInlet* find_inlet_locked(std::uint32_t token) const noexcept;
  // True if try_allocate(size) would not say kWouldBlock now (it may still
  // fail otherwise: kTooLarge, a failed restore). Collects returns first
  // if the class is empty.
  bool can_allocate_locked(std::size_t size) noexcept;
  void drain_inlets_locked(bool slow = true) noexcept;
  // Wakes allocate(timeout) waiters after buffers came back by a path that
  // rang no doorbell (a reclaim, a detach), and a Sender that armed its
  // readiness fd for a buffer.
  void ring_doorbell_locked() noexcept {
    ring_doorbell(doorbell());
    wake_owner_locked();
  }
  // After ringing: signals the armed Sender's readiness fd, if the doorbell
  // is armed and this call takes the arming.
  void wake_owner_locked() noexcept;
  // The fd a Sender of this pool waits on in epoll (the owner's end of its
  // own readiness pair), signalled when a buffer is freed in this process
  // while the doorbell is armed. One Sender's at a time: a pool with two
  // Senders signals the one that set it last. -1: none.
  void set_owner_signal_locked(int fd) noexcept { owner_signal_ = fd; }
  // Forgets `fd` if it is the one set (its Sender is going).
  void clear_owner_signal_locked(int fd) noexcept {
    if (owner_signal_ == fd) owner_signal_ = -1;
  }
  // An inlet became an orphan (+1); fast drains look for hang-ups only
  // while there are orphans.
  void note_orphan_locked(int delta) noexcept { orphans_ = static_cast<std::uint32_t>(static_cast<int>(orphans_) + delta); }

  // Free buffers of class `k` (in options().classes order), for the
  // monitoring request: no drain, returns not collected yet are not free.
  std::uint32_t free_in_class_locked(std::size_t k) const noexcept {
    return static_cast<std::uint32_t>(free_[k].size());
  }
  // Sealed copies for the monitoring request, likewise without a drain
  // (copies returned and not collected yet are still in flight): whether
  // class `k` has sealed slots (immutable), and how many of them are free.
  bool class_sealed(std::size_t k) const noexcept { return sealed_class_[k] != kNoClass; }
  std::uint32_t sealed_free_in_class_locked(std::size_t k) const noexcept {
    return class_sealed(k) ? static_cast<std::uint32_t>(free_[sealed_class_[k]].size()) : 0;
  }
  // sealed_total, sealed_in_flight, sealed_copies, sealed_fallbacks of
  // `st` (sealed_free is the sum of the above).
  void sealed_counters_locked(PoolStats& st) const noexcept {
    st.sealed_total = buffer_count() - app_count_;
    st.sealed_in_flight = sealed_in_flight_;
    st.sealed_copies = sealed_copies_;
    st.sealed_fallbacks = sealed_fallbacks_;
  }

  // Takes the mutex: a Buffer dropped unsent.
  void release_unsent(std::uint32_t index, std::uint32_t generation) noexcept;
  // An in-process View done. Without eager_restore it does not take the
  // mutex: the release is counted on the slot and the slot pushed on a
  // lock-free list the pool collects at its next allocation (or drain);
  // with eager_restore it takes the mutex and restores at once.
  void release_ref(std::uint32_t index, std::uint32_t generation) noexcept;
  // Rings the doorbell after buffers were freed with the mutex released,
  // and signals an armed Sender (takes the mutex only then).
  void ring_doorbell_unlocked() noexcept;
  void release(std::uint32_t /*pool*/, std::uint32_t index, std::uint32_t generation) noexcept override {
    release_ref(index, generation);
  }

 private:
  enum class State : std::uint8_t { kFree, kAllocated, kInFlight };
  struct Slot {
    std::size_t offset;
    std::size_t capacity;
    std::uint32_t generation = 0;
    std::uint32_t refs = 0;
    std::uint16_t size_class = 0;
    State state = State::kFree;
    bool guarded = false;  // the sender's pages are protected or private
    std::uint32_t origin = 0xffffffffu;  // sealed slots: the slot copied, during a send
  };

  // Sealed copies (sealed.cc): picks the classes and lays out their slots
  // after the application's, before the memfd is made.
  void plan_sealed_slots();
  // Maps the sealed region writable for the library (sealed_map_); before
  // the pool is sealed against new writable mappings.
  void map_sealed_region(const std::string& what);
  bool is_sealed(std::uint32_t index) const noexcept { return index >= app_count_; }
  // mark_sent_locked for a Buffer seal_locked made name a sealed slot.
  void mark_sealed_sent_locked(Buffer& b, std::uint32_t receivers) noexcept;

  // Protected policies: refuses (throws Error) a pool whose buffers could
  // split its mapping past vm.max_map_count, and reserves their count.
  void reserve_mappings(std::uint64_t count, const std::string& what);
  Result<Buffer> try_allocate_locked(std::size_t size) noexcept;
  void free_locked(std::uint32_t index) noexcept;
  // Gives the sender its write access to a free, guarded buffer back.
  // Returns 0 or an errno, with the slot still guarded on failure.
  int restore_locked(std::uint32_t index) noexcept;
  // Applies the in-process releases pushed by release_ref since the last
  // call (collect_local_returns_locked is cheap when there are none).
  void collect_local_returns_locked() noexcept;
  // Restores the guarded buffers on top of `list` (a class's free list),
  // up to kStackBatch of them, with one call per contiguous run. Best
  // effort: a buffer whose run could not be restored stays guarded.
  void restore_top_locked(const std::vector<std::uint32_t>& list) noexcept;
  // The top of `list` (a class's free list) is guarded and could not be
  // restored: moves it to the bottom and puts a buffer ready to hand out
  // on top. False, with no buffer ready, if none could be made ready.
  bool take_another_locked(std::vector<std::uint32_t>& list) noexcept;

  // Mappings reserved by reserve_mappings, given back when the pool goes
  // (or when its constructor throws later).
  struct MapReservation {
    MapReservation() = default;
    MapReservation(const MapReservation&) = delete;
    MapReservation& operator=(const MapReservation&) = delete;
    ~MapReservation();
    std::uint64_t count = 0;
  };

  PoolOptions options_;  // classes sorted by size, sizes rounded to pages
  MapReservation map_reservation_;
  std::size_t total_size_ = 0;
  UniqueFd fd_;
  UniqueFd ro_fd_;
  Mapping map_;
  Protection protection_;
  Mapping alias_;
  SegvRegistration map_segv_;
  SegvRegistration alias_segv_;
  UniqueFd doorbell_fd_;
  Mapping doorbell_map_;
  // Each buffer's place in the pool, as in its slot (immutable).
  struct Extent {
    std::size_t offset;
    std::size_t capacity;
  };
  std::vector<Extent> extents_;
  // Sealed copies. geometry_, app_*, sealed_class_ are immutable after
  // construction; sealed_class_[k] is the class of application class k's
  // sealed slots, or kNoClass.
  static constexpr std::uint16_t kNoClass = 0xffffu;
  std::vector<SizeClass> geometry_;
  std::vector<std::uint16_t> sealed_class_;
  std::uint32_t app_count_ = 0;                       // the application's slots: [0, app_count_)
  std::size_t app_size_ = 0;                          // their bytes: [0, app_size_) of the memfd
  std::size_t sealed_copy_size_ = 0;
  Mapping sealed_map_;                                // [app_size_, total_size_) writable, the library's only

  // In-process returns without the mutex: per slot, the releases not yet
  // applied and the link of the list of slots that have some. A slot is
  // pushed by the release that raises its count from 0, so it is on the
  // list at most once; the pool takes the whole list with one exchange
  // (under mu_) and applies each slot's count.
  static constexpr std::uint32_t kNoSlot = 0xffffffffu;
  struct LocalReturn {
    std::atomic<std::uint32_t> count{0};
    std::atomic<std::uint32_t> next{kNoSlot};
  };
  std::unique_ptr<LocalReturn[]> local_returns_;  // one per slot (immutable pointer)

  // Everything above is immutable once the pool is built and is read by
  // receiving threads without the lock; the mutex and what it guards
  // start on a cache line of their own, so that those reads never take
  // the line the owner's lock and bookkeeping live in (false sharing made
  // every in-process buffer cost a cache-line transfer at the lock).
  alignas(kCacheLine) mutable SpinThenSleepMutex mu_;
  std::vector<Slot> slots_;                           // guarded by mu_ (geometry is immutable)
  std::vector<std::vector<std::uint32_t>> free_;      // per class, LIFO; guarded by mu_
  std::vector<std::uint8_t> reuse_returned_;          // per class: collect at every allocation (immutable)
  std::vector<std::shared_ptr<ReturnInlet>> inlets_;  // guarded by mu_
  Clock::time_point last_peer_check_{};               // guarded by mu_
  std::uint32_t orphans_ = 0;                         // guarded by mu_: inlets whose Sender is gone
  std::uint32_t allocated_ = 0;                       // guarded by mu_
  std::uint32_t in_flight_ = 0;                       // guarded by mu_
  std::uint64_t rejected_returns_ = 0;                // guarded by mu_
  int owner_signal_ = -1;                             // guarded by mu_
  std::uint32_t next_token_ = 1;                      // guarded by mu_
  std::uint32_t sealed_in_flight_ = 0;                // guarded by mu_
  std::uint64_t sealed_copies_ = 0;                   // guarded by mu_
  std::uint64_t sealed_fallbacks_ = 0;                // guarded by mu_

  // The head of the in-process return list, written by receiving threads:
  // on a line of its own, away from the lock's.
  alignas(kCacheLine) std::atomic<std::uint32_t> local_head_{kNoSlot};
};

}  // namespace fbuf::detail

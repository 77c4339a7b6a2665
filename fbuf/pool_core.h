// The owner-private state of a pool: geometry, the shared memfd and its
// mappings, and the bookkeeping (free lists, generations, reference counts)
// that no peer can reach. Private to the library.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "fbuf/buffers/segv_report.h"
#include "fbuf/pool.h"
#include "fbuf/sys.h"
#include "ipc/layout.h"

namespace fbuf::detail {

// A holder of lent buffers that hands them back in batches: a receiver
// connection's return ring.
class ReturnSource {
 public:
  virtual ~ReturnSource() = default;
  // Applies every pending return. Called with the pool's mutex held, on
  // every allocation, so it must be cheap when nothing is pending. With
  // `slow`, it may also make a syscall (to notice a dead peer). Returns
  // false once the source is finished and can be dropped.
  virtual bool drain_locked(bool slow) noexcept = 0;
};

// Also the ViewOwner of views received in the owner's own process.
// The pool's lock: held for tens of nanoseconds at a time, by the sending
// thread and by threads dropping in-process views. It spins briefly before
// it sleeps: a std::mutex that sleeps at once made thread handoff pay 2.6
// futex calls per buffer under contention (docs/results.md).
class PoolMutex {
 public:
  void lock() noexcept {
    for (int i = 0; i < 128; ++i) {
      if (mu_.try_lock()) return;
      __builtin_ia32_pause();
    }
    mu_.lock();
  }
  bool try_lock() noexcept { return mu_.try_lock(); }
  void unlock() noexcept { mu_.unlock(); }

 private:
  std::mutex mu_;
};

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
  std::uint32_t buffer_count() const noexcept { return static_cast<std::uint32_t>(slots_.size()); }
  std::size_t total_size() const noexcept { return total_size_; }
  std::size_t buffer_offset(std::uint32_t index) const noexcept { return slots_[index].offset; }
  std::size_t buffer_capacity(std::uint32_t index) const noexcept { return slots_[index].capacity; }
  std::byte* base() const noexcept { return map_.data(); }
  // The read-only alias in-process receivers read through, so the policy
  // applied to the sender's mapping never affects them.
  const std::byte* reader_base() const noexcept { return alias_.data(); }
  int read_only_fd() const noexcept { return ro_fd_.get(); }
  int doorbell_fd() const noexcept { return doorbell_fd_.get(); }
  ipc::DoorbellHeader* doorbell() const noexcept {
    return reinterpret_cast<ipc::DoorbellHeader*>(doorbell_map_.data());
  }

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

  PoolMutex& mutex() const noexcept { return mu_; }

  // --- Called with mutex() held. ---
  // Ends the sender's write access to these allocated buffers as the
  // policy says (nothing for volatile), changing contiguous runs with one
  // call each. All or nothing: on failure no buffer is changed.
  std::error_code guard_locked(std::span<const std::uint32_t> indices) noexcept;
  // `b` goes out to `receivers` receivers; the Buffer handle is emptied
  // without returning the buffer.
  void mark_sent_locked(Buffer& b, std::uint32_t receivers) noexcept;
  // One holder is done with (index, generation). Returns false, and counts
  // a rejected return, if that buffer is not in flight at that generation.
  bool release_ref_locked(std::uint32_t index, std::uint32_t generation) noexcept;
  void add_source_locked(std::shared_ptr<ReturnSource> source);
  void drain_sources_locked(bool slow = true) noexcept;

  // Takes the mutex: a Buffer dropped unsent, or an in-process View done.
  void release_unsent(std::uint32_t index, std::uint32_t generation) noexcept;
  void release_ref(std::uint32_t index, std::uint32_t generation) noexcept;
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
  };

  Result<Buffer> try_allocate_locked(std::size_t size) noexcept;
  void free_locked(std::uint32_t index) noexcept;
  // Changes the sender's mapping of [offset, offset + length): protect
  // (read-only or private) or restore (shared, writable). Returns errno.
  int remap(std::size_t offset, std::size_t length, bool protect) noexcept;

  PoolOptions options_;  // classes sorted by size, sizes rounded to pages
  std::size_t total_size_ = 0;
  UniqueFd fd_;
  UniqueFd ro_fd_;
  Mapping map_;
  Mapping master_;  // copy_on_write only: shared pages to restore from
  Mapping alias_;
  SegvRegistration map_segv_;
  SegvRegistration alias_segv_;
  UniqueFd doorbell_fd_;
  Mapping doorbell_map_;

  mutable PoolMutex mu_;
  std::vector<Slot> slots_;                           // guarded by mu_ (geometry is immutable)
  std::vector<std::vector<std::uint32_t>> free_;      // per class, LIFO; guarded by mu_
  std::vector<std::shared_ptr<ReturnSource>> sources_;  // guarded by mu_
  std::uint32_t allocated_ = 0;                       // guarded by mu_
  std::uint32_t in_flight_ = 0;                       // guarded by mu_
  std::uint64_t rejected_returns_ = 0;                // guarded by mu_
};

}  // namespace fbuf::detail

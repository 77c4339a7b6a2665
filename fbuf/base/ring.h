// A single-producer / single-consumer ring of fixed-size descriptors, laid
// out in memory that may be shared with another process.
//
// Invariants:
//  - `tail` is written only by the producer, `head` only by the consumer;
//    each side keeps its own index privately (the shared copy is a
//    publication, never read back) and caches the other side's index.
//  - 0 <= tail - head <= capacity. The other side's index is read from
//    memory a peer can scribble on, so every read of it is checked against
//    this bound; a violation reports kCorrupt and is never trusted.
//  - A slot is written before the tail that covers it is published (release)
//    and read after the tail is observed (acquire); the consumer frees a slot
//    by publishing head (release) after copying it out.
//  - Wake-ups follow fbuf/base/wake.h: the consumer sleeps on
//    data_seq/consumer_waiters, the producer on space_seq/producer_waiters;
//    publish() and release() are the waking side.
//  - consumer_armed is the readiness-fd half of the same protocol (a
//    consumer that waits in poll/epoll instead of on the futex): only the
//    consumer sets it to 1 (arming, then a seq_cst fence and a re-check of
//    the ring); publish() takes it back to 0 with an exchange after its
//    fence, and only the publish() whose exchange saw 1 tells its caller
//    to signal the fd. So the fd is signalled at most once per arming and
//    never while the consumer keeps up (docs/design.md, "Readiness fds").
//    producer_armed is the same for a producer waiting for space: set only
//    by the producer, taken back by the exchange in release().
//
// The ring sits in the bottom layer, below the pools, because an owner's
// pool reads its receivers' return rings when it needs buffers
// (fbuf/buffers/returns.h); the channels that lay rings out are ipc/.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fbuf/base/limits.h"
#include "fbuf/base/wake.h"

namespace fbuf::detail {

// What travels: which buffer, which generation of it, which bytes.
struct Descriptor {
  std::uint32_t pool;        // index of the pool among the sender's pools
  std::uint32_t index;       // buffer index within the pool
  std::uint32_t generation;  // bumped each time the buffer is allocated
  std::uint32_t offset;      // first valid byte within the buffer
  std::uint32_t length;      // valid bytes
  std::uint32_t flags;
  std::uint64_t sequence;    // per-sender publication number
};
static_assert(sizeof(Descriptor) == 32);
// Slots are copied with memcpy, so a descriptor must be trivially copyable:
// the ring never constructs or destroys what it carries.
static_assert(std::is_trivially_copyable_v<Descriptor>);

// The shared control words of one ring. Placement-constructed by the owner.
struct RingIndices {
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};   // producer writes
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};   // consumer writes
  alignas(kCacheLine) std::atomic<std::uint32_t> data_seq{0};  // futex: "tail moved"
  std::atomic<std::uint32_t> consumer_waiters{0};
  std::atomic<std::uint32_t> consumer_armed{0};  // 1: the consumer waits on its readiness fd
  alignas(kCacheLine) std::atomic<std::uint32_t> space_seq{0};  // futex: "head moved"
  std::atomic<std::uint32_t> producer_waiters{0};
  std::atomic<std::uint32_t> producer_armed{0};  // 1: the producer waits on its readiness fd
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(RingIndices) == 4 * kCacheLine);

enum class RingStatus { kOk, kEmpty, kFull, kCorrupt };

class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(RingIndices* indices, Descriptor* slots, std::uint32_t capacity) noexcept
      : idx_(indices), slots_(slots), mask_(capacity - 1), capacity_(capacity) {}

  // Free slots, refreshing the cached head only when the cache says full.
  // kCorrupt if the peer published a head outside [tail - capacity, tail].
  RingStatus reserve(std::uint32_t n = 1) noexcept {
    if (tail_ - head_cache_ + n <= capacity_) return RingStatus::kOk;
    // acquire: observes the consumer's copy-out of the slots it freed; pairs
    // with the release store of head in RingConsumer::release().
    std::uint64_t head = idx_->head.load(std::memory_order_acquire);
    if (head > tail_ || tail_ - head > capacity_) return RingStatus::kCorrupt;
    head_cache_ = head;
    return tail_ - head_cache_ + n <= capacity_ ? RingStatus::kOk : RingStatus::kFull;
  }

  // Writes a descriptor; call reserve() first. Not visible until publish().
  void write(const Descriptor& d) noexcept {
    std::memcpy(&slots_[pending_ & mask_], &d, sizeof d);
    ++pending_;
  }

  // Publishes everything written since the last publish and wakes a
  // sleeping consumer. Returns true if the consumer had armed its
  // readiness fd: the caller signals that fd (once; the arming is used up).
  bool publish() noexcept {
    tail_ = pending_;
    // release: publishes the slots written above; pairs with the acquire
    // load of tail in RingConsumer::take().
    idx_->tail.store(tail_, std::memory_order_release);
    fence_and_wake(idx_->consumer_waiters, idx_->data_seq);
    // relaxed, both: ordered after the tail store by the seq_cst fence in
    // fence_and_wake(), which pairs with the consumer's fence after it
    // armed (ReceiverCore::arm()); the plain load keeps the common case
    // (not armed) free of a locked instruction, and the exchange makes
    // sure one arming is signalled once.
    return idx_->consumer_armed.load(std::memory_order_relaxed) != 0 &&
           idx_->consumer_armed.exchange(0, std::memory_order_relaxed) != 0;
  }

  // For rings whose consumer never arms a readiness fd (the return ring,
  // read by the owner's pool).
  bool push(const Descriptor& d) noexcept {
    if (reserve() != RingStatus::kOk) return false;
    write(d);
    (void)publish();
    return true;
  }

  // The published tail: this side's private, trusted copy.
  std::uint64_t tail() const noexcept { return tail_; }
  // The position the next write() fills.
  std::uint64_t pending() const noexcept { return pending_; }
  std::uint32_t capacity() const noexcept { return capacity_; }
  RingIndices* indices() const noexcept { return idx_; }

 private:
  RingIndices* idx_ = nullptr;
  Descriptor* slots_ = nullptr;
  std::uint32_t mask_ = 0;
  std::uint32_t capacity_ = 0;
  std::uint64_t tail_ = 0;       // the true tail: this side's private copy
  std::uint64_t pending_ = 0;    // tail including written, unpublished slots
  std::uint64_t head_cache_ = 0;
};

class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(RingIndices* indices, const Descriptor* slots, std::uint32_t capacity) noexcept
      : idx_(indices), slots_(slots), mask_(capacity - 1), capacity_(capacity) {}

  // Copies the next descriptor out without handing its slot back yet; a
  // batch of take()s is finished by one release(). The copy, not the slot,
  // is what the caller validates: a peer may rewrite the slot at any time.
  RingStatus take(Descriptor& out) noexcept {
    if (head_ == tail_cache_) {
      // acquire: observes the slots the producer wrote; pairs with the
      // release store of tail in RingProducer::publish().
      std::uint64_t tail = idx_->tail.load(std::memory_order_acquire);
      if (tail < head_ || tail - head_ > capacity_) return RingStatus::kCorrupt;
      tail_cache_ = tail;
      if (head_ == tail_cache_) return RingStatus::kEmpty;
    }
    std::memcpy(&out, &slots_[head_ & mask_], sizeof out);
    ++head_;
    return RingStatus::kOk;
  }

  // Hands back every slot taken since the last release() and wakes a
  // producer waiting for space: one fence per batch, not per descriptor.
  // Returns true if the producer had armed its readiness fd: the caller
  // signals it (once; the arming is used up).
  bool release() noexcept {
    if (released_ == head_) return false;
    released_ = head_;
    // release: hands the slots back only after the copies above; pairs
    // with the acquire load of head in RingProducer::reserve().
    idx_->head.store(head_, std::memory_order_release);
    fence_and_wake(idx_->producer_waiters, idx_->space_seq);
    // relaxed, both: as in RingProducer::publish(), ordered by the fence
    // in fence_and_wake(), which pairs with the producer's fence after it
    // armed (SenderCore::arm()).
    return idx_->producer_armed.load(std::memory_order_relaxed) != 0 &&
           idx_->producer_armed.exchange(0, std::memory_order_relaxed) != 0;
  }

  // For callers that signal nobody (a receiver handing back what it never
  // took as it closes: the owner learns of that by the detach).
  RingStatus pop(Descriptor& out) noexcept {
    RingStatus st = take(out);
    if (st == RingStatus::kOk) (void)release();
    return st;
  }

  // True if take() would not report kEmpty: something to take, or a
  // corrupt tail that take() will report. Does not move the cached tail.
  bool readable() noexcept {
    if (head_ != tail_cache_) return true;
    // acquire: as in take().
    std::uint64_t tail = idx_->tail.load(std::memory_order_acquire);
    return tail != head_;
  }

  // Descriptors published and not taken yet, for statistics only; 0 if
  // the peer's tail is impossible (take() will report that). Does not move
  // the cached tail.
  std::uint32_t waiting() const noexcept {
    // relaxed: a count for display; nothing is read through it.
    const std::uint64_t tail = idx_->tail.load(std::memory_order_relaxed);
    if (tail < head_ || tail - head_ > capacity_) return 0;
    return static_cast<std::uint32_t>(tail - head_);
  }

  std::uint32_t capacity() const noexcept { return capacity_; }
  RingIndices* indices() const noexcept { return idx_; }

 private:
  RingIndices* idx_ = nullptr;
  const Descriptor* slots_ = nullptr;
  std::uint32_t mask_ = 0;
  std::uint32_t capacity_ = 0;
  std::uint64_t head_ = 0;       // the true head: this side's private copy
  std::uint64_t released_ = 0;   // head as last published
  std::uint64_t tail_cache_ = 0;
};

}  // namespace fbuf::detail

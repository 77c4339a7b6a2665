// libFuzzer target for the SPSC ring (ipc/ring.h) with a hostile peer. One
// RingProducer and one RingConsumer share a RingIndices and a slot array,
// as the two ends of a channel do; the input interleaves their operations
// with a peer's writes to the shared words (head, tail, waiters) and slots,
// which is everything a process mapping the ring can do to it.
//
// Input: one byte for the capacity (1 << (byte % 9): 1..256), then records
// of an op byte and its arguments until the input ends (RingOp in
// fuzz_input.h).
//
// Checked, besides AddressSanitizer's watch over the exactly-sized slot
// array:
//  - every reserve(), pop() and readable() gives what ring.h documents for
//    the shared word it read (ProducerModel, ConsumerModel): in particular a
//    forged index outside one ring of this side's own is kCorrupt, never
//    trusted;
//  - without forged indices, the ring is exact: reserve() and pop() report
//    kOk / kFull / kEmpty as a counting model says, descriptors come out in
//    order and unchanged (unless the peer scribbled on a slot), and
//    kCorrupt never appears;
//  - whatever the peer does, the consumer never pops past the largest tail
//    ever stored, nor past what was pushed unless the tail was forged, and
//    the producer never gets more than `capacity` ahead of the largest head
//    ever stored; each call returns (no operation loops).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "fbuf/base/ring.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fbuf::detail::Descriptor;
using fbuf::detail::RingIndices;
using fbuf::detail::RingStatus;
using namespace fbuf::fuzz;  // the op codes

// The descriptor pushed as the n-th of the run: every field derived from n,
// so a pop can tell exactly which one it got.
Descriptor make_descriptor(std::uint64_t n) {
  auto low = static_cast<std::uint32_t>(n);
  return Descriptor{low * 3u, low ^ 0x5a5a5a5au, low + 1u, low % 4096u, low * 7u, low ^ 0xffu, n};
}

// What ring.h documents each side does with the other's index: it reads
// the shared copy only when its cached copy says full (producer) or empty
// (consumer), and accepts it only if 0 <= tail - head <= capacity; anything
// else is kCorrupt and leaves the cache alone. Given this side's own index
// and the shared word, each returns the status the documentation promises
// and moves the model's cache as the real one must move.
struct ProducerModel {
  std::uint64_t head_cache = 0;

  RingStatus reserve(std::uint64_t tail, std::uint32_t n, std::uint32_t capacity, std::uint64_t shared_head) {
    if (tail - head_cache + n <= capacity) return RingStatus::kOk;
    if (shared_head > tail || tail - shared_head > capacity) return RingStatus::kCorrupt;
    head_cache = shared_head;
    return tail - head_cache + n <= capacity ? RingStatus::kOk : RingStatus::kFull;
  }
};

struct ConsumerModel {
  std::uint64_t tail_cache = 0;

  RingStatus pop(std::uint64_t head, std::uint32_t capacity, std::uint64_t shared_tail) {
    if (head != tail_cache) return RingStatus::kOk;
    if (shared_tail < head || shared_tail - head > capacity) return RingStatus::kCorrupt;
    tail_cache = shared_tail;
    return head == tail_cache ? RingStatus::kEmpty : RingStatus::kOk;
  }
  bool readable(std::uint64_t head, std::uint64_t shared_tail) const { return head != tail_cache || shared_tail != head; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fbuf::fuzz::Input in(data, size);
  const std::uint32_t capacity = 1u << (in.take<std::uint8_t>() % 9);

  auto indices = std::make_unique<RingIndices>();
  auto slots = std::make_unique<Descriptor[]>(capacity);
  fbuf::detail::RingProducer producer(indices.get(), slots.get(), capacity);
  fbuf::detail::RingConsumer consumer(indices.get(), slots.get(), capacity);

  std::uint64_t pushed = 0;    // the producer's tail: descriptors published
  std::uint64_t popped = 0;    // the consumer's head: pops that returned kOk
  std::uint64_t max_tail = 0;  // the largest value ever stored into tail
  std::uint64_t max_head = 0;  // the largest value ever stored into head
  bool forged_head = false, forged_tail = false, scribbled = false;
  ProducerModel producer_model;
  ConsumerModel consumer_model;

  while (!in.empty()) {
    const bool forged = forged_head || forged_tail;
    const auto op = static_cast<RingOp>(in.take<std::uint8_t>() % kRingOpCount);
    switch (op) {
      case kPush:
      case kPushOne: {
        std::uint32_t n = op == kPushOne ? 1 : 1 + in.take<std::uint8_t>() % (capacity + 1);
        RingStatus want = producer_model.reserve(pushed, n, capacity, indices->head.load());
        RingStatus s = want;
        if (op == kPushOne) {
          FUZZ_CHECK(producer.push(make_descriptor(pushed)) == (want == RingStatus::kOk));
        } else {
          s = producer.reserve(n);
          FUZZ_CHECK(s == want);
        }
        FUZZ_CHECK(s != RingStatus::kCorrupt || forged);
        if (!forged) {
          const bool fits = pushed - popped + n <= capacity;
          FUZZ_CHECK(s == (fits ? RingStatus::kOk : RingStatus::kFull));
        }
        if (s != RingStatus::kOk) break;
        if (op == kPush) {
          for (std::uint32_t i = 0; i < n; ++i) producer.write(make_descriptor(pushed + i));
          producer.publish();
        }
        pushed += n;
        max_tail = std::max(max_tail, pushed);
        FUZZ_CHECK(producer.tail() == pushed);
        FUZZ_CHECK(indices->tail.load() == pushed);
        // The producer trusted some head it read: it is never more than a
        // ring ahead of every head anybody stored.
        FUZZ_CHECK(pushed <= capacity || pushed - capacity <= max_head);
        break;
      }
      case kPop: {
        Descriptor out;
        RingStatus want = consumer_model.pop(popped, capacity, indices->tail.load());
        RingStatus s = consumer.pop(out);
        FUZZ_CHECK(s == want);
        FUZZ_CHECK(s != RingStatus::kCorrupt || forged);
        if (!forged) FUZZ_CHECK(s == (popped < pushed ? RingStatus::kOk : RingStatus::kEmpty));
        if (s != RingStatus::kOk) break;
        if (!forged && !scribbled) {
          Descriptor sent = make_descriptor(popped);
          FUZZ_CHECK(std::memcmp(&out, &sent, sizeof out) == 0);
        }
        ++popped;
        max_head = std::max(max_head, popped);
        FUZZ_CHECK(indices->head.load() == popped);
        FUZZ_CHECK(popped <= max_tail);
        if (!forged_tail) FUZZ_CHECK(popped <= pushed);
        break;
      }
      case kReadable: {
        bool r = consumer.readable();
        FUZZ_CHECK(r == consumer_model.readable(popped, indices->tail.load()));
        if (!forged) FUZZ_CHECK(r == (popped < pushed));
        if (!r) {
          // Nothing readable and nobody moved since: pop() finds nothing.
          Descriptor out;
          FUZZ_CHECK(consumer_model.pop(popped, capacity, indices->tail.load()) == RingStatus::kEmpty);
          FUZZ_CHECK(consumer.pop(out) == RingStatus::kEmpty);
        }
        break;
      }
      case kPeerHead:
      case kPeerHeadNear: {
        std::uint64_t value = op == kPeerHead ? in.take<std::uint64_t>()
                                              : indices->head.load() + static_cast<std::uint64_t>(in.take<std::int8_t>());
        indices->head.store(value);
        max_head = std::max(max_head, value);
        forged_head = true;
        break;
      }
      case kPeerTail:
      case kPeerTailNear: {
        std::uint64_t value = op == kPeerTail ? in.take<std::uint64_t>()
                                              : indices->tail.load() + static_cast<std::uint64_t>(in.take<std::int8_t>());
        indices->tail.store(value);
        max_tail = std::max(max_tail, value);
        forged_tail = true;
        break;
      }
      case kPeerSlot: {
        std::uint32_t slot = in.take<std::uint8_t>() % capacity;
        auto d = in.take<Descriptor>();
        std::memcpy(&slots[slot], &d, sizeof d);
        scribbled = true;
        break;
      }
      case kPeerWaiters: {
        bool consumer_side = (in.take<std::uint8_t>() & 1) != 0;
        auto value = in.take<std::uint32_t>();
        (consumer_side ? indices->consumer_waiters : indices->producer_waiters).store(value);
        break;
      }
      case kRingOpCount:
        break;
    }
  }
  return 0;
}

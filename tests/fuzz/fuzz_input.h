// Shared by the fuzz targets and the seed writer: an invariant check that
// traps (so libFuzzer records the input as a crash), a reader that takes
// fixed-size fields from the front of the input, and the op codes of the
// targets whose inputs are operation sequences. Every target reads its
// input front to back with Input, so a seed file is the plain concatenation
// of its fields (fuzz_seeds.cc) and a crash input can be decoded by hand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

// Traps with the failed condition on stderr. An invariant of the code under
// test, never of the input: the input is always allowed to be garbage.
#define FUZZ_CHECK(cond)                                                                       \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      __builtin_trap();                                                                        \
    }                                                                                          \
  } while (0)

namespace fbuf::fuzz {

// Reads trivially copyable values from the front of a byte string. Past the
// end, every read yields zero bytes, so a short input is simply a short run.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}

  template <class T>
  T take() noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    T value{};
    std::size_t n = size_ < sizeof value ? size_ : sizeof value;
    if (n != 0) std::memcpy(&value, data_, n);
    data_ += n;
    size_ -= n;
    return value;
  }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t remaining() const noexcept { return size_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
};

// fuzz_descriptors: each record is one of these (the byte modulo the count)
// followed by a 32-byte Descriptor.
enum DescriptorOp : std::uint8_t {
  kLocate,        // locate() the descriptor as given
  kLocateNear,    // locate() it with pool 0 and an index at most one past the end
  kLend,          // lend(index % count, generation, or 1 for 0)
  kTakeBack,      // take_back() the descriptor as given: a forged return
  kTakeBackNear,  // take_back() pool 0, index % count, the lent generation unless flags bit 0
  kTakeAll,       // take_all(), as when a receiver disconnects
  // Aggregates (ChainCheck): the descriptors of one chain, fed in order
  // until one without "more follows" ends it.
  kChainAdd,      // add() the descriptor as given
  kChainAddNear,  // add() it with pool 0, index % (count + 1), offset 0, the reserved flags only
                  // if flags bit 31, and a length of 16 unless flags bit 30 (then the largest)
  kChainCut,      // cut(): the published tail ends the chain here
  // The path in aggregates: add() with pool slot 1 + pool % 16 (a
  // forwarded slice; every slot has the classes' geometry) and index %
  // (count + 1), valid as the receiver would find it in that slot's pool.
  kChainAddSlot,
  kDescriptorOpCount,
};

// fuzz_ring: each record is one of these (the byte modulo the count)
// followed by the arguments named here.
enum RingOp : std::uint8_t {
  kPush,          // u8 n: reserve(1 + n % (capacity + 1)), write that many, publish
  kPop,           // pop() one
  kReadable,      // readable(), and pop() if it says no
  kPeerHead,      // u64: the peer stores it into head
  kPeerHeadNear,  // i8: the peer moves head by it
  kPeerTail,      // u64: the peer stores it into tail
  kPeerTailNear,  // i8: the peer moves tail by it
  kPeerSlot,      // u8 slot, 32 bytes: the peer rewrites slot % capacity
  kPeerWaiters,   // u8 which (bit 0: consumer's), u32: the peer rewrites a waiters word
  kPushOne,       // push(): reserve(1), write and publish in one call
  kRingOpCount,
};

// fuzz_owner: each record is one of these (the byte modulo the count)
// followed by the arguments named here. "peer" is a receiver slot (u8 % 3),
// "remote" one of the owner's connections (u8 % how many it has).
enum OwnerOp : std::uint8_t {
  kSendBuffers,   // u8: allocate (or reuse held) 1-2 buffers, tag them, send: try_send, or 1 ms;
                  // bit 7 without bit 6: as one Message (a chain)
  kHoldBuffer,    // u8: allocate a buffer and keep it unsent (at most 4; the oldest is dropped)
  kTakeOne,       // u8 peer: the receiver pops one descriptor from its send ring
  kReturnOne,     // u8 peer, u8 which: the receiver returns one it holds
  kShutWrite,     // u8 peer (bit 7: pop and return what is queued first): detach, SHUT_WR
  kCloseReceiver, // u8 peer: the receiver closes its socket and unmaps everything
  kControlEvents, // u8 remote: the owner's control thread handles that connection's events
  kCutOffRemote,  // u8 remote: the owner cuts that receiver off
  kDrainOwner,    // u8: 0 Pool stats(), 1 Sender stats(), 2 allocate every free buffer
  kJoin,          // u8 (bit 0: wrong Hello version): a receiver connects in a free slot
  kPokeWord,      // u8 peer, u16 word, u8 value kind, i8 k (u64 if the kind says raw)
  kPokeSlot,      // u8 peer, u8 slot (bit 7: return ring), u8 kind, u8 pick: write a descriptor
  kForgeReturn,   // u8 peer, u8 kind, u8 pick: push a forged return and ring the doorbell
  kCloseSender,   // the Sender goes away (orphaning the inlets); the next send makes a new one
  kChatter,       // u8 peer: the receiver sends a second Hello after the handshake
  kOwnerOpCount,
};

}  // namespace fbuf::fuzz

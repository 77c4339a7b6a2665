// The floor: fbuf's own descriptor ring (fbuf/base/ring.h) between two processes,
// with nothing of fbuf's pool, validation or protection on top. A region
// (one memfd, mapped read-write by both ends) holds two channels, data and
// reply; each is a send ring and a return ring of 32-byte detail::Descriptors
// plus the buffers the descriptors name. The sender keeps a private free
// list, takes returns back when it runs out (or, with `ring_eager_reuse`,
// before every allocation, as fbuf's pool does), and waits like fbuf: a
// waiting side polls for `spin`, then sleeps on the ring's futex word
// (detail::sleep_until, the same wake-up protocol fbuf uses).
//
// Invariants (on top of ring.h's):
//  - Each ring has one producer process and one consumer process: the data
//    channel's send ring is pushed by the producer, its return ring by the
//    consumer; the reply channel the other way round.
//  - A buffer index is either on the sender's free list, in the send ring,
//    held by the receiver, or in the return ring: never two at once. The
//    rings have at least as many slots as the channel has buffers, so a
//    push never finds a ring full.

#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_sys.h"
#include "ends.h"
#include "fbuf/base/ring.h"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;
namespace detail = fbuf::detail;

constexpr std::uint64_t kRegionMagic = 0x7065657272696e67ULL;  // "peerring"
constexpr std::uint32_t kReplyBuffers = 8;
constexpr std::size_t kPage = 4096;
// The longest a side sleeps before it re-checks (as fbuf's kMaxSleep).
constexpr std::chrono::milliseconds kMaxSleep{20};

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

struct RegionHeader {
  std::uint64_t magic;
  std::uint64_t size;
  std::uint32_t depth;
  std::uint32_t reserved;
};

// Where everything lives in the region, computed identically by both ends
// from the EndConfig they share.
struct Layout {
  struct Channel {
    std::size_t send = 0, ret = 0;              // RingIndices
    std::size_t send_slots = 0, ret_slots = 0;  // Descriptor arrays
    std::size_t buffers = 0;
    std::size_t stride = 0;
    std::uint32_t capacity = 0;  // ring slots, a power of two >= count
    std::uint32_t count = 0;     // buffers
  };
  Channel data, reply;
  std::size_t bytes = 0;

  explicit Layout(const EndConfig& c) {
    std::size_t at = kPage;  // the RegionHeader's page
    auto place = [&](Channel& ch, std::uint32_t count, std::size_t stride) {
      ch.count = count;
      ch.capacity = std::bit_ceil(count);
      ch.stride = stride;
      ch.send = at;
      at += sizeof(detail::RingIndices);
      ch.ret = at;
      at += sizeof(detail::RingIndices);
      ch.send_slots = at;
      at += ch.capacity * sizeof(detail::Descriptor);
      ch.ret_slots = at;
      at += ch.capacity * sizeof(detail::Descriptor);
      at = round_up(at, kPage);
    };
    place(data, c.depth, round_up(c.size, kPage));
    place(reply, kReplyBuffers, kLine);
    data.buffers = at;
    at += std::size_t{data.count} * data.stride;
    reply.buffers = round_up(at, kPage);
    at = reply.buffers + std::size_t{reply.count} * reply.stride;
    bytes = round_up(at, kPage);
  }
};

// The region, mapped read-write. Owns the mapping and the fd.
class Region {
 public:
  Region(const EndConfig& c, int fd) : fd_(fd), layout_(c) {
    void* p = ::mmap(nullptr, layout_.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) throw_errno("mmap(ring region)");
    base_ = static_cast<std::byte*>(p);
    const auto* h = reinterpret_cast<const RegionHeader*>(base_);
    if (h->magic != kRegionMagic || h->size != c.size || h->depth != c.depth) {
      ::munmap(base_, layout_.bytes);
      throw std::runtime_error("ring region does not match this cell");
    }
  }
  ~Region() { ::munmap(base_, layout_.bytes); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const Layout& layout() const { return layout_; }
  template <class T>
  T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }

 private:
  Fd fd_;
  Layout layout_;
  std::byte* base_ = nullptr;
};

// Polls `ready` for `spin`, then sleeps on the futex pair until it holds.
// False after kOpTimeout. Returns as soon as `ready` has returned true once.
template <class Ready>
bool wait_for(detail::RingIndices* idx, std::chrono::nanoseconds spin, Ready ready) {
  if (poll_for(spin, ready)) return true;
  // The sleeping side is this ring's consumer: it sleeps on "tail moved".
  // sleep_until() calls `ready` again before and after sleeping and
  // returns what it said: `ready` may consume (pop), so it is never called
  // once more after it said yes.
  const auto deadline = Clock::now() + kOpTimeout;
  while (Clock::now() < deadline) {
    if (detail::sleep_until(idx->consumer_waiters, idx->data_seq, kMaxSleep, ready)) return true;
  }
  return false;
}

// The sending side of a channel: produces into its own buffers, pushes
// their descriptors and takes them back from the return ring.
class Outbox final : public Outlet {
 public:
  Outbox(std::shared_ptr<const Region> r, const Layout::Channel& ch, std::size_t size, Mode mode,
         std::chrono::nanoseconds spin, bool eager)
      : region_(std::move(r)),
        ch_(ch),
        size_(size),
        mode_(mode),
        spin_(spin),
        eager_(eager),
        ret_idx_(region_->at<detail::RingIndices>(ch.ret)),
        out_(region_->at<detail::RingIndices>(ch.send), region_->at<detail::Descriptor>(ch.send_slots), ch.capacity),
        returns_(ret_idx_, region_->at<detail::Descriptor>(ch.ret_slots), ch.capacity),
        buffers_(region_->at<std::byte>(ch.buffers)) {
    // Handed out from the back: buffer 0 first.
    for (std::uint32_t i = ch.count; i > 0; --i) free_.push_back(i - 1);
  }

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    std::int64_t i = acquire();
    if (i < 0) return false;
    const auto index = static_cast<std::uint32_t>(i);
    produce(buffers_ + std::size_t{index} * ch_.stride, size_, seq, flags, mode_);
    if (out_.push(detail::Descriptor{0, index, 0, 0, static_cast<std::uint32_t>(size_), 0, seq})) return true;
    error_ = "ring: send ring full";
    return false;
  }

 private:
  // A free buffer's index, or -1 (with error_) after kOpTimeout.
  std::int64_t acquire() {
    // Lazy: returns are taken back only when the free list is empty, so
    // every buffer is used in turn. Eager (what fbuf's pool does): taken
    // back whenever there are some, so the buffer the consumer released
    // last (warm in the caches) is reused first, at the price of reading
    // the return ring's tail (a line the consumer writes) at every
    // allocation.
    if (free_.empty() || (eager_ && returns_.readable())) drain();
    if (free_.empty()) {
      if (!wait_for(ret_idx_, spin_, [&] { return returns_.readable(); })) {
        error_ = "ring: no buffer came back";
        return -1;
      }
      drain();
    }
    if (free_.empty()) {
      error_ = "ring: corrupt return ring";
      return -1;
    }
    std::uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }

  void drain() {
    detail::Descriptor d;
    while (returns_.pop(d) == detail::RingStatus::kOk) {
      if (d.index < ch_.count) free_.push_back(d.index);
    }
  }

  std::shared_ptr<const Region> region_;
  Layout::Channel ch_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
  bool eager_;
  detail::RingIndices* ret_idx_;
  detail::RingProducer out_;
  detail::RingConsumer returns_;
  std::byte* buffers_;
  std::vector<std::uint32_t> free_;
};

// The receiving side of a channel: pops a descriptor, checks it against the
// channel's geometry, consumes the buffer in place and returns it.
class Inbox final : public Inlet {
 public:
  Inbox(std::shared_ptr<const Region> r, const Layout::Channel& ch, std::size_t size, Mode mode,
        std::chrono::nanoseconds spin)
      : region_(std::move(r)),
        ch_(ch),
        size_(size),
        mode_(mode),
        spin_(spin),
        in_idx_(region_->at<detail::RingIndices>(ch.send)),
        in_(in_idx_, region_->at<detail::Descriptor>(ch.send_slots), ch.capacity),
        returns_(region_->at<detail::RingIndices>(ch.ret), region_->at<detail::Descriptor>(ch.ret_slots), ch.capacity),
        buffers_(region_->at<std::byte>(ch.buffers)) {}

  bool next(Consumed& out) override {
    detail::Descriptor d;
    detail::RingStatus st = detail::RingStatus::kEmpty;
    if (!wait_for(in_idx_, spin_, [&] {
          st = in_.pop(d);
          return st != detail::RingStatus::kEmpty;
        })) {
      error_ = "ring: nothing arrived";
      return false;
    }
    if (st != detail::RingStatus::kOk || d.index >= ch_.count || d.length > ch_.stride || d.length < sizeof(Header)) {
      error_ = "ring: bad descriptor";
      return false;
    }
    out = consume(buffers_ + std::size_t{d.index} * ch_.stride, d.length, mode_);
    if (d.length != size_) out.data_ok = false;
    if (returns_.push(detail::Descriptor{0, d.index, 0, 0, 0, 0, 0})) return true;
    error_ = "ring: return ring full";
    return false;
  }

 private:
  std::shared_ptr<const Region> region_;
  Layout::Channel ch_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
  detail::RingIndices* in_idx_;
  detail::RingConsumer in_;
  detail::RingProducer returns_;
  const std::byte* buffers_;
};

}  // namespace

int create_ring_region(const EndConfig& c) {
  const Layout l(c);
  Fd fd(::memfd_create("peer_bench-ring", MFD_CLOEXEC));
  if (!fd) throw_errno("memfd_create(ring region)");
  if (::ftruncate(fd.get(), static_cast<off_t>(l.bytes)) != 0) throw_errno("ftruncate(ring region)");
  void* p = ::mmap(nullptr, l.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) throw_errno("mmap(ring region)");
  auto* base = static_cast<std::byte*>(p);
  auto* h = new (base) RegionHeader{};
  h->magic = kRegionMagic;
  h->size = c.size;
  h->depth = c.depth;
  for (const Layout::Channel* ch : {&l.data, &l.reply}) {
    new (base + ch->send) detail::RingIndices{};
    new (base + ch->ret) detail::RingIndices{};
  }
  ::munmap(p, l.bytes);
  return fd.release();
}

std::unique_ptr<ProducerEnd> make_ring_producer(const EndConfig& c, int region_fd) {
  auto r = std::make_shared<const Region>(c, region_fd);
  return std::make_unique<ProducerEnd>(
      std::make_unique<Outbox>(r, r->layout().data, c.size, c.mode, c.spin, c.ring_eager_reuse),
      std::make_unique<Inbox>(r, r->layout().reply, kReplySize, Mode::kTransport, c.spin));
}

std::unique_ptr<ConsumerEnd> make_ring_consumer(const EndConfig& c, int region_fd) {
  auto r = std::make_shared<const Region>(c, region_fd);
  return std::make_unique<ConsumerEnd>(
      std::make_unique<Inbox>(r, r->layout().data, c.size, c.mode, c.spin),
      std::make_unique<Outbox>(r, r->layout().reply, kReplySize, Mode::kTransport, c.spin, c.ring_eager_reuse));
}

}  // namespace fbuf::bench::peers

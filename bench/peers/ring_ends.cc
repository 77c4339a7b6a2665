// The floor: fbuf's own descriptor ring (ipc/ring.h) between two processes,
// with nothing of fbuf's pool, validation or protection on top. A region
// (one memfd, mapped read-write by both ends) holds two channels, data and
// reply; each is a send ring and a return ring of 32-byte ipc::Descriptors
// plus the buffers the descriptors name. The sender keeps a private free
// list, takes returns back when it runs out (or, with `ring_eager_reuse`,
// before every allocation, as fbuf's pool does), and waits like fbuf: a
// waiting side polls for `spin`, then sleeps on the ring's futex word
// (ipc::sleep_until, the same wake-up protocol fbuf uses).
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
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_sys.h"
#include "ends.h"
#include "ipc/ring.h"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;
namespace ipc = fbuf::ipc;

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
      at += sizeof(ipc::RingIndices);
      ch.ret = at;
      at += sizeof(ipc::RingIndices);
      ch.send_slots = at;
      at += ch.capacity * sizeof(ipc::Descriptor);
      ch.ret_slots = at;
      at += ch.capacity * sizeof(ipc::Descriptor);
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
bool wait_for(ipc::RingIndices* idx, std::chrono::nanoseconds spin, Ready ready) {
  const auto start = Clock::now();
  for (;;) {
    if (ready()) return true;
    const auto waited = Clock::now() - start;
    if (waited < spin) {
      cpu_relax();
      continue;
    }
    if (waited > kOpTimeout) return false;
    // The sleeping side is this ring's consumer: it sleeps on "tail moved".
    // sleep_until() calls `ready` again before and after sleeping and
    // returns what it said: `ready` may consume (pop), so it is never
    // called once more after it said yes.
    if (ipc::sleep_until(idx->consumer_waiters, idx->data_seq, kMaxSleep, ready)) return true;
  }
}

// The sending side of a channel: pushes descriptors of its own buffers and
// takes them back from the return ring.
class Outbox {
 public:
  Outbox(const Region& r, const Layout::Channel& ch, bool eager)
      : ch_(ch),
        eager_(eager),
        ret_idx_(r.at<ipc::RingIndices>(ch.ret)),
        out_(r.at<ipc::RingIndices>(ch.send), r.at<ipc::Descriptor>(ch.send_slots), ch.capacity),
        returns_(ret_idx_, r.at<ipc::Descriptor>(ch.ret_slots), ch.capacity),
        buffers_(r.at<std::byte>(ch.buffers)) {
    // Handed out from the back: buffer 0 first.
    for (std::uint32_t i = ch.count; i > 0; --i) free_.push_back(i - 1);
  }

  // A free buffer's index, or -1 (with `error`) after kOpTimeout.
  std::int64_t acquire(std::chrono::nanoseconds spin, std::string& error) {
    // Lazy: returns are taken back only when the free list is empty, so
    // every buffer is used in turn. Eager (what fbuf's pool does): taken
    // back whenever there are some, so the buffer the consumer released
    // last (warm in the caches) is reused first, at the price of reading
    // the return ring's tail (a line the consumer writes) at every
    // allocation.
    if (free_.empty() || (eager_ && returns_.readable())) drain();
    if (free_.empty()) {
      if (!wait_for(ret_idx_, spin, [&] { return returns_.readable(); })) {
        error = "ring: no buffer came back";
        return -1;
      }
      drain();
    }
    if (free_.empty()) {
      error = "ring: corrupt return ring";
      return -1;
    }
    std::uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }

  std::byte* buffer(std::uint32_t index) const { return buffers_ + std::size_t{index} * ch_.stride; }

  bool send(std::uint32_t index, std::size_t length, std::uint64_t seq) {
    const ipc::Descriptor d{0, index, 0, 0, static_cast<std::uint32_t>(length), 0, seq};
    return out_.push(d);
  }

 private:
  void drain() {
    ipc::Descriptor d;
    while (returns_.pop(d) == ipc::RingStatus::kOk) {
      if (d.index < ch_.count) free_.push_back(d.index);
    }
  }

  Layout::Channel ch_;
  bool eager_;
  ipc::RingIndices* ret_idx_;
  ipc::RingProducer out_;
  ipc::RingConsumer returns_;
  std::byte* buffers_;
  std::vector<std::uint32_t> free_;
};

// The receiving side of a channel.
class Inbox {
 public:
  Inbox(const Region& r, const Layout::Channel& ch)
      : ch_(ch),
        in_idx_(r.at<ipc::RingIndices>(ch.send)),
        in_(in_idx_, r.at<ipc::Descriptor>(ch.send_slots), ch.capacity),
        returns_(r.at<ipc::RingIndices>(ch.ret), r.at<ipc::Descriptor>(ch.ret_slots), ch.capacity),
        buffers_(r.at<std::byte>(ch.buffers)) {}

  // The next descriptor, checked against the channel's geometry.
  bool receive(ipc::Descriptor& d, std::chrono::nanoseconds spin, std::string& error) {
    ipc::RingStatus st = ipc::RingStatus::kEmpty;
    if (!wait_for(in_idx_, spin, [&] {
          st = in_.pop(d);
          return st != ipc::RingStatus::kEmpty;
        })) {
      error = "ring: nothing arrived";
      return false;
    }
    if (st != ipc::RingStatus::kOk || d.index >= ch_.count || d.length > ch_.stride) {
      error = "ring: bad descriptor";
      return false;
    }
    return true;
  }

  const std::byte* buffer(std::uint32_t index) const {
    return buffers_ + std::size_t{index} * ch_.stride;
  }

  bool give_back(std::uint32_t index) { return returns_.push(ipc::Descriptor{0, index, 0, 0, 0, 0, 0}); }

 private:
  Layout::Channel ch_;
  ipc::RingIndices* in_idx_;
  ipc::RingConsumer in_;
  ipc::RingProducer returns_;
  const std::byte* buffers_;
};

class RingProducerEnd final : public ProducerEnd {
 public:
  RingProducerEnd(const EndConfig& c, int fd)
      : c_(c), region_(c, fd), data_(region_, region_.layout().data, c.ring_eager_reuse),
        replies_(region_, region_.layout().reply) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    std::int64_t i = data_.acquire(c_.spin, error_);
    if (i < 0) return false;
    auto index = static_cast<std::uint32_t>(i);
    produce(data_.buffer(index), c_.size, seq, flags, c_.mode);
    if (!data_.send(index, c_.size, seq)) {
      error_ = "ring: send ring full";
      return false;
    }
    return true;
  }

  bool wait_reply(std::uint64_t seq) override {
    ipc::Descriptor d;
    if (!replies_.receive(d, c_.spin, error_)) return false;
    Header h{};
    std::memcpy(&h, replies_.buffer(d.index), sizeof(h));
    replies_.give_back(d.index);
    if (h.seq != seq) {
      error_ = "ring: reply to " + std::to_string(h.seq) + ", expected " + std::to_string(seq);
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Region region_;
  Outbox data_;
  Inbox replies_;
};

class RingConsumerEnd final : public ConsumerEnd {
 public:
  RingConsumerEnd(const EndConfig& c, int fd)
      : c_(c), region_(c, fd), data_(region_, region_.layout().data),
        replies_(region_, region_.layout().reply, c.ring_eager_reuse) {}

  bool next(Consumed& out) override {
    ipc::Descriptor d;
    if (!data_.receive(d, c_.spin, error_)) return false;
    out = consume(data_.buffer(d.index), d.length, c_.mode);
    if (d.length != c_.size) out.data_ok = false;
    if (!data_.give_back(d.index)) {
      error_ = "ring: return ring full";
      return false;
    }
    return true;
  }

  bool reply(std::uint64_t seq) override {
    std::int64_t i = replies_.acquire(c_.spin, error_);
    if (i < 0) return false;
    auto index = static_cast<std::uint32_t>(i);
    const Header h{seq, 0};
    std::memcpy(replies_.buffer(index), &h, sizeof(h));
    if (!replies_.send(index, kReplySize, seq)) {
      error_ = "ring: reply ring full";
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Region region_;
  Inbox data_;
  Outbox replies_;
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
    new (base + ch->send) ipc::RingIndices{};
    new (base + ch->ret) ipc::RingIndices{};
  }
  ::munmap(p, l.bytes);
  return fd.release();
}

std::unique_ptr<ProducerEnd> make_ring_producer(const EndConfig& c, int region_fd) {
  return std::make_unique<RingProducerEnd>(c, region_fd);
}

std::unique_ptr<ConsumerEnd> make_ring_consumer(const EndConfig& c, int region_fd) {
  return std::make_unique<RingConsumerEnd>(c, region_fd);
}

}  // namespace fbuf::bench::peers

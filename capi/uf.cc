// The C API: thin wrappers that map the C++ API's errors to uf_error and
// never let an exception cross the C boundary.
//
// Handles. Every handle starts with a tag word that says its kind and
// whether it is live. Ending a handle (destroy, close, deallocate, a write
// that consumes it) swaps the tag for a poisoned one, releases what the
// handle held, and puts the emptied handle in its kind's quarantine: the
// last kQuarantine ended handles stay allocated, so a later use of one
// finds the poisoned tag and is reported (uf.h says which calls return
// UF_EINVAL and which abort) instead of reading freed memory.
#include "fbuf/uf.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <type_traits>
#include <variant>

#include "fbuf/fbuf.h"

namespace {

// Tag words: one live value per kind, and one value per way a handle ends.
enum Tag : std::uint32_t {
  kPoolLive = 0x75667031,  // "ufp1"
  kPoolDestroyed = 0xdead7001,
  kChannelLive = 0x75666331,  // "ufc1"
  kChannelClosed = 0xdead7002,
  kBufLive = 0x75666231,  // "ufb1"
  kBufDeallocated = 0xdead7003,
  kBufWritten = 0xdead7004,   // consumed by uf_write
  kBufWrittenV = 0xdead7005,  // consumed by uf_writev
};

// Ended handles kept per kind before their memory goes back to malloc.
constexpr std::size_t kQuarantine = 4096;

}  // namespace

// The tag is atomic so that two threads ending the same handle cannot both
// succeed (the compare-exchange in end_handle()), and a check racing with
// an end reads one value or the other. It publishes nothing: the payload is
// handed between threads by the caller's own synchronisation, as with any
// C object. So every tag access is relaxed.
struct uf_pool {
  explicit uf_pool(fbuf::Pool p) : pool(std::move(p)) {}
  std::atomic<std::uint32_t> tag{kPoolLive};
  std::optional<fbuf::Pool> pool;
};

struct uf_channel {
  std::atomic<std::uint32_t> tag{kChannelLive};
  std::optional<fbuf::Sender> sender;  // a sending end
  fbuf::Receiver receiver;             // or a receiving end
};

struct uf_buf {
  explicit uf_buf(fbuf::Buffer b) noexcept : v(std::move(b)) {}
  explicit uf_buf(fbuf::View view) noexcept : v(std::move(view)) {}
  std::atomic<std::uint32_t> tag{kBufLive};
  std::variant<fbuf::Buffer, fbuf::View> v;
};

namespace {

template <class H>
struct Kind;
template <>
struct Kind<uf_pool> {
  static constexpr std::uint32_t kLive = kPoolLive;
  static void empty(uf_pool& h) noexcept { h.pool.reset(); }
};
template <>
struct Kind<uf_channel> {
  static constexpr std::uint32_t kLive = kChannelLive;
  // The receiving end first, then the sending end, as ~uf_channel would.
  static void empty(uf_channel& h) noexcept {
    h.receiver = fbuf::Receiver();
    h.sender.reset();
  }
};
template <>
struct Kind<uf_buf> {
  static constexpr std::uint32_t kLive = kBufLive;
  static void empty(uf_buf& h) noexcept { h.v.emplace<fbuf::Buffer>(); }
};

// Reports a call on a handle that is not a live `noun` handle, and aborts.
[[noreturn]] void misuse(const char* call, const char* noun, const void* h, std::uint32_t tag) noexcept {
  const char* kind = nullptr;   // what the tag says `h` is...
  const char* ended = nullptr;  // ...and how it ended
  switch (tag) {
    case kPoolLive: kind = "pool"; break;
    case kChannelLive: kind = "channel"; break;
    case kBufLive: kind = "buffer"; break;
    case kPoolDestroyed: kind = "pool", ended = "was already destroyed"; break;
    case kChannelClosed: kind = "channel", ended = "was already closed"; break;
    case kBufDeallocated: kind = "buffer", ended = "was already deallocated"; break;
    case kBufWritten: kind = "buffer", ended = "was already consumed by uf_write"; break;
    case kBufWrittenV: kind = "buffer", ended = "was already consumed by uf_writev"; break;
    default: break;
  }
  if (ended != nullptr)
    std::fprintf(stderr, "fbuf: %s: %s handle %p %s\n", call, kind, h, ended);
  else if (kind != nullptr)
    std::fprintf(stderr, "fbuf: %s: %p is a %s handle, not a %s handle\n", call, h, kind, noun);
  else
    std::fprintf(stderr, "fbuf: %s: %p is not a live %s handle (not made by fbuf, or ended long ago)\n", call, h,
                 noun);
  std::abort();
}

template <class H>
const char* noun() noexcept {
  if constexpr (std::is_same_v<H, uf_pool>) return "pool";
  else if constexpr (std::is_same_v<H, uf_channel>) return "channel";
  else return "buffer";
}

// `h` if it is a live handle of its kind, else nullptr: for the calls that
// answer misuse with UF_EINVAL. `h` may be NULL.
template <class H>
H* live(H* h) noexcept {
  using K = Kind<std::remove_const_t<H>>;
  // relaxed: the tag only detects misuse; the handle's contents reach this
  // thread through the caller's own hand-off of the pointer.
  return h != nullptr && h->tag.load(std::memory_order_relaxed) == K::kLive ? h : nullptr;
}

// `h` (not NULL) if it is live; otherwise reports `call` and aborts: for
// the calls that cannot return an error.
template <class H>
H* require_live(const char* call, H* h) noexcept {
  using K = Kind<std::remove_const_t<H>>;
  // relaxed: as in live().
  const std::uint32_t tag = h->tag.load(std::memory_order_relaxed);
  if (tag != K::kLive) [[unlikely]]
    misuse(call, noun<std::remove_const_t<H>>(), h, tag);
  return h;
}

// The last kQuarantine ended handles of one kind, oldest first out.
template <class H>
class Quarantine {
 public:
  void push(H* h) noexcept {
    H* oldest = nullptr;
    {
      std::lock_guard lock(mu_);
      oldest = ring_[next_];
      ring_[next_] = h;
      next_ = (next_ + 1) % kQuarantine;
    }
    delete oldest;  // emptied when it ended: only its memory is left
  }

 private:
  std::mutex mu_;
  H* ring_[kQuarantine] = {};  // guarded by mu_
  std::size_t next_ = 0;       // guarded by mu_
};

template <class H>
Quarantine<H>& quarantine() noexcept {
  // Never destroyed: handles may end while the process exits.
  static auto* q = new Quarantine<H>();
  return *q;
}

// Ends live handle `h` as `call` (`ended` is the poisoned tag it gets):
// releases what it held and quarantines its memory. Aborts if `h` is not
// live, also when another thread ended it first.
template <class H>
void end_handle(const char* call, H* h, std::uint32_t ended) noexcept {
  std::uint32_t tag = Kind<H>::kLive;
  // relaxed: atomicity alone decides which of two racing ends wins; the
  // handle's contents were published by the caller's hand-off.
  if (!h->tag.compare_exchange_strong(tag, ended, std::memory_order_relaxed)) misuse(call, noun<H>(), h, tag);
  Kind<H>::empty(*h);
  quarantine<H>().push(h);
}

uf_error to_uf(std::error_code ec) noexcept {
  if (!ec) return UF_OK;
  if (ec.category() == fbuf::fbuf_category()) {
    switch (static_cast<fbuf::Errc>(ec.value())) {
      case fbuf::Errc::kOk: return UF_OK;
      case fbuf::Errc::kWouldBlock: return UF_EAGAIN;
      case fbuf::Errc::kTimedOut: return UF_ETIMEDOUT;
      case fbuf::Errc::kPeerGone: return UF_EPEERGONE;
      case fbuf::Errc::kNoReceivers: return UF_ENORECEIVERS;
      case fbuf::Errc::kInvalidArgument: return UF_EINVAL;
      case fbuf::Errc::kBadDescriptor: return UF_EBADDESC;
      case fbuf::Errc::kVersionMismatch: return UF_EVERSION;
      case fbuf::Errc::kProtocol: return UF_EPROTO;
      case fbuf::Errc::kClosed: return UF_ECLOSED;
      case fbuf::Errc::kTooLarge: return UF_ETOOLARGE;
      case fbuf::Errc::kCorrupt: return UF_ECORRUPT;
      case fbuf::Errc::kCutOff: return UF_ECUTOFF;
    }
    return UF_EPROTO;
  }
  if (ec.category() == std::system_category() || ec.category() == std::generic_category()) {
    errno = ec.value();
    if (ec.value() == ENOMEM) return UF_ENOMEM;
    if (ec.value() == ETIMEDOUT) return UF_ETIMEDOUT;
  }
  return UF_ESYSTEM;
}

// Runs a setup call, turning exceptions into codes.
template <class F>
uf_error guarded(F&& f) noexcept {
  try {
    return f();
  } catch (const fbuf::Error& e) {
    return to_uf(e.code());
  } catch (const std::bad_alloc&) {
    return UF_ENOMEM;
  } catch (...) {
    return UF_ESYSTEM;
  }
}

std::chrono::nanoseconds to_timeout(int64_t ns) noexcept {
  // Negative means forever; so does INT64_MAX (deadlines saturate).
  if (ns < 0) return fbuf::kForever;
  return std::chrono::nanoseconds(ns);
}

uf_error wrap_buffer(fbuf::Result<fbuf::Buffer> r, uf_buf** out) noexcept {
  if (!r) return to_uf(r.error());
  auto* b = new (std::nothrow) uf_buf(std::move(*r));
  if (b == nullptr) return UF_ENOMEM;  // the Buffer goes back to its pool
  *out = b;
  return UF_OK;
}

// Fills as much of the caller's struct as it has room for (its `size`),
// zeroes what this version does not know, and keeps `size`.
template <class S>
uf_error copy_out(const S& full, S* out, std::size_t min_size) noexcept {
  const std::size_t size = out->size;
  if (size < min_size) return UF_EINVAL;
  const std::size_t n = size < sizeof(S) ? size : sizeof(S);
  std::memcpy(reinterpret_cast<unsigned char*>(out) + sizeof(std::size_t),
              reinterpret_cast<const unsigned char*>(&full) + sizeof(std::size_t), n - sizeof(std::size_t));
  if (size > sizeof(S)) std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(S), 0, size - sizeof(S));
  return UF_OK;
}

// The sizes of the first versions of the stats structs: callers compiled
// against them must keep working when fields are appended.
constexpr std::size_t kPoolStatsV1 = sizeof(struct uf_pool_stats);
constexpr std::size_t kSenderStatsV1 = sizeof(struct uf_sender_stats);
constexpr std::size_t kReceiverStatsV1 = sizeof(struct uf_receiver_stats);

// One line per field SenderStats has. SenderStats does not count dropped
// buffers or cut-off receivers (yet): those read 0 until it does.
void fill_sender_stats(const fbuf::SenderStats& s, struct uf_sender_stats& out) noexcept {
  out.sent = s.sent;
  out.delivered = s.delivered;
  out.returned = s.returned;
  out.rejected_returns = s.rejected_returns;
  out.rejected_handshakes = s.rejected_handshakes;
  out.receivers_connected = s.receivers_connected;
  out.receivers_lost = s.receivers_lost;
  out.dropped = s.dropped;
  out.receivers_cut_off = s.receivers_cut_off;
}

void fill_receiver_stats(const fbuf::ReceiverStats& s, struct uf_receiver_stats& out) noexcept {
  out.received = s.received;
  out.returned = s.returned;
  out.rejected_descriptors = s.rejected_descriptors;
  out.dropped = s.dropped;
}

}  // namespace

extern "C" {

const char* uf_strerror(uf_error e) {
  switch (e) {
    case UF_OK: return "success";
    case UF_EAGAIN: return "would block: no buffer free, ring full, or nothing to receive";
    case UF_ETIMEDOUT: return "timed out";
    case UF_EPEERGONE: return "peer gone: the other end closed or died";
    case UF_ENORECEIVERS: return "no receiver is connected";
    case UF_EINVAL: return "invalid argument";
    case UF_EBADDESC: return "invalid descriptor from peer";
    case UF_EVERSION: return "protocol version mismatch";
    case UF_EPROTO: return "malformed or unexpected control message";
    case UF_ECLOSED: return "closed";
    case UF_ETOOLARGE: return "no size class is large enough";
    case UF_ESYSTEM: return "system call failed (see errno)";
    case UF_ENOMEM: return "out of memory";
    case UF_ECORRUPT: return "the peer corrupted the channel; the stream has ended";
    case UF_ECUTOFF: return "cut off by the sender (slow-consumer policy)";
  }
  return "unknown uf_error";
}

uf_error uf_pool_create(const char* name, const uf_size_class* classes, size_t nclasses, uf_policy policy,
                        uf_pool** out) {
  if (out == nullptr || classes == nullptr || nclasses == 0) return UF_EINVAL;
  if (policy != UF_POLICY_VOLATILE && policy != UF_POLICY_READ_ONLY && policy != UF_POLICY_COPY_ON_WRITE)
    return UF_EINVAL;
  return guarded([&] {
    fbuf::PoolOptions o;
    o.name = name != nullptr ? name : "fbuf";
    for (size_t i = 0; i < nclasses; ++i) o.classes.push_back({classes[i].buffer_size, classes[i].count});
    o.policy = static_cast<fbuf::Policy>(policy);
    *out = new uf_pool(fbuf::Pool(std::move(o)));
    return UF_OK;
  });
}

void uf_pool_destroy(uf_pool* pool) {
  if (pool != nullptr) end_handle("uf_pool_destroy", pool, kPoolDestroyed);
}

void uf_pool_counts(const uf_pool* pool, uint32_t* free_count, uint32_t* total) {
  fbuf::PoolStats s{};
  if (pool != nullptr) {
    require_live("uf_pool_counts", pool);
    try {
      s = pool->pool->stats();
    } catch (...) {
      // stats() allocates nothing that can fail in practice; report zeros.
    }
  }
  if (free_count != nullptr) *free_count = s.free;
  if (total != nullptr) *total = s.total;
}

uf_error uf_pool_stats(const uf_pool* pool, struct uf_pool_stats* out) {
  if (live(pool) == nullptr || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    const fbuf::PoolStats s = pool->pool->stats();
    struct uf_pool_stats full{};
    full.total = s.total;
    full.free = s.free;
    full.allocated = s.allocated;
    full.in_flight = s.in_flight;
    full.rejected_returns = s.rejected_returns;
    return copy_out(full, out, kPoolStatsV1);
  });
}

uf_error uf_sender_stats(const uf_channel* sender, struct uf_sender_stats* out) {
  if (live(sender) == nullptr || !sender->sender || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    struct uf_sender_stats full{};
    fill_sender_stats(sender->sender->stats(), full);
    return copy_out(full, out, kSenderStatsV1);
  });
}

uf_error uf_receiver_stats(const uf_channel* receiver, struct uf_receiver_stats* out) {
  if (live(receiver) == nullptr || !receiver->receiver || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    struct uf_receiver_stats full{};
    fill_receiver_stats(receiver->receiver.stats(), full);
    return copy_out(full, out, kReceiverStatsV1);
  });
}

uf_error uf_channel_listen(uf_pool* pool, const char* service, uf_channel** out) {
  if (live(pool) == nullptr || out == nullptr) return UF_EINVAL;
  if (service != nullptr && service[0] == '\0') return UF_EINVAL;
  return guarded([&] {
    auto ch = std::make_unique<uf_channel>();
    if (service != nullptr)
      ch->sender.emplace(*pool->pool, service);
    else
      ch->sender.emplace(*pool->pool);
    *out = ch.release();
    return UF_OK;
  });
}

uf_error uf_channel_connect(const char* service, int64_t timeout_ns, uf_channel** out) {
  if (service == nullptr || service[0] == '\0' || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    fbuf::ReceiverOptions o;
    o.connect_timeout = to_timeout(timeout_ns);
    auto ch = std::make_unique<uf_channel>();
    ch->receiver = fbuf::Receiver::connect(service, o);
    *out = ch.release();
    return UF_OK;
  });
}

uf_error uf_channel_connect_local(uf_channel* sender, uf_channel** out) {
  if (live(sender) == nullptr || !sender->sender || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    auto ch = std::make_unique<uf_channel>();
    ch->receiver = sender->sender->connect_local();
    *out = ch.release();
    return UF_OK;
  });
}

uf_error uf_channel_wait_receivers(uf_channel* sender, size_t n, int64_t timeout_ns) {
  if (live(sender) == nullptr || !sender->sender) return UF_EINVAL;
  return guarded([&] { return sender->sender->wait_for_receivers(n, to_timeout(timeout_ns)) ? UF_OK : UF_ETIMEDOUT; });
}

void uf_channel_close(uf_channel* ch) {
  if (ch != nullptr) end_handle("uf_channel_close", ch, kChannelClosed);
}

uf_error uf_allocate(uf_pool* pool, size_t size, int64_t timeout_ns, uf_buf** out) {
  if (live(pool) == nullptr || out == nullptr) return UF_EINVAL;
  if (timeout_ns == 0) return wrap_buffer(pool->pool->try_allocate(size), out);
  return wrap_buffer(pool->pool->allocate(size, to_timeout(timeout_ns)), out);
}

uf_error uf_allocb(uf_channel* sender, size_t size, int64_t timeout_ns, uf_buf** out) {
  if (live(sender) == nullptr || !sender->sender || out == nullptr) return UF_EINVAL;
  if (timeout_ns == 0) return wrap_buffer(sender->sender->try_allocate(size), out);
  return wrap_buffer(sender->sender->allocate(size, to_timeout(timeout_ns)), out);
}

uf_error uf_write(uf_channel* sender, uf_buf* buf, size_t len, int64_t timeout_ns) {
  if (live(sender) == nullptr || !sender->sender || live(buf) == nullptr) return UF_EINVAL;
  auto* b = std::get_if<fbuf::Buffer>(&buf->v);
  if (b == nullptr || !*b) return UF_EINVAL;
  std::error_code ec = timeout_ns == 0 ? sender->sender->try_send(std::move(*b), len)
                                       : sender->sender->send(std::move(*b), len, to_timeout(timeout_ns));
  if (ec) return to_uf(ec);
  end_handle("uf_write", buf, kBufWritten);
  return UF_OK;
}

uf_error uf_writev(uf_channel* sender, uf_buf* const* bufs, const size_t* lens, size_t n, int64_t timeout_ns) {
  constexpr size_t kMax = 64;
  if (live(sender) == nullptr || !sender->sender || bufs == nullptr || lens == nullptr || n == 0 || n > kMax)
    return UF_EINVAL;
  // The C++ call takes the Buffers themselves; move them into a batch and
  // back out if the send fails, so the caller's handles stay valid. A
  // handle named twice is found empty the second time: UF_EINVAL.
  fbuf::Buffer batch[kMax];
  for (size_t i = 0; i < n; ++i) {
    auto* b = live(bufs[i]) != nullptr ? std::get_if<fbuf::Buffer>(&bufs[i]->v) : nullptr;
    if (b == nullptr || !*b) {
      for (size_t j = 0; j < i; ++j) std::get<fbuf::Buffer>(bufs[j]->v) = std::move(batch[j]);
      return UF_EINVAL;
    }
    batch[i] = std::move(*b);
  }
  std::error_code ec =
      sender->sender->send_many(std::span<fbuf::Buffer>(batch, n), std::span<const size_t>(lens, n),
                                timeout_ns == 0 ? std::chrono::nanoseconds(0) : to_timeout(timeout_ns));
  if (ec) {
    for (size_t i = 0; i < n; ++i) std::get<fbuf::Buffer>(bufs[i]->v) = std::move(batch[i]);
    return to_uf(ec);
  }
  for (size_t i = 0; i < n; ++i) end_handle("uf_writev", bufs[i], kBufWrittenV);
  return UF_OK;
}

uf_error uf_get(uf_channel* receiver, int64_t timeout_ns, uf_buf** out) {
  if (live(receiver) == nullptr || !receiver->receiver || out == nullptr) return UF_EINVAL;
  fbuf::Result<fbuf::View> r = timeout_ns == 0 ? receiver->receiver.try_receive()
                                               : receiver->receiver.receive(to_timeout(timeout_ns));
  if (!r) return to_uf(r.error());
  auto* b = new (std::nothrow) uf_buf(std::move(*r));
  if (b == nullptr) return UF_ENOMEM;  // the View returns itself
  *out = b;
  return UF_OK;
}

void uf_deallocate(uf_buf* buf) {
  if (buf != nullptr) end_handle("uf_deallocate", buf, kBufDeallocated);
}

void* uf_data(uf_buf* buf) {
  if (buf == nullptr) return nullptr;
  auto* b = std::get_if<fbuf::Buffer>(&require_live("uf_data", buf)->v);
  return b != nullptr ? b->data() : nullptr;
}

const void* uf_cdata(const uf_buf* buf) {
  if (buf == nullptr) return nullptr;
  if (auto* b = std::get_if<fbuf::Buffer>(&require_live("uf_cdata", buf)->v)) return b->data();
  return std::get<fbuf::View>(buf->v).data();
}

size_t uf_size(const uf_buf* buf) {
  if (buf == nullptr) return 0;
  if (auto* b = std::get_if<fbuf::Buffer>(&require_live("uf_size", buf)->v)) return b->capacity();
  return std::get<fbuf::View>(buf->v).size();
}

}  // extern "C"

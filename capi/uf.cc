// The C API: thin wrappers that map the C++ API's errors to uf_error and
// never let an exception cross the C boundary. Handles and their checks:
// capi/handles.h; the counters: capi/uf_stats.cc.
#include "fbuf/uf.h"

#include <cstring>
#include <new>
#include <span>

#include "capi/errors.h"
#include "capi/handles.h"

using namespace fbuf::capi;

namespace {

uf_error wrap_buffer(fbuf::Result<fbuf::Buffer> r, uf_buf** out) noexcept {
  if (!r) return to_uf(r.error());
  auto* b = new (std::nothrow) uf_buf(std::move(*r));
  if (b == nullptr) return UF_ENOMEM;  // the Buffer goes back to its pool
  *out = b;
  return UF_OK;
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
    case UF_EMSG: return "the next item is a message of several slices: receive it with uf_msg_receive";
    case UF_ENOTSUP: return "not supported: a view of this process's own pool cannot be sent on";
  }
  return "unknown uf_error";
}

// The integer stored in a C enum field, read without loading it as the
// enum type (a value outside the enumerators would be undefined there).
static_assert(sizeof(uf_policy) == sizeof(unsigned) && sizeof(uf_sealed_copies) == sizeof(unsigned));
static unsigned enum_bits(const void* field) noexcept {
  unsigned v;
  std::memcpy(&v, field, sizeof v);
  return v;
}

uf_error uf_pool_create(const char* name, const uf_size_class* classes, size_t nclasses, uf_policy policy,
                        uf_pool** out) {
  struct uf_pool_options o = {};
  o.size = sizeof o;
  std::memcpy(&o.policy, &policy, sizeof policy);  // as received: checked by enum_bits below
  return uf_pool_create_with(name, classes, nclasses, &o, out);
}

uf_error uf_pool_create_with(const char* name, const uf_size_class* classes, size_t nclasses,
                             const struct uf_pool_options* options, uf_pool** out) {
  if (out == nullptr || classes == nullptr || nclasses == 0 || options == nullptr) return UF_EINVAL;
  if (options->size < sizeof(struct uf_pool_options)) return UF_EINVAL;
  // Copied once: the caller's struct is read here and nowhere after.
  const struct uf_pool_options opt = *options;
  // A C caller may put any int in an enum field; such a value is not one
  // C++ may load as the enum, so each is checked as the integer it is.
  const unsigned policy = enum_bits(&opt.policy);
  const unsigned sealed = enum_bits(&opt.sealed_copies);
  if (policy != UF_POLICY_VOLATILE && policy != UF_POLICY_READ_ONLY && policy != UF_POLICY_COPY_ON_WRITE)
    return UF_EINVAL;
  if (sealed != UF_SEALED_AUTO && sealed != UF_SEALED_NEVER && sealed != UF_SEALED_UP_TO) return UF_EINVAL;
  return guarded([&] {
    fbuf::PoolOptions o;
    o.name = name != nullptr ? name : "fbuf";
    for (size_t i = 0; i < nclasses; ++i) o.classes.push_back({classes[i].buffer_size, classes[i].count});
    o.policy = static_cast<fbuf::Policy>(policy);
    o.eager_restore = opt.eager_restore != 0;
    o.sealed_copies = sealed == UF_SEALED_NEVER   ? fbuf::SealedCopies::kNever
                      : sealed == UF_SEALED_UP_TO ? fbuf::SealedCopies::kUpTo
                                                  : fbuf::SealedCopies::kAuto;
    o.sealed_copy_limit = opt.sealed_copy_limit;
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

uf_error uf_channel_listen(uf_pool* pool, const char* service, uf_channel** out) {
  return uf_channel_listen_with(pool, service, nullptr, out);
}

uf_error uf_channel_listen_with(uf_pool* pool, const char* service, const uf_sender_options* options,
                                uf_channel** out) {
  if (live(pool) == nullptr || out == nullptr) return UF_EINVAL;
  if (service != nullptr && service[0] == '\0') return UF_EINVAL;
  fbuf::SenderOptions o;
  if (options != nullptr) {
    // The first version of the struct is all there is; a caller's larger
    // struct (a later version) must not be read past what is known here.
    if (options->size < sizeof(uf_sender_options)) return UF_EINVAL;
    if (options->slow_receiver < UF_SLOW_BLOCK || options->slow_receiver > UF_SLOW_CUT_OFF) return UF_EINVAL;
    if (options->hold_timeout_ns < 0) return UF_EINVAL;
    if (options->ring_capacity != 0) o.ring_capacity = options->ring_capacity;
    if (options->max_receivers != 0) o.max_receivers = options->max_receivers;
    o.slow_receiver = static_cast<fbuf::SlowReceiverPolicy>(options->slow_receiver);
    o.receiver_budget = options->receiver_budget;
    o.hold_timeout = std::chrono::nanoseconds(options->hold_timeout_ns);
  }
  return guarded([&] {
    auto ch = std::make_unique<uf_channel>();
    if (service != nullptr)
      ch->sender.emplace(*pool->pool, service, o);
    else
      ch->sender.emplace(*pool->pool, o);
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

uf_error uf_forward(uf_channel* sender, const uf_buf* view, int64_t timeout_ns) {
  if (live(sender) == nullptr || !sender->sender || live(view) == nullptr) return UF_EINVAL;
  const auto* v = std::get_if<fbuf::View>(&view->v);
  if (v == nullptr || !*v) return UF_EINVAL;
  std::error_code ec = timeout_ns == 0 ? sender->sender->try_send(*v) : sender->sender->send(*v, to_timeout(timeout_ns));
  return ec ? to_uf(ec) : UF_OK;
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

int uf_channel_fd(const uf_channel* ch) {
  if (live(ch) == nullptr) return -1;
  return ch->sender ? ch->sender->fd() : ch->receiver.fd();
}

int uf_channel_arm(uf_channel* ch) {
  if (live(ch) == nullptr) return 0;
  return (ch->sender ? ch->sender->arm() : ch->receiver.arm()) ? 1 : 0;
}

int uf_channel_arm_alloc(uf_channel* sender, size_t size) {
  if (live(sender) == nullptr || !sender->sender) return 0;
  return sender->sender->arm(size) ? 1 : 0;
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

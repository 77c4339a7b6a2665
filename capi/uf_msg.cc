// The C API for aggregates (fbuf/uf_msg.h) over fbuf::Message.
#include "fbuf/uf_msg.h"

#include <sys/uio.h>

#include <new>
#include <span>

#include "capi/errors.h"
#include "capi/handles.h"

using namespace fbuf::capi;

namespace {

// Adds a range of `buf` to `msg` (front or back); consumes `buf` on success.
uf_error add(const char* call, uf_msg* msg, uf_buf* buf, size_t offset, size_t len, bool front) noexcept {
  if (live(msg) == nullptr || live(buf) == nullptr) return UF_EINVAL;
  std::error_code ec;
  if (auto* b = std::get_if<fbuf::Buffer>(&buf->v)) {
    ec = front ? msg->m.prepend(std::move(*b), offset, len) : msg->m.append(std::move(*b), offset, len);
  } else {
    auto& v = std::get<fbuf::View>(buf->v);
    ec = front ? msg->m.prepend(std::move(v), offset, len) : msg->m.append(std::move(v), offset, len);
  }
  if (ec) return to_uf(ec);
  end_handle(call, buf, kBufInMessage);
  return UF_OK;
}

uf_error wrap(fbuf::Message m, uf_msg** out) noexcept {
  auto* h = new (std::nothrow) uf_msg;
  if (h == nullptr) return UF_ENOMEM;  // the slices go back with `m`
  h->m = std::move(m);
  *out = h;
  return UF_OK;
}

}  // namespace

extern "C" {

uf_error uf_msg_create(uf_msg** out) {
  if (out == nullptr) return UF_EINVAL;
  return wrap(fbuf::Message(), out);
}

void uf_msg_free(uf_msg* msg) {
  if (msg != nullptr) end_handle("uf_msg_free", msg, kMsgFreed);
}

uf_error uf_msg_append(uf_msg* msg, uf_buf* buf, size_t offset, size_t len) {
  return add("uf_msg_append", msg, buf, offset, len, false);
}

uf_error uf_msg_prepend(uf_msg* msg, uf_buf* buf, size_t offset, size_t len) {
  return add("uf_msg_prepend", msg, buf, offset, len, true);
}

uf_error uf_msg_join(uf_msg* msg, uf_msg* other) {
  if (live(msg) == nullptr || live(other) == nullptr || msg == other) return UF_EINVAL;
  return to_uf(msg->m.append(std::move(other->m)));
}

uf_error uf_msg_split(uf_msg* msg, size_t at, uf_msg** out) {
  if (live(msg) == nullptr || out == nullptr) return UF_EINVAL;
  auto* h = new (std::nothrow) uf_msg;
  if (h == nullptr) return UF_ENOMEM;
  fbuf::Result<fbuf::Message> rest = msg->m.split(at);
  if (!rest) {
    delete h;
    return to_uf(rest.error());
  }
  h->m = std::move(*rest);
  *out = h;
  return UF_OK;
}

uf_error uf_msg_clip(uf_msg* msg, size_t offset, size_t len) {
  if (live(msg) == nullptr) return UF_EINVAL;
  return to_uf(msg->m.clip(offset, len));
}

size_t uf_msg_size(const uf_msg* msg) {
  if (msg == nullptr) return 0;
  return require_live("uf_msg_size", msg)->m.size();
}

size_t uf_msg_slice_count(const uf_msg* msg) {
  if (msg == nullptr) return 0;
  return require_live("uf_msg_slice_count", msg)->m.slice_count();
}

const void* uf_msg_slice(const uf_msg* msg, size_t i, size_t* len) {
  if (len != nullptr) *len = 0;
  if (msg == nullptr || i >= require_live("uf_msg_slice", msg)->m.slice_count()) return nullptr;
  std::span<const std::byte> s = msg->m.slice(i);
  if (len != nullptr) *len = s.size();
  return s.data();
}

size_t uf_msg_iovecs(const uf_msg* msg, struct iovec* iov, size_t max) {
  if (msg == nullptr || iov == nullptr) return 0;
  return require_live("uf_msg_iovecs", msg)->m.iovecs(iov, max);
}

size_t uf_msg_copy_to(const uf_msg* msg, size_t offset, void* dst, size_t len) {
  if (msg == nullptr || dst == nullptr) return 0;
  return require_live("uf_msg_copy_to", msg)->m.copy_to(std::span<std::byte>(static_cast<std::byte*>(dst), len), offset);
}

uf_error uf_msg_send(uf_channel* sender, uf_msg* msg, int64_t timeout_ns) {
  if (live(sender) == nullptr || !sender->sender || live(msg) == nullptr) return UF_EINVAL;
  return to_uf(timeout_ns == 0 ? sender->sender->try_send(std::move(msg->m))
                               : sender->sender->send(std::move(msg->m), to_timeout(timeout_ns)));
}

uf_error uf_msg_receive(uf_channel* receiver, int64_t timeout_ns, uf_msg** out) {
  if (live(receiver) == nullptr || !receiver->receiver || out == nullptr) return UF_EINVAL;
  fbuf::Result<fbuf::Message> r = timeout_ns == 0 ? receiver->receiver.try_receive_message()
                                                  : receiver->receiver.receive_message(to_timeout(timeout_ns));
  if (!r) return to_uf(r.error());
  return wrap(std::move(*r), out);
}

}  // extern "C"

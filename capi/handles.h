// The C API's handles (uf_pool, uf_channel, uf_buf) and the checks that
// make their misuse deterministic. Private to the library.
//
// Handles. Every handle starts with a tag word that says its kind and
// whether it is live. Ending a handle (destroy, close, deallocate, a write
// that consumes it) swaps the tag for a poisoned one, releases what the
// handle held, and puts the emptied handle in its kind's quarantine: the
// last kQuarantine ended handles stay allocated, so a later use of one
// finds the poisoned tag and is reported (uf.h says which calls return
// UF_EINVAL and which abort) instead of reading freed memory.
#pragma once


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
#include "fbuf/uf.h"

namespace fbuf::capi {

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
  kBufInMessage = 0xdead7006,  // consumed by uf_msg_append / uf_msg_prepend
  kMsgLive = 0x75666d31,  // "ufm1"
  kMsgFreed = 0xdead7007,
};

// Ended handles kept per kind before their memory goes back to malloc.
inline constexpr std::size_t kQuarantine = 4096;

}  // namespace fbuf::capi

// The tag is atomic so that two threads ending the same handle cannot both
// succeed (the compare-exchange in end_handle()), and a check racing with
// an end reads one value or the other. It publishes nothing: the payload is
// handed between threads by the caller's own synchronisation, as with any
// C object. So every tag access is relaxed.
struct uf_pool {
  explicit uf_pool(fbuf::Pool p) : pool(std::move(p)) {}
  std::atomic<std::uint32_t> tag{fbuf::capi::kPoolLive};
  std::optional<fbuf::Pool> pool;
};

struct uf_channel {
  std::atomic<std::uint32_t> tag{fbuf::capi::kChannelLive};
  std::optional<fbuf::Sender> sender;  // a sending end
  fbuf::Receiver receiver;             // or a receiving end
};

struct uf_buf {
  explicit uf_buf(fbuf::Buffer b) noexcept : v(std::move(b)) {}
  explicit uf_buf(fbuf::View view) noexcept : v(std::move(view)) {}
  std::atomic<std::uint32_t> tag{fbuf::capi::kBufLive};
  std::variant<fbuf::Buffer, fbuf::View> v;
};

struct uf_msg {
  std::atomic<std::uint32_t> tag{fbuf::capi::kMsgLive};
  fbuf::Message m;
};

namespace fbuf::capi {

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
struct Kind<uf_msg> {
  static constexpr std::uint32_t kLive = kMsgLive;
  static void empty(uf_msg& h) noexcept { h.m.clear(); }
};
template <>
struct Kind<uf_buf> {
  static constexpr std::uint32_t kLive = kBufLive;
  static void empty(uf_buf& h) noexcept { h.v.emplace<fbuf::Buffer>(); }
};

// Reports a call on a handle that is not a live `noun` handle, and aborts.
[[noreturn]] inline void misuse(const char* call, const char* noun, const void* h, std::uint32_t tag) noexcept {
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
    case kBufInMessage: kind = "buffer", ended = "was already consumed by uf_msg_append or uf_msg_prepend"; break;
    case kMsgLive: kind = "message"; break;
    case kMsgFreed: kind = "message", ended = "was already freed"; break;
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
  else if constexpr (std::is_same_v<H, uf_msg>) return "message";
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


}  // namespace fbuf::capi

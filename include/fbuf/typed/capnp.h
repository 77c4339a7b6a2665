// fbuf::typed, Cap'n Proto: a capnp::MessageBuilder whose segments are pool
// buffers, sent without serialising into a separate array, and read in
// place by receivers through a capnp reader over the received bytes.
// Header-only; a program that includes it links Cap'n Proto itself
// (CapnProto::capnp, or `pkg-config capnp`); nothing else in fbuf does.
//
// Sender: CapnpBuilder takes its first segment from the pool (sized by a
// hint) and one more buffer per further segment as the message grows; each
// segment is zeroed before capnp sees it (capnp builds on zeroed words),
// and only it: the rest of the buffer is neither zeroed nor sent.
//
// Receiver: read_capnp() checks what capnp cannot (each segment word-aligned,
// a whole number of words, at most kMaxCapnpSegments), then walks the whole
// message once through a capnp reader with the caller's ReaderOptions:
// every pointer bounds-checked against its segment, far pointers to
// segments that are not there, nesting past nestingLimit, and reads past
// traversalLimitInWords (which is what stops a message that points at the
// same object many times) are refused there, as a kj::Exception caught at
// this boundary. A refused message is Errc::kBadDescriptor, counted in
// TypedStats; its buffers go back to their owner. docs/api.md, "Typed
// messages", has what a passed message may still throw.
#pragma once

#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/pool.h"
#include "fbuf/receiver.h"
#include "fbuf/sender.h"
#include "fbuf/typed/stats.h"

namespace fbuf::typed {

inline constexpr std::size_t kMaxCapnpSegments = Message::kMaxSlices;

struct CapnpBuilderOptions {
  std::size_t first_segment_bytes = 4096;  // the hint; rounded up to whole pages
  std::chrono::nanoseconds allocate_timeout = std::chrono::seconds(1);  // per segment
};

// Builds one message in pool buffers. Owner side only; not thread-safe.
// A segment the pool cannot give (exhausted past allocate_timeout, or
// larger than its largest class) throws Error from the capnp call that
// needed it. After a successful send() the builder must only be destroyed:
// its segments belong to the receivers now.
class CapnpBuilder final : public capnp::MessageBuilder {
 public:
  explicit CapnpBuilder(Pool pool, CapnpBuilderOptions options = {})
      : pool_(std::move(pool)), options_(options) {}

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned minimum_words) override {
    // The first segment as hinted, each further one as large as all before
    // (capnp's own growth), within the pool's largest class unless capnp
    // needs more (then the pool says kTooLarge).
    const std::size_t needed = round_up(std::size_t{minimum_words} * sizeof(capnp::word), kPage);
    const std::size_t wanted = round_up(segments_.empty() ? options_.first_segment_bytes : allocated_, kPage);
    const std::size_t bytes = std::max(needed, std::min(wanted, pool_.max_buffer_size()));
    if (segments_.size() == kMaxCapnpSegments || pending_)
      throw Error(make_error_code(Errc::kTooLarge), "CapnpBuilder: more segments than a Message holds");
    auto b = pool_.allocate(bytes, options_.allocate_timeout);
    if (!b) throw Error(b.error(), "CapnpBuilder: a segment of " + std::to_string(bytes) + " bytes");
    std::memset(b->data(), 0, bytes);
    segments_.push_back(std::move(*b));
    allocated_ += bytes;
    return {reinterpret_cast<capnp::word*>(segments_.back().data()), bytes / sizeof(capnp::word)};
  }

  std::size_t segment_count() const noexcept {
    return pending_ ? pending_->slice_count() : segments_.size();
  }

  // Sends the message, each segment's used words only: one segment as one
  // buffer (Sender::send), several as one aggregate of a slice per segment
  // (Sender::send(Message&&)), which a receiver takes whole or not at all.
  // On failure the segments stay here and send() may be retried.
  std::error_code send(Sender& tx, std::chrono::nanoseconds timeout) noexcept {
    if (segments_.size() == 1 && !pending_) {
      std::size_t used = 0;
      if (!used_bytes(0, used)) return Errc::kInvalidArgument;
      return tx.send(std::move(segments_[0]), used, timeout);
    }
    if (auto ec = to_message()) return ec;
    return tx.send(std::move(*pending_), timeout);
  }

  // The segments as a Message of one slice per segment, to send with other
  // slices (a receiver's read_capnp then takes only these slices). ENOMEM
  // or kInvalidArgument (nothing built); on ENOMEM the segments are lost
  // (they go back to the pool).
  Result<Message> release_message() && noexcept {
    if (auto ec = to_message()) return ec;
    Message m = std::move(*pending_);
    pending_.reset();
    return m;
  }

 private:
  static constexpr std::size_t kPage = 4096;
  static std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }
  // The used bytes of segment `i`, as capnp reports them, after checking
  // that capnp's segment `i` is our buffer `i`.
  bool used_bytes(std::size_t i, std::size_t& used) noexcept {
    if (i >= segments_.size() || !segments_[i]) return false;
    auto out = getSegmentsForOutput();
    if (out.size() != segments_.size() ||
        reinterpret_cast<const std::byte*>(out[i].begin()) != segments_[i].data())
      return false;
    used = out[i].size() * sizeof(capnp::word);
    return true;
  }

  // Moves the segments into pending_, once.
  std::error_code to_message() noexcept {
    if (pending_) return {};
    if (segments_.empty()) return Errc::kInvalidArgument;
    std::vector<std::size_t> used(segments_.size());
    for (std::size_t i = 0; i < segments_.size(); ++i)
      if (!used_bytes(i, used[i])) return Errc::kInvalidArgument;
    Message m;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      if (auto ec = m.append(std::move(segments_[i]), used[i])) {
        segments_.clear();
        return ec;
      }
    }
    segments_.clear();
    pending_.emplace(std::move(m));
    return {};
  }

  Pool pool_;
  CapnpBuilderOptions options_;
  std::vector<Buffer> segments_;
  std::size_t allocated_ = 0;
  std::optional<Message> pending_;  // the segments, once made an aggregate
};

namespace detail {

inline void count_capnp_rejection(TypedStats* stats, const kj::Exception& e) noexcept {
  if (stats == nullptr) return;
  ++stats->rejected;
  std::snprintf(stats->last_reason_text, sizeof stats->last_reason_text, "%s",
                e.getDescription().cStr());
  stats->last_reason = stats->last_reason_text;
}

// Reads every pointer of the message once, through capnp's checked readers
// (each counted against the traversal limit, each struct against the
// nesting limit). Throws kj::Exception at the first thing it refuses.
inline void walk_capnp(capnp::AnyPointer::Reader p);
inline void walk_capnp(capnp::AnyStruct::Reader s) {
  for (auto q : s.getPointerSection()) walk_capnp(q);
}
inline void walk_capnp(capnp::AnyPointer::Reader p) {
  switch (p.getPointerType()) {
    case capnp::PointerType::NULL_:
      // A far pointer to a segment that is not there reads as null here;
      // reading it as a struct refuses it (a true null gives the default).
      p.getAs<capnp::AnyStruct>();
      return;
    case capnp::PointerType::STRUCT:
      walk_capnp(p.getAs<capnp::AnyStruct>());
      return;
    case capnp::PointerType::LIST: {
      auto list = p.getAs<capnp::AnyList>();
      if (list.getElementSize() == capnp::ElementSize::INLINE_COMPOSITE) {
        for (auto s : list.as<capnp::List<capnp::AnyStruct>>()) walk_capnp(s);
      } else if (list.getElementSize() == capnp::ElementSize::POINTER) {
        for (auto q : list.as<capnp::List<capnp::AnyPointer>>()) walk_capnp(q);
      }
      return;
    }
    case capnp::PointerType::CAPABILITY:
      throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                          kj::heapString("capability pointer in a message from a pool"));
  }
}

}  // namespace detail

namespace detail {
struct CapnpAccess;
}

// A received message, validated, read in place. Holds the received buffers
// (they stay mapped and lent until it is destroyed) and a capnp reader over
// them with the ReaderOptions it was validated with.
class CapnpMessage {
 public:
  // The root as `T` (a generated struct type). Reading can still throw
  // kj::Exception for what only the schema knows (a Text without its NUL, a
  // list read as a struct) or past the traversal limit; read() catches it.
  template <class T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }
  capnp::MessageReader& reader() noexcept { return *reader_; }
  std::size_t segment_count() const noexcept { return segments_.size(); }
  std::span<const std::byte> segment(std::size_t i) const noexcept {
    return {reinterpret_cast<const std::byte*>(segments_[i].begin()), segments_[i].size() * sizeof(capnp::word)};
  }
  // Runs fn(*this), turning a kj::Exception into kBadDescriptor (counted).
  template <class Fn>
  std::error_code read(Fn&& fn, TypedStats* stats = nullptr) noexcept {
    try {
      fn(*this);
      return {};
    } catch (const kj::Exception& e) {
      detail::count_capnp_rejection(stats, e);
      return Errc::kBadDescriptor;
    }
  }

  CapnpMessage(CapnpMessage&&) noexcept = default;
  CapnpMessage& operator=(CapnpMessage&&) noexcept = default;

 private:
  friend struct detail::CapnpAccess;
  using Segments = kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>;
  static kj::ArrayPtr<const capnp::word> words(std::span<const std::byte> b) noexcept {
    return {reinterpret_cast<const capnp::word*>(b.data()), b.size() / sizeof(capnp::word)};
  }
  // `view` or `message` holds the segments (the other is empty).
  CapnpMessage(View view, Message message, capnp::ReaderOptions options)
      : view_(std::move(view)), message_(std::move(message)) {
    if (view_) segments_.push_back(words(view_.bytes()));
    for (std::size_t i = 0; i < message_.slice_count(); ++i) segments_.push_back(words(message_.slice(i)));
    reader_ = std::make_unique<capnp::SegmentArrayMessageReader>(Segments(segments_.data(), segments_.size()),
                                                                 options);
  }

  View view_;
  Message message_;
  std::vector<kj::ArrayPtr<const capnp::word>> segments_;  // heap: stays put when moved
  std::unique_ptr<capnp::SegmentArrayMessageReader> reader_;
};

// nestingLimit is capped at this (the validating walk recurses).
inline constexpr int kMaxCapnpNesting = 256;

namespace detail {

struct CapnpAccess {
  static Result<CapnpMessage> open(View view, Message message, capnp::ReaderOptions options,
                                   TypedStats* stats) noexcept {
    const char* why = nullptr;
    const std::size_t n = view ? 1 : message.slice_count();
    if (n == 0) why = "no segments";
    else if (n > kMaxCapnpSegments) why = "more segments than a message may have";
    for (std::size_t i = 0; i < n && !why; ++i) {
      const auto b = view ? view.bytes() : message.slice(i);
      if (b.empty()) why = "empty segment";
      else if (b.size() % sizeof(capnp::word) != 0) why = "segment not a whole number of words";
      else if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(capnp::word) != 0)
        why = "segment not word-aligned";
    }
    if (why) {
      count_rejection(stats, why);
      return Errc::kBadDescriptor;
    }
    options.nestingLimit = std::min(options.nestingLimit, kMaxCapnpNesting);
    try {
      CapnpMessage m(std::move(view), std::move(message), options);
      // A reader of its own for the walk, so that the message's reader
      // starts with its whole traversal budget.
      capnp::SegmentArrayMessageReader check(CapnpMessage::Segments(m.segments_.data(), m.segments_.size()),
                                             options);
      walk_capnp(check.getRoot<capnp::AnyPointer>());
      if (stats) ++stats->accepted;
      return m;
    } catch (const kj::Exception& e) {
      count_capnp_rejection(stats, e);
      return Errc::kBadDescriptor;
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
  }
};

}  // namespace detail

// Checks and validates a received message (see the top of this file): one
// buffer (a View), or an aggregate whose slices are its segments in order.
// Errc::kBadDescriptor, counted in `stats` with the reason, for a message
// refused; its buffers are then dropped (back to their owner).
inline Result<CapnpMessage> read_capnp(View view, capnp::ReaderOptions options = {},
                                       TypedStats* stats = nullptr) noexcept {
  if (!view) return Errc::kInvalidArgument;
  return detail::CapnpAccess::open(std::move(view), Message(), options, stats);
}
inline Result<CapnpMessage> read_capnp(Message message, capnp::ReaderOptions options = {},
                                       TypedStats* stats = nullptr) noexcept {
  return detail::CapnpAccess::open(View(), std::move(message), options, stats);
}

// Receives the next message (one buffer or an aggregate) and reads it:
// the receiver's errors as Receiver::receive_message(), then read_capnp's.
inline Result<CapnpMessage> receive_capnp(Receiver& rx, std::chrono::nanoseconds timeout,
                                          capnp::ReaderOptions options = {}, TypedStats* stats = nullptr) noexcept {
  auto m = rx.receive_message(timeout);
  if (!m) return m.error();
  return read_capnp(std::move(*m), options, stats);
}

}  // namespace fbuf::typed

// fbuf::typed::CapnpBuilder: a capnp::MessageBuilder whose segments are
// pool buffers (the sending side of <fbuf/typed/capnp.h>, which says more).
#pragma once

#include <capnp/message.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/pool.h"
#include "fbuf/sender.h"

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

  // Moves the segments into pending_, once. Building the Message
  // allocates (a small block per slice): ENOMEM loses the segments.
  std::error_code to_message() noexcept {
    if (pending_) return {};
    if (segments_.empty()) return Errc::kInvalidArgument;
    try {
      std::vector<std::size_t> used(segments_.size());
      for (std::size_t i = 0; i < segments_.size(); ++i)
        if (!used_bytes(i, used[i])) return Errc::kInvalidArgument;
      Message m;
      std::error_code ec;
      for (std::size_t i = 0; i < segments_.size() && !ec; ++i) ec = m.append(std::move(segments_[i]), used[i]);
      segments_.clear();
      if (ec) return ec;
      pending_.emplace(std::move(m));
      return {};
    } catch (const std::bad_alloc&) {
      segments_.clear();
      return std::make_error_code(std::errc::not_enough_memory);
    }
  }

  Pool pool_;
  CapnpBuilderOptions options_;
  std::vector<Buffer> segments_;
  std::size_t allocated_ = 0;
  std::optional<Message> pending_;  // the segments, once made an aggregate
};

}  // namespace fbuf::typed

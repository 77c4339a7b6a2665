// The memory of one channel, as each end holds it: a ChannelHeader followed
// by the send slots (and, for a remote channel, the return slots). For a
// receiver in another process it is a shared memfd; for one in the owner's
// process, anonymous memory. Private to the library.
//
// Invariants:
//  - A ChannelMemory's capacities are fixed when it is made (by the owner,
//    or by a receiver from the checked Welcome) and live here, in private
//    memory; the shared header's copies are never read for geometry.
//  - LocalChannel::receiver_gone is read and written with the pool's lock
//    held; LocalChannel::held is a relaxed counter (see there).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "fbuf/base/fd.h"
#include "fbuf/buffer.h"
#include "ipc/layout.h"

namespace fbuf::detail {

class ChannelMemory {
 public:
  ChannelMemory() = default;
  // Adopts `map`, whose header was checked against (or initialised with)
  // these capacities. The capacities are kept here, in private memory, and
  // the header's copies are never read again.
  ChannelMemory(Mapping map, std::uint32_t send_capacity, std::uint32_t return_capacity)
      : map_(std::make_shared<Mapping>(std::move(map))),
        send_capacity_(send_capacity),
        return_capacity_(return_capacity) {}

  // Anonymous memory for an in-process channel, header initialised.
  static ChannelMemory anonymous(std::uint32_t send_capacity);
  // A sealed memfd for a remote channel, header initialised; `fd` receives
  // the memfd to pass to the receiver.
  static ChannelMemory shared(std::uint32_t send_capacity, std::uint32_t return_capacity, UniqueFd& fd,
                              const std::string& name);

  ipc::ChannelHeader* header() const noexcept { return reinterpret_cast<ipc::ChannelHeader*>(map_->data()); }
  Descriptor* send_slots() const noexcept {
    return reinterpret_cast<Descriptor*>(map_->data() + ipc::ChannelHeader::send_slots_offset());
  }
  Descriptor* return_slots() const noexcept {
    return reinterpret_cast<Descriptor*>(map_->data() + ipc::ChannelHeader::return_slots_offset(send_capacity_));
  }
  std::uint32_t send_capacity() const noexcept { return send_capacity_; }
  std::uint32_t return_capacity() const noexcept { return return_capacity_; }
  // Keeps the mapping alive (the pool's return inlet holds one).
  std::shared_ptr<const void> keepalive() const noexcept { return map_; }

 private:
  std::shared_ptr<Mapping> map_;
  std::uint32_t send_capacity_ = 0;
  std::uint32_t return_capacity_ = 0;
};

// Placement-constructs a header with the given capacities at the start of
// `memory` (zeroed and large enough).
ipc::ChannelHeader* init_channel_header(std::byte* memory, std::uint32_t send_capacity,
                                        std::uint32_t return_capacity) noexcept;

// An in-process channel between a Sender and a Receiver of one process.
struct LocalChannel {
  ChannelMemory memory;
  // Set, with the pool's mutex held, when the Receiver is closed; the
  // Sender then stops pushing and the receiver hands back what it left.
  bool receiver_gone = false;
  // Views the receiving thread holds (they go back to the pool directly,
  // not through the ring): with what is queued, the receiver's budget.
  // relaxed everywhere: a count for the slow-receiver policy, read under
  // the pool's lock; a stale value errs by a view being released.
  std::atomic<std::uint32_t> held{0};
  // Whether `held` is kept: only a receiver with a budget needs it (skip or
  // cut-off with receiver_budget > 0), and counting costs the receiving
  // thread two atomic operations per view. Set before the channel is
  // shared, never changed.
  bool count_held = false;
  // The path (docs/design.md, "The path"): views forwarded to this
  // receiver, each sharing the forwarding stage's reference to a buffer of
  // another process's pool, in the order of their descriptors in the ring
  // (whose `pool` is kForwardedLocal). The Sender appends before it
  // publishes; the receiver takes the front for each such descriptor it
  // takes, or drops them all when it closes.
  static constexpr std::uint32_t kForwardedLocal = 1;
  std::mutex forward_mu;
  std::deque<View> forwarded;  // guarded by forward_mu
};

}  // namespace fbuf::detail

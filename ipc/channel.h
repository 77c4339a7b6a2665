// Pieces shared by the sending and receiving ends of a channel. Private to
// the library.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "fbuf/receiver.h"
#include "fbuf/sys.h"
#include "ipc/layout.h"

namespace fbuf::detail {

class PoolCore;

// The memory of one channel: a ChannelHeader followed by the send slots
// (and, for a remote channel, the return slots). In another process's case
// it is a shared memfd; for an in-process channel, anonymous memory.
struct ChannelMemory {
  Mapping map;
  ipc::ChannelHeader* header() const noexcept { return reinterpret_cast<ipc::ChannelHeader*>(map.data()); }
  ipc::Descriptor* send_slots() const noexcept {
    return reinterpret_cast<ipc::Descriptor*>(map.data() + ipc::ChannelHeader::send_slots_offset());
  }
  ipc::Descriptor* return_slots() const noexcept {
    return reinterpret_cast<ipc::Descriptor*>(
        map.data() + ipc::ChannelHeader::return_slots_offset(header()->send_capacity));
  }
};

// Placement-constructs a header with the given capacities at the start of
// `memory` (which must be zeroed and large enough).
ipc::ChannelHeader* init_channel_header(std::byte* memory, std::uint32_t send_capacity,
                                        std::uint32_t return_capacity) noexcept;

// An in-process channel between a Sender and a Receiver of one process.
struct LocalChannel {
  ChannelMemory memory;
  // Set, with the pool's mutex held, when the Receiver is closed; the
  // Sender then stops pushing and the receiver hands back what it left.
  bool receiver_gone = false;
};

// The receiving half, shared by in-process and cross-process receivers.
class ReceiverCore {
 public:
  virtual ~ReceiverCore() = default;

  Result<View> try_receive() noexcept;
  Result<View> receive(std::chrono::nanoseconds timeout) noexcept;
  ReceiverStats stats() const noexcept;
  // The Receiver handle is gone: hand back everything not yet received and
  // tell the sender to stop. Views already out stay valid.
  virtual void close() noexcept = 0;

 protected:
  // True once the sender closed or died.
  virtual bool peer_closed() noexcept = 0;
  // Validates a descriptor from the ring and wraps it in a View.
  virtual Result<View> make_view(const ipc::Descriptor& d) noexcept = 0;

  ipc::ChannelHeader* header_ = nullptr;
  ipc::RingConsumer in_;  // only the receiving thread touches it
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> returned_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

std::shared_ptr<ReceiverCore> make_local_receiver(std::shared_ptr<PoolCore> pool,
                                                  std::shared_ptr<LocalChannel> channel);

}  // namespace fbuf::detail

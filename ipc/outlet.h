// One receiver's end as its Sender sees it: the send ring the Sender
// pushes descriptors into and, for a receiver in another process, the
// pool's return inlet for it. Private to the library.
//
// Invariants:
//  - Every member is guarded by the pool's lock: the send path pushes to
//    all outlets and marks buffers sent in one critical section.
//  - A RemoteOutlet keeps a private shadow of every descriptor it wrote,
//    by ring position. When the receiver detaches, what it left unconsumed
//    is taken from the shadow between the (checked) head it published and
//    the owner's own tail, never from the shared slots.
//  - Geometry (capacities) comes from the owner's private ChannelMemory;
//    the shared header is never read for it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "fbuf/buffers/returns.h"
#include "ipc/channel.h"

namespace fbuf::detail {

class PoolCore;

class Outlet {
 public:
  virtual ~Outlet() = default;
  // False once the receiver is gone, detached or cut off: nothing more is
  // pushed to it.
  virtual bool usable_locked() const noexcept = 0;
  // Writes `d` into the ring (call out.reserve() first); visible to the
  // receiver at out.publish().
  virtual void write_locked(const Descriptor& d) noexcept = 0;
  // Buffers the receiver holds or has queued.
  virtual std::uint32_t outstanding_locked() const noexcept = 0;
  // The receiver broke the protocol (or its budget): stop serving it and
  // take back everything lent to it.
  virtual void cut_off_locked() noexcept = 0;
  // The Sender is going away: the receiver sees end-of-stream after what
  // was published.
  virtual void close_locked() noexcept = 0;
  // The receiver's header, for the owner-written words (sender_closed,
  // cut_off, dropped).
  virtual ipc::ChannelHeader* header() const noexcept = 0;

  RingProducer out;
};

// A receiver in this process: views read the pool's read-only alias and go
// back to the pool directly.
class LocalOutlet final : public Outlet {
 public:
  explicit LocalOutlet(std::shared_ptr<LocalChannel> ch);
  bool usable_locked() const noexcept override { return !ch_->receiver_gone && !cut_; }
  void write_locked(const Descriptor& d) noexcept override { out.write(d); }
  std::uint32_t outstanding_locked() const noexcept override;
  void cut_off_locked() noexcept override;
  void close_locked() noexcept override;
  ipc::ChannelHeader* header() const noexcept override { return ch_->memory.header(); }

 private:
  std::shared_ptr<LocalChannel> ch_;
  bool cut_ = false;
};

// A receiver in another process.
class RemoteOutlet final : public Outlet {
 public:
  // `sock` is the receiver's control socket; `memory` its channel.
  RemoteOutlet(PoolCore& pool, UniqueFd sock, ChannelMemory memory,
               std::shared_ptr<ReturnCounters> counters);

  int fd() const noexcept { return sock_.get(); }
  bool usable_locked() const noexcept override { return inlet_->active_locked(); }
  void write_locked(const Descriptor& d) noexcept override;
  std::uint32_t outstanding_locked() const noexcept override { return inlet_->outstanding_locked(); }
  void cut_off_locked() noexcept override;
  void close_locked() noexcept override;
  ipc::ChannelHeader* header() const noexcept override { return mem_.header(); }

  // The receiver shut its socket for writing: it takes nothing more.
  // What it left in its ring comes back now.
  void detach_locked() noexcept;
  // The receiver's socket hung up (it closed or died): everything lent to
  // it comes back.
  void hang_up_locked() noexcept;
  bool finished_locked() const noexcept { return inlet_->finished_locked(); }

 private:
  PoolCore& pool_;
  UniqueFd sock_;
  ChannelMemory mem_;
  std::shared_ptr<ReturnInlet> inlet_;
  std::vector<Descriptor> shadow_;  // by ring position: what was written there
};

// Tells the receiver that no more will come after what is in its ring.
void mark_sender_closed(ipc::ChannelHeader* h) noexcept;

}  // namespace fbuf::detail

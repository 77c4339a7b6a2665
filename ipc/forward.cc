// The path (docs/design.md, "The path"): a stage forwards a view it holds
// of another process's pool to its own receivers, and the owner of that
// pool grants holder inlets for them.
#include <capnp/message.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/buffers/slice_holder.h"
#include "fbuf/buffers/view_owner.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/outlet.h"
#include "ipc/sender_core.h"
#include "ipc/upstream.h"

namespace fbuf::detail {
namespace {

// A blocked forward re-checks at least this often.
constexpr std::chrono::milliseconds kMaxSleep{20};
// Holder inlets one receiver (or holder) may hold at once: each costs the
// owner a ring memfd and a socket.
constexpr std::uint32_t kMaxHolderGrants = 64;
// An announcement is setup (a round trip to the pool's owner): it may take
// this long even for a send that does not wait.
constexpr std::chrono::seconds kAnnounceTimeout{5};

}  // namespace

std::pair<UniqueFd, std::shared_ptr<ReturnInlet>> SenderCore::grant_holder(int sock, ReturnInlet& requester) {
  // As a receiver's return ring: returns, and the lend records of a holder
  // that forwards on.
  const std::uint32_t ret_cap = ipc::return_ring_capacity(pool_->buffer_count());
  UniqueFd ring_fd;
  ChannelMemory mem = ChannelMemory::shared(ipc::kHolderSendCapacity, ret_cap, ring_fd, service_ + "/holder");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair(holder)");
  UniqueFd own(sv[0]), far(sv[1]);
  // The control thread reads requests from its end without waiting, and
  // answers a holder that does not read without blocking.
  if (::fcntl(own.get(), F_SETFL, O_NONBLOCK) != 0) throw_errno("fcntl(holder socket)");
  UniqueFd peer(::fcntl(own.get(), F_DUPFD_CLOEXEC, 0));
  if (!peer) throw_errno("dup(holder socket)");
  auto inlet = std::make_shared<ReturnInlet>(*pool_, mem.keepalive(), &mem.header()->ret, mem.return_slots(),
                                             ret_cap, std::move(peer), returns_);
  inlet->make_holder(requester.token());
  ipc::HolderGrantInfo info;
  info.return_capacity = ret_cap;
  info.ring_bytes = ipc::ChannelHeader::bytes(ipc::kHolderSendCapacity, ret_cap);
  {
    std::lock_guard lock(pool_->mutex());
    if (closed_) throw_error(Errc::kClosed, "the sender is closing");
    std::uint32_t& grants = requester.grants_locked();
    if (grants >= kMaxHolderGrants)
      throw_error(Errc::kProtocol, "more than " + std::to_string(kMaxHolderGrants) + " holders asked for");
    ++grants;
    pool_->add_inlet_locked(inlet);
    info.token = inlet->token();
  }
  capnp::MallocMessageBuilder m;
  ipc::build_holder_grant(m, info);
  const int fds[ipc::kHolderGrantFds] = {ring_fd.get(), far.get()};
  // On failure the far end closes here: the control thread sees the
  // holder hang up and the (empty) inlet goes.
  (void)ipc::send_message(sock, m, fds);
  return {std::move(own), std::move(inlet)};
}

void SenderCore::drain_returns() noexcept {
  std::lock_guard lock(pool_->mutex());
  pool_->drain_inlets_locked(/*slow=*/true);
}

void SenderCore::on_holder_hang_up(ReturnInlet& holder) noexcept {
  std::lock_guard lock(pool_->mutex());
  holder.drain_locked(false);
  holder.reclaim_all_locked();
  // Its grantor may ask for another in its place.
  if (ReturnInlet* grantor = pool_->find_inlet_locked(holder.grantor_locked()); grantor != nullptr) {
    std::uint32_t& grants = grantor->grants_locked();
    if (grants != 0) --grants;
  }
}

void SenderCore::orphan_holder(ReturnInlet& holder) noexcept {
  // Called with the pool's lock held (Listener::close_remotes_locked()).
  holder.orphan_locked();
}

void SenderCore::announce(const std::shared_ptr<Upstream>& up, Clock::time_point deadline) {
  std::lock_guard forward(forward_mu_);
  for (;;) {
    std::shared_ptr<RemoteOutlet> target;
    std::uint32_t slot = 0;
    {
      std::lock_guard lock(pool_->mutex());
      for (auto& o : outlets_) {
        auto r = std::dynamic_pointer_cast<RemoteOutlet>(o);
        if (r && r->usable_locked() && r->forward_slot_locked(up.get()) == 0) {
          target = std::move(r);
          slot = static_cast<std::uint32_t>(target->forward_slots.size() + 1);
          break;
        }
      }
    }
    if (!target) return;
    if (slot > ipc::kMaxPoolSlots)
      throw_error(Errc::kInvalidArgument, "more than " + std::to_string(ipc::kMaxPoolSlots) +
                                              " upstream pools forwarded on one connection");
    HolderGrant g = up->request_holder(deadline);
    ipc::PoolAnnounceInfo a;
    a.slot = slot;
    a.pool = up->pool_info();
    a.pool.send_capacity = ipc::kHolderSendCapacity;
    a.pool.return_capacity = g.info.return_capacity;
    a.pool.ring_bytes = g.info.ring_bytes;
    a.token = g.info.token;
    capnp::MallocMessageBuilder m;
    ipc::build_pool_announce(m, a);
    const int fds[ipc::kPoolAnnounceFds] = {up->pool_fd(), up->doorbell_fd(), g.ring.get(), g.sock.get()};
    // Once sent, this process's copies of the holder's fds close (at the
    // end of this iteration): the receiver's copies are the only ones.
    if (auto ec = ipc::send_message(target->fd(), m, fds); ec) {
      // The receiver's socket is full or gone: it is not served forwarded
      // views. The holder just granted goes when its socket closes.
      std::lock_guard lock(pool_->mutex());
      target->cut_off_locked();
      ++counters_.receivers_lost;
      continue;
    }
    std::lock_guard lock(pool_->mutex());
    target->forward_slots.push_back({up, g.info.token});
  }
}

std::error_code SenderCore::send_view(const View& view, std::chrono::nanoseconds timeout) noexcept {
  ViewOwner* owner = ViewAccess::owner(view);
  if (owner == nullptr) return Errc::kInvalidArgument;
  std::shared_ptr<Upstream> up = owner->upstream();
  if (!up) {
    // A view of this Sender's own pool (from a connect_local() of another
    // Sender of it) is sent on as the pool's own buffer once more; of
    // another pool of this process: not forwardable (docs/api.md).
    if (owner->local_pool() != pool_.get()) return Errc::kInvalidArgument;
    return send_own_view(view, timeout);
  }
  const std::uint32_t index = view.index(), generation = ViewAccess::generation(view);
  std::optional<std::uint32_t> offset = up->offset_in_buffer(index, view.data(), view.size());
  if (!offset) return Errc::kInvalidArgument;
  const auto deadline = deadline_after(timeout);
  for (;;) {
    try {
      announce(up, std::max(deadline, Clock::now() + kAnnounceTimeout));
    } catch (const Error& e) {
      return e.code();
    } catch (...) {
      return Errc::kProtocol;
    }
    std::shared_ptr<Outlet> blocked;
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) return Errc::kClosed;
      prune_locked();
      if (outlets_.empty()) return Errc::kNoReceivers;
      bool missing = false;
      for (auto& o : outlets_) {
        // A receiver in this process needs no announcement: it shares the
        // view this stage holds.
        auto* r = dynamic_cast<RemoteOutlet*>(o.get());
        if (r != nullptr && r->forward_slot_locked(up.get()) == 0) missing = true;
        RingStatus st = o->out.reserve(1);
        if (st == RingStatus::kCorrupt) {
          o->cut_off_locked();
          ++counters_.receivers_lost;
        } else if (st == RingStatus::kFull && !blocked) {
          blocked = o;
        }
      }
      if (!missing && !blocked) {
        prune_locked();
        std::uint64_t delivered = 0;
        std::error_code last;
        for (auto& o : outlets_) {
          auto* r = dynamic_cast<RemoteOutlet*>(o.get());
          if (r == nullptr) {
            // A receiver in this process: a View sharing this stage's
            // reference (the owner sees one holder, this process, until
            // the last of them is released); it reads the same mapping.
            auto* l = static_cast<LocalOutlet*>(o.get());
            View shared = ViewAccess::share(view, view.data(), view.size());
            if (!shared || !l->park_locked(std::span<View>(&shared, 1))) {
              last = std::make_error_code(std::errc::not_enough_memory);
              o->count_dropped_locked(1);
              ++counters_.dropped;
              continue;
            }
            l->write_locked(Descriptor{LocalChannel::kForwardedLocal, index, generation, *offset,
                                       static_cast<std::uint32_t>(view.size()), 0, sequence_++},
                            Clock::now());
            o->publish_locked();
            o->count_delivered_locked(1);
            ++delivered;
            continue;
          }
          const std::uint32_t slot = r->forward_slot_locked(up.get());
          // The lend record goes first: by the time the receiver can
          // return the view, its owner can see who holds it.
          if (auto ec = up->lend(index, generation, r->forward_slots[slot - 1].token, deadline); ec) {
            last = timeout.count() <= 0 ? make_error_code(Errc::kWouldBlock) : ec;
            r->count_dropped_locked(1);
            ++counters_.dropped;
            continue;
          }
          r->write_forward_locked(
              Descriptor{slot, index, generation, *offset, static_cast<std::uint32_t>(view.size()), 0, sequence_++});
          r->publish_locked();
          r->count_delivered_locked(1);
          ++delivered;
        }
        if (delivered == 0) return last ? last : make_error_code(Errc::kNoReceivers);
        ++counters_.sent;
        counters_.delivered += delivered;
        return {};
      }
    }
    if (!blocked) continue;  // a receiver connected meanwhile: announce to it
    if (timeout.count() <= 0) return Errc::kWouldBlock;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = blocked->out.indices();
    sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
      std::lock_guard lock(pool_->mutex());
      return !blocked->usable_locked() || blocked->out.reserve(1) != RingStatus::kFull;
    });
  }
}

std::error_code SenderCore::send_own_view(const View& view, std::chrono::nanoseconds timeout) noexcept {
  const std::uint32_t index = view.index(), generation = ViewAccess::generation(view);
  if (index >= pool_->buffer_count()) return Errc::kInvalidArgument;
  const std::byte* start = pool_->reader_base() + pool_->buffer_offset(index);
  if (view.data() < start || view.size() > pool_->buffer_capacity(index) ||
      static_cast<std::size_t>(view.data() - start) > pool_->buffer_capacity(index) - view.size())
    return Errc::kInvalidArgument;
  const auto offset = static_cast<std::uint32_t>(view.data() - start);
  const auto deadline = deadline_after(timeout);
  for (;;) {
    std::shared_ptr<Outlet> blocked;
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) return Errc::kClosed;
      prune_locked();
      if (outlets_.empty()) return Errc::kNoReceivers;
      for (auto& o : outlets_) {
        // A receiver in another process holds each buffer once per
        // generation (its LentSet): one that holds this one already (this
        // Sender sent it to it) cannot be lent it again.
        if (auto* r = dynamic_cast<RemoteOutlet*>(o.get()); r && r->inlet()->holds_locked(index, generation)) {
          r->collect_returns_locked();  // it may have returned it already
          if (r->inlet()->holds_locked(index, generation)) return Errc::kInvalidArgument;
        }
        RingStatus st = o->out.reserve(1);
        if (st == RingStatus::kCorrupt) {
          o->cut_off_locked();
          ++counters_.receivers_lost;
        } else if (st == RingStatus::kFull && !blocked) {
          blocked = o;
        }
      }
      if (!blocked) {
        prune_locked();
        if (outlets_.empty()) return Errc::kNoReceivers;
        // Each receiver is one more holder of the buffer, counted by the
        // pool as for any send; a remote one in its own inlet's LentSet
        // (write_locked), which its hang-up reclaims. The caller's view
        // holds a reference, so the buffer is in flight at `generation`.
        const auto now = Clock::now();
        const std::uint64_t sequence = sequence_++;
        std::uint64_t delivered = 0;
        for (auto& o : outlets_) {
          if (!pool_->add_ref_locked(index, generation)) return Errc::kInvalidArgument;
          const auto length = static_cast<std::uint32_t>(view.size());
          o->write_locked(Descriptor{0, index, generation, offset, length, 0, sequence}, now);
          o->publish_locked();
          o->count_delivered_locked(1);
          ++delivered;
        }
        ++counters_.sent;
        counters_.delivered += delivered;
        return {};
      }
    }
    if (timeout.count() <= 0) return Errc::kWouldBlock;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = blocked->out.indices();
    sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
      std::lock_guard lock(pool_->mutex());
      return !blocked->usable_locked() || blocked->out.reserve(1) != RingStatus::kFull;
    });
  }
}

std::error_code SenderCore::send_forwarded(Message& message, std::chrono::nanoseconds timeout) noexcept {
  std::span<const MessageAccess::Slice> in = MessageAccess::slices(message);
  const std::size_t n = in.size();
  if (n == 0 || n > options_.ring_capacity) return Errc::kInvalidArgument;
  // What each slice becomes: a Buffer slice of this pool (up == nullptr)
  // or a range of a view of an upstream pool, with where it starts within
  // its buffer.
  struct Part {
    std::shared_ptr<Upstream> up;
    std::uint32_t index = 0, generation = 0, offset = 0, length = 0;
  };
  Part parts[Message::kMaxSlices];
  OutSlice own[Message::kMaxSlices];
  std::uint32_t own_indices[Message::kMaxSlices];
  std::size_t owned = 0;
  std::shared_ptr<Upstream> ups[Message::kMaxSlices];
  std::size_t up_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    SliceHolder& h = *in[i].holder;
    Part& p = parts[i];
    p.length = static_cast<std::uint32_t>(in[i].length);
    if (h.buffer) {
      // As in a message of Buffers only: handed over whole, of this pool.
      if (in[i].holder.use_count() != 1) return Errc::kInvalidArgument;
      PoolCore::BufferRef ref = PoolCore::inspect(h.buffer);
      if (ref.pool != pool_.get()) return Errc::kInvalidArgument;
      p.index = ref.index;
      own[owned] = OutSlice{&h.buffer, static_cast<std::uint32_t>(in[i].offset), p.length};
      own_indices[owned++] = ref.index;
      continue;
    }
    ViewOwner* owner = ViewAccess::owner(h.view);
    // A view of this process's own pool has no owner elsewhere to count
    // its holders: not forwardable (as send(const View&)).
    p.up = owner != nullptr ? owner->upstream() : nullptr;
    if (!p.up) return Errc::kUnsupported;
    p.index = h.view.index();
    p.generation = ViewAccess::generation(h.view);
    std::optional<std::uint32_t> at = p.up->offset_in_buffer(p.index, in[i].data, in[i].length);
    if (!at) return Errc::kInvalidArgument;
    p.offset = *at;
    // A receiver takes each buffer once per message (ChainCheck): two
    // ranges of one view cannot travel in one message.
    for (std::size_t j = 0; j < i; ++j)
      if (parts[j].up == p.up && parts[j].index == p.index) return Errc::kInvalidArgument;
    if (std::find(ups, ups + up_count, p.up) == ups + up_count) ups[up_count++] = p.up;
  }
  const auto deadline = deadline_after(timeout);
  for (;;) {
    // Every pool the message forwards from reaches every receiver before
    // anything is written (a round trip to its owner the first time).
    try {
      for (std::size_t u = 0; u < up_count; ++u) announce(ups[u], std::max(deadline, Clock::now() + kAnnounceTimeout));
    } catch (const Error& e) {
      return e.code();
    } catch (...) {
      return Errc::kProtocol;
    }
    std::shared_ptr<Outlet> blocked;
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) return Errc::kClosed;
      prune_locked();
      if (outlets_.empty()) return Errc::kNoReceivers;
      bool missing = false;
      for (auto& o : outlets_) {
        // A receiver in this process needs no announcement (it shares the
        // views this stage holds).
        auto* r = dynamic_cast<RemoteOutlet*>(o.get());
        for (std::size_t u = 0; r != nullptr && u < up_count; ++u)
          if (r->forward_slot_locked(ups[u].get()) == 0) missing = true;
        RingStatus st = o->out.reserve(static_cast<std::uint32_t>(n));
        if (st == RingStatus::kCorrupt) {
          o->cut_off_locked();
          ++counters_.receivers_lost;
        } else if (st == RingStatus::kFull && !blocked) {
          blocked = o;
        }
      }
      if (!missing && !blocked) {
        prune_locked();
        if (outlets_.empty()) return Errc::kNoReceivers;
        const auto receivers = static_cast<std::uint32_t>(outlets_.size());
        // The lend records of every forwarded slice, for every receiver,
        // before anything is published: a receiver can return a slice as
        // soon as it sees the tail, and its owner must know who holds it
        // by then. A record that cannot be written (the owner does not
        // drain) fails the whole message; records already written stay
        // counted at their owner until that receiver's holder goes
        // (docs/design.md, "Messages with forwarded slices").
        for (auto& o : outlets_) {
          auto* r = dynamic_cast<RemoteOutlet*>(o.get());
          if (r == nullptr) continue;
          for (std::size_t i = 0; i < n; ++i) {
            const Part& p = parts[i];
            if (!p.up) continue;
            const std::uint32_t slot = r->forward_slot_locked(p.up.get());
            if (auto ec = p.up->lend(p.index, p.generation, r->forward_slots[slot - 1].token, deadline); ec)
              return timeout.count() <= 0 ? make_error_code(Errc::kWouldBlock) : ec;
          }
        }
        // A receiver in this process gets, for each forwarded slice, a View
        // of its range sharing this stage's reference, parked before any
        // descriptor is written; all or nothing.
        std::size_t forwarded = 0;
        for (std::size_t i = 0; i < n; ++i) forwarded += parts[i].up ? 1 : 0;
        auto unpark = [&](std::size_t upto) {
          for (std::size_t k = 0; k < upto; ++k)
            if (auto* l = dynamic_cast<LocalOutlet*>(outlets_[k].get()); l != nullptr) l->unpark_locked(forwarded);
        };
        if (forwarded != 0) {
          for (std::size_t k = 0; k < outlets_.size(); ++k) {
            auto* l = dynamic_cast<LocalOutlet*>(outlets_[k].get());
            if (l == nullptr) continue;
            View shares[Message::kMaxSlices];
            std::size_t m = 0;
            for (std::size_t i = 0; i < n; ++i) {
              if (!parts[i].up) continue;
              shares[m] = ViewAccess::share(in[i].holder->view, in[i].data, in[i].length);
              if (!shares[m++]) break;
            }
            if (m != forwarded || !shares[m - 1] || !l->park_locked(std::span<View>(shares, m))) {
              unpark(k);
              return std::make_error_code(std::errc::not_enough_memory);
            }
          }
        }
        // This pool's slices: the sender's write access ends before any
        // receiver can see them.
        if (std::error_code ec = pool_->guard_locked(std::span<const std::uint32_t>(own_indices, owned)); ec) {
          unpark(outlets_.size());
          return ec;
        }
        const auto now = Clock::now();
        for (std::size_t i = 0, b = 0; i < n; ++i) {
          const Part& p = parts[i];
          const std::uint32_t flags = i + 1 < n ? kMoreFollows : 0;
          const std::uint64_t sequence = sequence_++;
          for (auto& o : outlets_) {
            auto* r = dynamic_cast<RemoteOutlet*>(o.get());
            if (!p.up) {
              o->write_locked(describe_locked(own[b], flags, sequence, *o), now);
            } else if (r != nullptr) {
              r->write_forward_locked(Descriptor{r->forward_slot_locked(p.up.get()), p.index, p.generation, p.offset,
                                                 p.length, flags, sequence});
            } else {
              // The parked view is taken for it; the index names the
              // slice, unique within the message as a receiver checks.
              o->write_locked(Descriptor{LocalChannel::kForwardedLocal, static_cast<std::uint32_t>(i), p.generation,
                                         p.offset, p.length, flags, sequence},
                              now);
            }
          }
          if (!p.up) ++b;
        }
        for (auto& o : outlets_) {
          o->publish_locked();
          o->count_delivered_locked(n);
        }
        for (std::size_t b = 0; b < owned; ++b) pool_->mark_sent_locked(*own[b].buffer, receivers);
        counters_.sent += n;
        counters_.delivered += n * receivers;
        break;
      }
    }
    if (!blocked) continue;  // a receiver connected meanwhile: announce to it
    if (timeout.count() <= 0) return Errc::kWouldBlock;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = blocked->out.indices();
    sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
      std::lock_guard lock(pool_->mutex());
      return !blocked->usable_locked() || blocked->out.reserve(static_cast<std::uint32_t>(n)) != RingStatus::kFull;
    });
  }
  // The Buffers went to the receivers; the views this stage held go back
  // upstream as the message lets them go (each receiver's hold is counted
  // at the owner by its lend record).
  MessageAccess::forget(message);
  return {};
}

}  // namespace fbuf::detail

namespace fbuf {

std::error_code Sender::try_send(const View& view) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send_view(view, std::chrono::nanoseconds(0));
}

std::error_code Sender::send(const View& view, std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send_view(view, timeout);
}

}  // namespace fbuf

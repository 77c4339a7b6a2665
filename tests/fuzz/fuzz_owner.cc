// libFuzzer target for the owner's side of remote channels: a real pool and
// sender (fbuf/buffers/pool_core, returns, lent_set; ipc/sender, outlet,
// handshake) driven step by step, in one thread, against up to three
// receivers in the same process that speak the protocol by hand and may lie.
//
// The owner is a SenderCore without a service name (no control thread); the
// target plays its control thread instead, doing exactly what
// ipc/listener.cc does for one connection (Hello -> check_room ->
// add_remote, or a Reject; EPOLLHUP -> on_hang_up; end-of-file or RDHUP ->
// on_detach), but at the step the input chooses. So every interleaving of a
// receiver's writes with the owner's drain, detach, hang-up, cut-off and
// handshake is reproducible from the input alone.
//
// Input: two configuration bytes, then records of an op byte and its
// arguments until the input ends (OwnerOp in fuzz_input.h):
//  byte 0: policy = b % 3 (volatile, read_only, copy_on_write); bit 2:
//          eager_restore; ring capacity = 1 << ((b >> 3) & 3) (1..8)
//  byte 1: two size classes, 1 page x (4 + b % 5) and 3 pages x
//          (4 + b / 5 % 5) buffers: 8..16 in all
//
// A receiver is honest until the input makes it write anything into its
// channel memory other than what the protocol says, forge a return, or
// until the owner cuts it off. For honest receivers the target keeps an
// exact model (what is queued in its ring, what it holds) and checks after
// every step, without draining anything:
//  - every buffer it holds or has queued still carries the tag the owner
//    wrote when sending it (read through the receiver's read-only mapping):
//    the buffer was not handed out again;
//  - the owner's record of what it lent (outstanding_locked()) equals
//    queued + held + returns pushed and not yet collected, and the send
//    ring holds exactly what is queued; it was never cut off;
//  - what it pops is the next buffer sent to it, unchanged;
//  - its returns always fit its return ring.
// And at each drain op (these drain returns, so they are ops of their own):
//  - Pool stats: free + allocated + in_flight == total; allocated is what
//    the owner holds unsent; in_flight covers every honest holding;
//  - Sender stats count exactly the sends and deliveries made;
//  - allocating every free buffer never yields one an honest receiver
//    holds or has queued, and yields exactly stats().free buffers.
// A send succeeds, blocks or finds no receiver exactly as the honest
// receivers' rings say; a join is admitted exactly when there is room; the
// Welcome and the channel memory it names are what the pool promises.
// After the script every receiver closes, the control thread handles every
// hang-up, the sender goes, and the pool, drained, is all free.
// docs/fuzzing.md (fuzz_owner) lists the operations and checks in full.
#include <capnp/message.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/buffers/slice_holder.h"
#include "fbuf/message.h"
#include "fbuf/pool.h"
#include "fbuf/sender.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"
#include "ipc/layout.h"
#include "ipc/outlet.h"
#include "ipc/sender_core.h"
#include "ipc/validate.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fbuf::Buffer;
using fbuf::Errc;
using fbuf::Pool;
using fbuf::detail::ChannelMemory;
using fbuf::detail::Descriptor;
using fbuf::detail::Mapping;
using fbuf::detail::PoolCore;
using fbuf::detail::RemoteOutlet;
using fbuf::detail::RingConsumer;
using fbuf::detail::RingProducer;
using fbuf::detail::RingStatus;
using fbuf::detail::SenderCore;
using fbuf::detail::UniqueFd;
using namespace fbuf::fuzz;  // the op codes

constexpr std::size_t kPeers = 3;         // receiver slots (max_receivers too)
constexpr std::size_t kMaxOwnerHeld = 4;  // buffers the owner keeps unsent
constexpr std::size_t kHistory = 64;      // recent sends, for forged descriptors

// One buffer as sent: what the descriptor says and the tag the owner wrote
// at its first bytes.
struct Sent {
  std::uint32_t index;
  std::uint32_t generation;
  std::uint32_t length;
  std::uint64_t sequence;  // the descriptor's per-sender number
  std::uint64_t serial;    // unique per send in this run; in the tag
  std::uint32_t flags = 0; // kMoreFollows on all but the last slice of a message
};

// Written at offset 0 of every buffer the owner sends or sweeps.
struct Tag {
  std::uint32_t index;
  std::uint32_t generation;
  std::uint64_t serial;
};
constexpr std::uint64_t kSweepSerial = ~std::uint64_t{0};

bool same_tag(const Tag& t, const Sent& s) {
  return t.index == s.index && t.generation == s.generation && t.serial == s.serial;
}

// A receiver, from its own side: what it mapped and what it did.
struct Peer {
  bool present = false;
  bool honest = false;
  bool shut = false;      // shutdown(SHUT_WR): it takes nothing more
  bool detached = false;  // the owner handled that
  std::uint64_t id = 0;
  UniqueFd sock;
  fbuf::ipc::WelcomeInfo info;
  fbuf::ipc::PoolGeometry geometry;
  Mapping pool_map;  // read-only
  Mapping bell_map;
  ChannelMemory ring;
  fbuf::ipc::ChannelHeader* header = nullptr;
  RingConsumer in;
  RingProducer out;
  std::deque<Sent> queued;  // honest: exactly what its send ring holds
  std::vector<Sent> held;   // taken and not returned
  std::weak_ptr<RemoteOutlet> outlet;  // the owner's end, while it has one

  fbuf::detail::DoorbellHeader* bell() const {
    return reinterpret_cast<fbuf::detail::DoorbellHeader*>(bell_map.data());
  }
};

// One connection as the control thread holds it (Listener::remotes_).
struct Remote {
  int fd;
  std::shared_ptr<RemoteOutlet> outlet;
  bool disarmed;  // after a detach only a hang-up is of interest
  std::uint64_t peer_id;
};

class Script {
 public:
  explicit Script(Input& in) : in_(in) {
    const auto config = in_.take<std::uint8_t>();
    const auto counts = in_.take<std::uint8_t>();
    page_ = fbuf::detail::page_size();
    fbuf::PoolOptions po;
    po.name = "fuzz-owner";
    po.policy = static_cast<fbuf::Policy>(config % 3);
    po.eager_restore = (config & 4) != 0;
    // Sealed copies off: the model follows each sent buffer by its own
    // index, and the choice must come from the input, not a calibration.
    po.sealed_copies = fbuf::SealedCopies::kNever;
    po.classes = {{page_, 4u + counts % 5u}, {3 * page_, 4u + counts / 5u % 5u}};
    capacity_ = 1u << ((config >> 3) & 3);
    pool_.emplace(po);
    core_ = fbuf::detail::PoolAccess::core(*pool_);
    total_ = core_->buffer_count();
  }

  void run() {
    while (!in_.empty()) {
      const auto op = static_cast<OwnerOp>(in_.take<std::uint8_t>() % kOwnerOpCount);
      step(op);
      check_step();
    }
    finish();
  }

 private:
  // --- The owner. ---

  SenderCore& sender() {
    if (!sender_) {
      sender_ = std::make_unique<SenderCore>(*pool_, std::string(),
                                             fbuf::SenderOptions{.ring_capacity = capacity_, .max_receivers = kPeers});
      sent_ = delivered_ = connected_ = sequence_ = 0;
    }
    return *sender_;
  }

  std::size_t class_size(unsigned k) const { return k == 0 ? page_ : 3 * page_; }

  void tag(Buffer& b, std::uint64_t serial) {
    const auto ref = PoolCore::inspect(b);
    Tag t{ref.index, ref.generation, serial};
    std::memcpy(b.data(), &t, sizeof t);  // faults if handed out still protected
  }

  // Whether the owner still serves this receiver.
  bool usable(const Remote& r) {
    std::lock_guard lock(core_->mutex());
    return r.outlet->usable_locked();
  }
  bool usable(const Peer& p) {
    auto o = p.outlet.lock();
    if (!o) return false;
    std::lock_guard lock(core_->mutex());
    return o->usable_locked();
  }

  void send_buffers(std::uint8_t arg) {
    SenderCore& s = sender();
    const std::size_t n = 1 + (arg & 1u);
    const std::size_t size = class_size((arg >> 1) & 1u);
    std::vector<Buffer> bufs;
    if ((arg & 4) != 0)
      while (bufs.size() < n && !owner_held_.empty()) {
        bufs.push_back(std::move(owner_held_.front()));
        owner_held_.erase(owner_held_.begin());
      }
    while (bufs.size() < n) {
      auto r = core_->try_allocate(size);
      if (!r) {
        FUZZ_CHECK(r.error() == make_error_code(Errc::kWouldBlock));
        break;
      }
      bufs.push_back(std::move(*r));
    }
    if (bufs.empty()) return;
    std::vector<std::size_t> lengths;
    std::vector<Sent> sent;
    for (auto& b : bufs) {
      const auto ref = PoolCore::inspect(b);
      const std::size_t length = std::min(b.capacity(), sizeof(Tag) + ((arg >> 3) & 15u) * 256u);
      lengths.push_back(length);
      sent.push_back(Sent{ref.index, ref.generation, static_cast<std::uint32_t>(length), 0, ++serial_});
      tag(b, sent.back().serial);
    }
    for (std::size_t i = 0; i < sent.size(); ++i) sent[i].sequence = sequence_ + i;
    // Bit 7 without bit 6: the buffers go as one aggregate (a chain).
    const bool as_message = (arg & 0xc0) == 0x80;
    if (as_message)
      for (std::size_t i = 0; i + 1 < sent.size(); ++i) sent[i].flags = fbuf::ipc::kMoreFollows;
    // What the rings allow. Each connection the owner has is served, its
    // receiver present or not (a closed one is served until its hang-up
    // is handled).
    bool honest_full = false, all_honest = true, served_honest = true, any_usable = false;
    std::vector<std::uint64_t> were_usable;
    for (auto& r : remotes_) {
      Peer* p = peer_of(r.peer_id);
      const bool honest = p != nullptr && p->honest;
      if (!usable(r)) {
        all_honest = false;  // not served: its ring must not block a send
        continue;
      }
      any_usable = true;
      if (honest) {
        were_usable.push_back(r.peer_id);
        if (p->queued.size() + bufs.size() > capacity_) honest_full = true;
      } else {
        all_honest = served_honest = false;
      }
    }

    // With both top bits, a timed send (1 ms): it sleeps only on a full
    // ring, which nobody in this thread will drain, so it times out.
    const bool timed = (arg & 0xc0) == 0xc0;
    std::error_code ec;
    if (as_message) {
      fbuf::Message m;
      for (std::size_t i = 0; i < bufs.size(); ++i) FUZZ_CHECK(!m.append(std::move(bufs[i]), lengths[i]));
      ec = s.send(m, std::chrono::nanoseconds(0));
      // All or nothing: sent, the message is empty; not sent, every
      // buffer is still in it, whole, and comes back out to the owner.
      const auto slices = fbuf::detail::MessageAccess::slices(m);
      FUZZ_CHECK(ec ? slices.size() == bufs.size() : m.empty());
      for (std::size_t i = 0; ec && i < slices.size(); ++i) {
        FUZZ_CHECK(slices[i].holder->buffer && slices[i].length == lengths[i]);
        bufs[i] = std::move(slices[i].holder->buffer);
      }
    } else {
      ec = s.send(bufs, lengths,
                  timed ? std::chrono::nanoseconds(std::chrono::milliseconds(1)) : std::chrono::nanoseconds(0));
    }

    if (!ec) {
      std::size_t receivers = 0;
      for (auto& r : remotes_) {
        if (!usable(r)) continue;
        ++receivers;
        if (Peer* p = peer_of(r.peer_id)) {
          p->queued.insert(p->queued.end(), sent.begin(), sent.end());
          if (p->honest) FUZZ_CHECK(p->queued.size() <= capacity_);
        }
      }
      for (auto& x : sent) remember(x);
      sequence_ += sent.size();
      // An honest receiver is never cut off by a send.
      for (std::uint64_t id : were_usable) FUZZ_CHECK(usable(*peer_of(id)));
      FUZZ_CHECK(!honest_full);
      FUZZ_CHECK(receivers > 0);
      for (auto& b : bufs) FUZZ_CHECK(!b);  // handed over
      sent_ += sent.size();
      delivered_ += sent.size() * receivers;
      FUZZ_CHECK(s.receiver_count() == receivers);
      return;
    }
    if (bufs.size() <= capacity_ && ec == make_error_code(timed ? Errc::kTimedOut : Errc::kWouldBlock)) {
      // Some ring was full: an honest one if the owner serves only honest
      // receivers (a receiver no longer served never blocks a send).
      FUZZ_CHECK(any_usable);
      if (all_honest || served_honest) FUZZ_CHECK(honest_full);
    } else if (bufs.size() > capacity_) {
      FUZZ_CHECK(ec == make_error_code(Errc::kInvalidArgument));  // more than a ring holds
    } else if (ec == make_error_code(Errc::kNoReceivers)) {
      // Every receiver the owner still served was cut off on the way
      // (corrupt heads), and none of them was honest.
      FUZZ_CHECK(were_usable.empty());
      for (auto& r : remotes_) FUZZ_CHECK(!usable(r));
    } else {
      std::fprintf(stderr, "send: %s\n", ec.message().c_str());
      FUZZ_CHECK(false);
    }
    // Unsent: the owner keeps some, the rest go back to the pool.
    for (auto& b : bufs) {
      FUZZ_CHECK(static_cast<bool>(b));
      if (owner_held_.size() < kMaxOwnerHeld) owner_held_.push_back(std::move(b));
    }
  }

  void remember(const Sent& s) {
    if (history_.size() == kHistory) history_.erase(history_.begin());
    history_.push_back(s);
  }

  void hold_buffer(std::uint8_t arg) {
    auto r = core_->try_allocate(class_size(arg & 1u));
    if (!r) {
      FUZZ_CHECK(r.error() == make_error_code(Errc::kWouldBlock));
      return;
    }
    tag(*r, kSweepSerial);
    if (owner_held_.size() == kMaxOwnerHeld) owner_held_.erase(owner_held_.begin());  // unsent: back to the pool
    owner_held_.push_back(std::move(*r));
  }

  Peer* peer_of(std::uint64_t id) {
    for (auto& p : peers_)
      if (p.present && p.id == id) return &p;
    return nullptr;
  }

  // Listener::on_remote for one connection.
  void control_events(std::uint8_t which) {
    if (remotes_.empty()) return;
    const std::size_t i = which % remotes_.size();
    Remote& r = remotes_[i];
    pollfd pf{r.fd, static_cast<short>(r.disarmed ? 0 : (POLLIN | POLLRDHUP)), 0};
    if (::poll(&pf, 1, 0) <= 0) return;
    bool finished = false;
    Peer* p = peer_of(r.peer_id);
    if ((pf.revents & (POLLHUP | POLLERR)) != 0) {
      sender().on_hang_up(*r.outlet);
      finished = true;
      // Only a receiver that closed, or one the owner shut out, hangs up.
      FUZZ_CHECK(p == nullptr || !p->honest);
    } else if (!r.disarmed) {
      fbuf::ipc::Datagram dg;
      std::error_code ec = fbuf::ipc::receive_message(r.fd, dg, std::chrono::nanoseconds(0));
      if (ec == make_error_code(Errc::kPeerGone) || (pf.revents & POLLRDHUP) != 0) {
        finished = sender().on_detach(*r.outlet);
        if (!finished) r.disarmed = true;
        if (p != nullptr && p->honest) {
          // What it left queued came back from the owner's shadow; what it
          // holds stays lent until it returns it or hangs up.
          FUZZ_CHECK(p->shut);
          p->queued.clear();
          p->detached = true;
          FUZZ_CHECK(p->header->cut_off.load() == 0);
          // The detach collected every pending return first.
          FUZZ_CHECK(p->out.tail() == p->header->ret.head.load());
          FUZZ_CHECK(finished == p->held.empty());
        }
      } else if (!ec) {
        sender().count_rejected_handshake();  // a message after Hello
      }
    }
    if (finished) remotes_.erase(remotes_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  void cut_off(std::uint8_t which) {
    if (remotes_.empty()) return;
    Remote& r = remotes_[which % remotes_.size()];
    {
      std::lock_guard lock(core_->mutex());
      r.outlet->cut_off_locked();
    }
    // Cut off is the owner's verdict: what the receiver holds is forfeit.
    if (Peer* p = peer_of(r.peer_id)) {
      p->honest = false;
      FUZZ_CHECK(p->header->cut_off.load() == 1);
      FUZZ_CHECK(p->header->sender_closed.load() == 1);
    }
  }

  void close_sender() {
    if (!sender_) return;
    // ~SenderCore closes the outlets it sends to; Listener::close_remotes_locked
    // then closes every connection, detached ones included.
    sender_.reset();
    {
      std::lock_guard lock(core_->mutex());
      for (auto& r : remotes_) r.outlet->close_locked();
    }
    // Every receiver still connected is told the stream ends.
    for (auto& r : remotes_)
      if (Peer* p = peer_of(r.peer_id); p != nullptr && p->honest) FUZZ_CHECK(p->header->sender_closed.load() == 1);
    remotes_.clear();
  }

  // --- The receivers. ---

  void join(std::uint8_t arg) {
    Peer* slot = nullptr;
    for (auto& p : peers_)
      if (!p.present) {
        slot = &p;
        break;
      }
    if (slot == nullptr) return;
    SenderCore& s = sender();
    int sv[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
    UniqueFd owner_end(sv[0]), peer_end(sv[1]);

    // The receiver says Hello.
    const bool bad_hello = (arg & 1) != 0;
    {
      capnp::MallocMessageBuilder m;
      fbuf::ipc::build_hello(m, fbuf::ipc::HelloInfo{.pid = static_cast<std::uint32_t>(::getpid())});
      if (bad_hello) m.getRoot<fbuf::ipc::proto::ControlMessage>().getHello().setVersion(fbuf::ipc::kProtocolVersion + 1);
      FUZZ_CHECK(!fbuf::ipc::send_message(peer_end.get(), m, {}));
    }

    // Listener::on_pending.
    const bool room = remotes_.size() < kPeers;
    bool admitted = false;
    const std::uint64_t id = ++next_peer_id_;
    {
      fbuf::ipc::Datagram dg;
      FUZZ_CHECK(!fbuf::ipc::receive_message(owner_end.get(), dg, std::chrono::nanoseconds(0)));
      try {
        const fbuf::ipc::HelloInfo hello = fbuf::ipc::decode_hello(dg.words);
        FUZZ_CHECK(dg.fds.empty());
        s.check_room(remotes_.size());
        const int raw = owner_end.get();
        auto outlet = s.add_remote(owner_end, hello);
        FUZZ_CHECK(!owner_end);  // consumed
        remotes_.push_back(Remote{raw, outlet, false, id});
        slot->outlet = outlet;
        admitted = true;
        ++connected_;
      } catch (const fbuf::Error& e) {
        FUZZ_CHECK(static_cast<bool>(owner_end));
        capnp::MallocMessageBuilder m;
        fbuf::ipc::build_reject(m, e.what());
        (void)fbuf::ipc::send_message(owner_end.get(), m, {});
        s.count_rejected_handshake();
      }
    }
    FUZZ_CHECK(admitted == (!bad_hello && room));

    // The receiver reads the Welcome (or the Reject) and maps what it names.
    fbuf::ipc::Datagram dg;
    FUZZ_CHECK(!fbuf::ipc::receive_message(peer_end.get(), dg, std::chrono::nanoseconds(0)));
    fbuf::ipc::WelcomeInfo info;
    try {
      info = fbuf::ipc::decode_welcome(dg.words);
    } catch (const fbuf::Error&) {
      FUZZ_CHECK(!admitted);
      return;
    }
    FUZZ_CHECK(admitted);
    FUZZ_CHECK(dg.fds.size() == fbuf::ipc::kWelcomeFds);
    FUZZ_CHECK(info.pool_size == core_->total_size());
    FUZZ_CHECK(info.classes.size() == 2 && info.classes[0].count + info.classes[1].count == total_);
    FUZZ_CHECK(info.policy == core_->options().policy);
    FUZZ_CHECK(info.send_capacity == capacity_);
    FUZZ_CHECK(info.return_capacity >= total_);
    fbuf::ipc::check_memfd(dg.fds[0].get(), info.pool_size, "pool fd");
    fbuf::ipc::check_memfd(dg.fds[1].get(), info.ring_bytes, "ring fd");
    fbuf::ipc::check_memfd(dg.fds[2].get(), page_, "doorbell fd");

    Peer& p = *slot;
    p.present = true;
    p.honest = true;
    p.shut = false;
    p.detached = false;
    p.id = id;
    p.sock = std::move(peer_end);
    p.info = info;
    p.geometry = fbuf::ipc::PoolGeometry(info.classes);
    p.pool_map = Mapping::map(dg.fds[0].get(), info.pool_size, PROT_READ, "pool");
    p.ring = ChannelMemory(Mapping::map(dg.fds[1].get(), info.ring_bytes, PROT_READ | PROT_WRITE, "ring"),
                           info.send_capacity, info.return_capacity);
    p.bell_map = Mapping::map(dg.fds[2].get(), page_, PROT_READ | PROT_WRITE, "doorbell");
    p.header = p.ring.header();
    FUZZ_CHECK(p.header->magic == fbuf::ipc::kChannelMagic && p.header->version == fbuf::ipc::kProtocolVersion);
    FUZZ_CHECK(p.header->send_capacity == info.send_capacity && p.header->return_capacity == info.return_capacity);
    FUZZ_CHECK(p.header->send.tail.load() == 0 && p.header->send.head.load() == 0);
    FUZZ_CHECK(p.header->ret.tail.load() == 0 && p.header->ret.head.load() == 0);
    FUZZ_CHECK(p.header->sender_closed.load() == 0 && p.header->cut_off.load() == 0);
    // The doorbell is not checked by its contents: every receiver of the
    // pool may write it (ipc/remote_receiver.cc accepts whatever is there),
    // so a peer's scribbling there never keeps this receiver out.
    p.in = RingConsumer(&p.header->send, p.ring.send_slots(), info.send_capacity);
    p.out = RingProducer(&p.header->ret, p.ring.return_slots(), info.return_capacity);
    p.queued.clear();
    p.held.clear();
  }

  Peer* live_peer(std::uint8_t which) {
    Peer& p = peers_[which % kPeers];
    return p.present ? &p : nullptr;
  }

  void take_one(std::uint8_t which) {
    Peer* p = live_peer(which);
    if (p == nullptr || p->shut) return;
    Descriptor d;
    RingStatus st = p->in.pop(d);
    if (!p->honest) {
      if (st == RingStatus::kOk && p->held.size() < 2 * kHistory)
        p->held.push_back(Sent{d.index, d.generation, d.length, d.sequence, 0});
      return;
    }
    if (p->queued.empty()) {
      FUZZ_CHECK(st == RingStatus::kEmpty);
      return;
    }
    FUZZ_CHECK(st == RingStatus::kOk);
    const Sent want = p->queued.front();
    p->queued.pop_front();
    FUZZ_CHECK(d.pool == 0 && d.index == want.index && d.generation == want.generation && d.offset == 0 &&
               d.length == want.length && d.sequence == want.sequence && d.flags == want.flags);
    FUZZ_CHECK(p->geometry.locate(d).has_value());
    p->held.push_back(want);
  }

  bool push_return(Peer& p, const Descriptor& d) {
    const bool ok = p.out.push(d);
    // publish() in the push issued the fence the doorbell needs.
    if (ok) fbuf::detail::ring_doorbell_fenced(p.bell());
    return ok;
  }

  void return_one(std::uint8_t which) {
    const auto pick = in_.take<std::uint8_t>();
    Peer* p = live_peer(which);
    if (p == nullptr || p->held.empty()) return;
    const std::size_t i = pick % p->held.size();
    const Sent s = p->held[i];
    p->held.erase(p->held.begin() + static_cast<std::ptrdiff_t>(i));
    const bool ok = push_return(*p, Descriptor{0, s.index, s.generation, 0, 0, 0, 0});
    if (p->honest) FUZZ_CHECK(ok);  // the return ring holds the whole pool
  }

  // RemoteReceiver::close() with bit 7 (hand back what is queued, then
  // SHUT_WR); a bare SHUT_WR, leaving the queue to the owner, without.
  void shut_write(std::uint8_t arg) {
    Peer* p = live_peer(arg & 0x7f);
    if (p == nullptr || p->shut) return;
    if ((arg & 0x80) != 0) {
      Descriptor d;
      while (p->in.pop(d) == RingStatus::kOk) {
        if (p->honest) {
          FUZZ_CHECK(!p->queued.empty());
          const Sent want = p->queued.front();
          p->queued.pop_front();
          FUZZ_CHECK(d.index == want.index && d.generation == want.generation);
        }
        const bool ok = push_return(*p, Descriptor{d.pool, d.index, d.generation, 0, 0, 0, 0});
        if (p->honest) FUZZ_CHECK(ok);
      }
      if (p->honest) FUZZ_CHECK(p->queued.empty());
    }
    ::shutdown(p->sock.get(), SHUT_WR);
    p->shut = true;
  }

  void close_receiver(std::uint8_t which) {
    Peer* p = live_peer(which);
    if (p == nullptr) return;
    *p = Peer{};
  }

  void chatter(std::uint8_t which) {
    Peer* p = live_peer(which);
    if (p == nullptr || p->shut) return;
    capnp::MallocMessageBuilder m;
    fbuf::ipc::build_hello(m, fbuf::ipc::HelloInfo{.pid = 1});
    (void)fbuf::ipc::send_message(p->sock.get(), m, {});
  }

  // --- A hostile receiver's writes. ---

  // A valid-looking descriptor: a recent send (or, for kind 7, something an
  // honest receiver other than `self` holds or has queued) as it was, or
  // slightly off.
  Descriptor forged(const Peer* self, std::uint8_t kind, std::uint8_t pick) {
    std::vector<Sent> others;
    if (kind % 8 == 7)
      for (auto& p : peers_) {
        if (&p == self || !p.present || !p.honest) continue;
        others.insert(others.end(), p.queued.begin(), p.queued.end());
        others.insert(others.end(), p.held.begin(), p.held.end());
      }
    const std::vector<Sent>& from = others.empty() ? history_ : others;
    Sent s = from.empty() ? Sent{pick % total_, 1, 16, 0, 0} : from[pick % from.size()];
    Descriptor d{0, s.index, s.generation, 0, s.length, 0, s.sequence};
    switch (kind % 8) {
      case 1: d.generation += 1; break;
      case 2: d.generation -= 1; break;
      case 3: d.index = total_; break;
      case 4: d.index = total_ - 1; break;
      case 5: d.index = ~0u; break;
      case 6: d.pool = 1; break;
      default: break;  // 0, 7: exactly as sent
    }
    return d;
  }

  void poke_word(std::uint8_t which) {
    const auto word = in_.take<std::uint16_t>();
    const auto kind = in_.take<std::uint8_t>();
    std::uint64_t raw = 0;
    std::int8_t k = 0;
    if (kind % 12 == 11) raw = in_.take<std::uint64_t>();
    else k = in_.take<std::int8_t>();
    Peer* p = live_peer(which);
    if (p == nullptr) return;

    using fbuf::ipc::ChannelHeader;
    using fbuf::detail::RingIndices;
    auto* base = reinterpret_cast<std::byte*>(p->header);
    const std::uint32_t send_cap = p->info.send_capacity, ret_cap = p->info.return_capacity;
    const std::size_t send_at = offsetof(ChannelHeader, send), ret_at = offsetof(ChannelHeader, ret);
    // The named words first, then every slot word, then the doorbell's;
    // with bit 15, any word of the channel memory or the doorbell's first
    // cache lines.
    const std::size_t named[] = {
        0, 8, 16, offsetof(ChannelHeader, sender_closed), offsetof(ChannelHeader, dropped),
        send_at + offsetof(RingIndices, tail), send_at + offsetof(RingIndices, head),
        send_at + offsetof(RingIndices, data_seq), send_at + offsetof(RingIndices, space_seq),
        ret_at + offsetof(RingIndices, tail), ret_at + offsetof(RingIndices, head),
        ret_at + offsetof(RingIndices, data_seq), ret_at + offsetof(RingIndices, space_seq)};
    constexpr std::size_t kNamed = sizeof named / sizeof named[0];
    const std::size_t ring_words = p->info.ring_bytes / 8, bell_words = 2 * fbuf::detail::kCacheLine / 8;
    std::byte* at = nullptr;
    bool in_bell = false;
    if ((word & 0x8000) == 0) {
      const std::size_t slot_words = (std::size_t{send_cap} + ret_cap) * sizeof(Descriptor) / 8;
      std::size_t w = word % (kNamed + slot_words + 2);
      if (w < kNamed) {
        at = base + named[w];
      } else if (w < kNamed + slot_words) {
        at = base + ChannelHeader::send_slots_offset() + (w - kNamed) * 8;
      } else {
        at = p->bell_map.data() + (w == kNamed + slot_words ? 0 : offsetof(fbuf::detail::DoorbellHeader, seq));
        in_bell = true;
      }
    } else {
      std::size_t w = (word & 0x7fffu) % (ring_words + bell_words);
      if (w < ring_words) {
        at = base + w * 8;
      } else {
        at = p->bell_map.data() + (w - ring_words) * 8;
        in_bell = true;
      }
    }
    const std::size_t offset = static_cast<std::size_t>(at - base);
    const bool in_ret = !in_bell && ((offset >= ret_at && offset < ret_at + sizeof(RingIndices)) ||
                                     offset >= ChannelHeader::return_slots_offset(send_cap));
    const std::uint64_t cap = in_ret ? ret_cap : send_cap;
    std::uint64_t current;
    std::memcpy(&current, at, sizeof current);
    // The index the owner keeps for this ring, as far as shared memory shows
    // it: the send ring's tail, the return ring's head.
    const std::uint64_t owner_index = in_ret ? p->header->ret.head.load() : p->header->send.tail.load();
    const auto kk = static_cast<std::uint64_t>(static_cast<std::int64_t>(k));
    std::uint64_t value = 0;
    switch (kind % 12) {
      case 0: value = 0; break;
      case 1: value = 1; break;
      case 2: value = cap - 1; break;
      case 3: value = cap; break;
      case 4: value = cap + 1; break;
      case 5: value = std::uint64_t{1} << 31; break;
      case 6: value = 0xffffffffu; break;
      case 7: value = std::uint64_t{1} << 63; break;
      case 8: value = ~std::uint64_t{0}; break;
      case 9: value = current + kk; break;
      case 10: value = owner_index + kk; break;
      default: value = raw; break;
    }
    std::memcpy(at, &value, sizeof value);
    // Doorbell words only cause wake-ups: a receiver writing them stays
    // honest (and no later receiver may be refused for it).
    if (!in_bell) p->honest = false;
  }

  void poke_slot(std::uint8_t which) {
    const auto slot = in_.take<std::uint8_t>();
    const auto kind = in_.take<std::uint8_t>();
    const auto pick = in_.take<std::uint8_t>();
    Peer* p = live_peer(which);
    if (p == nullptr) return;
    const Descriptor d = forged(p, kind, pick);
    Descriptor* slots = (slot & 0x80) != 0 ? p->ring.return_slots() : p->ring.send_slots();
    const std::uint32_t cap = (slot & 0x80) != 0 ? p->info.return_capacity : p->info.send_capacity;
    std::memcpy(&slots[(slot & 0x7fu) % cap], &d, sizeof d);
    p->honest = false;
  }

  void forge_return(std::uint8_t which) {
    const auto kind = in_.take<std::uint8_t>();
    const auto pick = in_.take<std::uint8_t>();
    Peer* p = live_peer(which);
    if (p == nullptr) return;
    (void)push_return(*p, forged(p, kind, pick));
    p->honest = false;
  }

  // --- Checks. ---

  void step(OwnerOp op) {
    switch (op) {
      case kSendBuffers: send_buffers(in_.take<std::uint8_t>()); break;
      case kHoldBuffer: hold_buffer(in_.take<std::uint8_t>()); break;
      case kTakeOne: take_one(in_.take<std::uint8_t>()); break;
      case kReturnOne: return_one(in_.take<std::uint8_t>()); break;
      case kShutWrite: shut_write(in_.take<std::uint8_t>()); break;
      case kCloseReceiver: close_receiver(in_.take<std::uint8_t>()); break;
      case kControlEvents: control_events(in_.take<std::uint8_t>()); break;
      case kCutOffRemote: cut_off(in_.take<std::uint8_t>()); break;
      case kDrainOwner: drain(in_.take<std::uint8_t>()); break;
      case kJoin: join(in_.take<std::uint8_t>()); break;
      case kPokeWord: poke_word(in_.take<std::uint8_t>()); break;
      case kPokeSlot: poke_slot(in_.take<std::uint8_t>()); break;
      case kForgeReturn: forge_return(in_.take<std::uint8_t>()); break;
      case kCloseSender: close_sender(); break;
      case kChatter: chatter(in_.take<std::uint8_t>()); break;
      case kOwnerOpCount: break;
    }
  }

  // Every buffer an honest receiver holds or has queued, by index.
  std::vector<bool> protected_set() const {
    std::vector<bool> held(total_, false);
    for (auto& p : peers_) {
      if (!p.present || !p.honest) continue;
      for (auto& s : p.queued) held[s.index] = true;
      for (auto& s : p.held) held[s.index] = true;
    }
    return held;
  }

  // After every step; drains nothing.
  void check_step() {
    for (auto& p : peers_) {
      if (!p.present || !p.honest) continue;
      FUZZ_CHECK(p.header->cut_off.load() == 0);
      // Each buffer still carries the tag written when it was sent to it.
      auto check_tag = [&](const Sent& s) {
        std::optional<std::uint64_t> at = p.geometry.locate(Descriptor{0, s.index, s.generation, 0, sizeof(Tag), 0, 0});
        FUZZ_CHECK(at.has_value());
        Tag t;
        std::memcpy(&t, p.pool_map.data() + *at, sizeof t);
        FUZZ_CHECK(same_tag(t, s));
      };
      for (auto& s : p.queued) check_tag(s);
      for (auto& s : p.held) check_tag(s);
      // The owner published exactly what it queued for this receiver (until
      // a detach, after which the queue is the owner's again).
      if (!p.detached) FUZZ_CHECK(p.header->send.tail.load() - p.header->send.head.load() == p.queued.size());
      // The owner's record of the loans matches the receiver's.
      if (auto o = p.outlet.lock()) {
        const std::uint64_t uncollected = p.out.tail() - p.header->ret.head.load();
        std::lock_guard lock(core_->mutex());
        FUZZ_CHECK(o->outstanding_locked() == p.queued.size() + p.held.size() + uncollected);
        // Served until it detaches.
        FUZZ_CHECK(o->usable_locked() == !p.detached);
      }
    }
    if (sender_) FUZZ_CHECK(sender_->receiver_count() <= kPeers);
  }

  void drain(std::uint8_t arg) {
    switch (arg % 3) {
      case 0: check_pool(); break;
      case 1:
        if (sender_) {
          fbuf::SenderStats st = sender_->stats();
          FUZZ_CHECK(st.sent == sent_ && st.delivered == delivered_ && st.receivers_connected == connected_);
        }
        check_pool();
        break;
      default: sweep(); break;
    }
  }

  fbuf::PoolStats check_pool() {
    fbuf::PoolStats st = core_->stats();
    FUZZ_CHECK(st.total == total_);
    FUZZ_CHECK(st.free + st.allocated + st.in_flight == st.total);
    FUZZ_CHECK(st.allocated == owner_held_.size());
    const auto held = protected_set();
    FUZZ_CHECK(st.in_flight >= static_cast<std::uint32_t>(std::count(held.begin(), held.end(), true)));
    return st;
  }

  // Allocates every free buffer: none is one an honest receiver holds or
  // has queued, and there are exactly as many as stats() said. Each is
  // tagged as swept, so a held one handed out would also show in its tag.
  void sweep() {
    const fbuf::PoolStats st = check_pool();
    const auto held = protected_set();
    std::vector<Buffer> all;
    for (unsigned k = 0; k < 2; ++k)
      for (;;) {
        auto r = core_->try_allocate(class_size(k));
        if (!r) {
          FUZZ_CHECK(r.error() == make_error_code(Errc::kWouldBlock));
          break;
        }
        FUZZ_CHECK(r->index() < total_ && !held[r->index()]);
        tag(*r, kSweepSerial);
        all.push_back(std::move(*r));
      }
    FUZZ_CHECK(all.size() == st.free);
  }

  // Everyone leaves; the pool must end up all free.
  void finish() {
    for (auto& p : peers_) p = Peer{};
    owner_held_.clear();
    while (!remotes_.empty()) {
      const std::size_t before = remotes_.size();
      control_events(0);
      FUZZ_CHECK(remotes_.size() == before - 1);  // each receiver hung up
    }
    close_sender();
    fbuf::PoolStats st = core_->stats();
    FUZZ_CHECK(st.free == total_ && st.allocated == 0 && st.in_flight == 0);
  }

  Input& in_;
  std::size_t page_ = 0;
  std::uint32_t capacity_ = 1;
  std::uint32_t total_ = 0;
  std::optional<Pool> pool_;
  std::shared_ptr<PoolCore> core_;
  std::unique_ptr<SenderCore> sender_;
  std::vector<Remote> remotes_;
  Peer peers_[kPeers];
  std::vector<Buffer> owner_held_;
  std::vector<Sent> history_;
  std::uint64_t serial_ = 0, next_peer_id_ = 0;
  // The current sender's counts, as its stats() must report them.
  std::uint64_t sent_ = 0, delivered_ = 0, connected_ = 0, sequence_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  Script script(in);
  script.run();
  return 0;
}

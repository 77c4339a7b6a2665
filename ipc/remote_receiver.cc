#include "ipc/remote_receiver.h"

#include <capnp/message.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>

#include "fbuf/base/assert.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/segv_report.h"
#include "fbuf/buffers/view_owner.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/held_pool.h"
#include "ipc/upstream.h"
#include "ipc/validate.h"

namespace fbuf::detail {
namespace {

// How often an idle receiver asks the kernel whether the control socket
// hung up.
constexpr std::chrono::milliseconds kHangupCheckEvery{5};

// Everything read from the shared rings is validated against the geometry
// learned (and checked) at the handshake, kept in private memory.
//
// The path (docs/design.md, "The path"): descriptors of pool slot k >= 1
// are views of an upstream pool announced on this connection; the
// announcements wait in the control socket and are read (non-blocking)
// when a descriptor names a slot not known yet. slots_ is the receiving
// thread's; the socket's reads are serialised by sock_mu_ (a forwarding
// thread may be asking the owner for a holder on it).
class RemoteReceiver final : public ReceiverCore,
                             public ViewOwner,
                             public Upstream,
                             public std::enable_shared_from_this<RemoteReceiver> {
 public:
  RemoteReceiver(UniqueFd sock, const ipc::WelcomeInfo& info, std::vector<UniqueFd> fds)
      : sock_(std::move(sock)), info_(info) {
    pool_fd_ = std::move(fds[0]);
    UniqueFd ring_fd = std::move(fds[1]);
    bell_fd_ = std::move(fds[2]);
    ipc::check_memfd(pool_fd_.get(), info_.pool_size, "pool fd");
    ipc::check_memfd(ring_fd.get(), info_.ring_bytes, "ring fd");
    ipc::check_memfd(bell_fd_.get(), page_size(), "doorbell fd");
    ipc::check_ready_socket(fds[3].get(), "readiness fd");
    ready_fd_ = std::move(fds[3]);
    pool_map_ = Mapping::map(pool_fd_.get(), info_.pool_size, PROT_READ, "pool '" + info_.pool_name + "'");
    ring_ = ChannelMemory(Mapping::map(ring_fd.get(), info_.ring_bytes, PROT_READ | PROT_WRITE, "ring"),
                          info_.send_capacity, info_.return_capacity);
    bell_map_ = Mapping::map(bell_fd_.get(), page_size(), PROT_READ | PROT_WRITE, "doorbell");

    // Checked once, here; from now on only info_ (private) says how large
    // the rings are.
    header_ = ring_.header();
    const std::uint64_t magic = header_->magic;
    const std::uint32_t version = header_->version, send_cap = header_->send_capacity,
                        ret_cap = header_->return_capacity;
    if (magic != ipc::kChannelMagic || version != ipc::kProtocolVersion || send_cap != info_.send_capacity ||
        ret_cap != info_.return_capacity)
      throw_error(Errc::kProtocol, "ring header does not match the handshake");
    install_segv_report();
    segv_ = SegvRegistration(register_mapping(pool_map_.data(), pool_map_.size(), MappingKind::kReceived,
                                              info_.policy, info_.pool_name.c_str(), info_.classes));
    // The doorbell is checked as an fd (a sealed memfd of one page) and not
    // by its contents: every receiver of the pool can write that page, so a
    // check of its magic would let one receiver lock every later one out.
    // Its words only ever cause wake-ups.
    bell_ = reinterpret_cast<DoorbellHeader*>(bell_map_.data());
    in_ = RingConsumer(&header_->send, ring_.send_slots(), info_.send_capacity);
    returns_ = RingProducer(&header_->ret, ring_.return_slots(), info_.return_capacity);
    geometry_ = ipc::PoolGeometry(info_.classes);
  }

  ~RemoteReceiver() override = default;

  void close() noexcept override {
    std::lock_guard lock(return_mu_);
    if (closed_) return;
    closed_ = true;
    // Hand back whatever was sent and not yet received, then tell the
    // sender to stop (it sees end-of-file on the control socket). Views
    // still out are returned as they are dropped; when the last one goes,
    // this object and its socket go, and the sender reclaims the rest.
    Descriptor d;
    while (in_.pop(d) == RingStatus::kOk) {
      if (d.pool == 0) {
        push_return_locked(d.pool, d.index, d.generation);
      } else if (d.pool <= slots_.size()) {
        return_held(*slots_[d.pool - 1], d.index, d.generation);
      }
      // An unknown slot: its holder is reclaimed by the owner when the
      // announcement's socket closes with this receiver's.
    }
    ring_doorbell(bell_);
    if (take_doorbell_arming(bell_)) signal_ready(ready_fd_.get());
    ::shutdown(sock_.get(), SHUT_WR);
  }

  void release(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept override {
    // A View shared with a receiver in this process (forwarded to it) goes
    // back when the last of them does.
    if (shares_.take(pool, index, generation)) return;
    bool pushed;
    {
      std::lock_guard lock(return_mu_);
      pushed = push_return_locked(pool, index, generation);
      // A Sender waiting in epoll for a buffer armed the doorbell: tell it
      // through this receiver's end of the readiness pair. Under the lock,
      // so close_ready() cannot close the fd between the check and the
      // send (the number could be reused). The push's publish() issued the
      // fence this check needs.
      if (pushed && take_doorbell_arming(bell_)) signal_ready(ready_fd_.get());
    }
    // publish() in the push issued the fence the doorbell needs.
    if (pushed) ring_doorbell_fenced(bell_);
  }

 protected:
  bool peer_closed() noexcept override {
    // ready_eof_: the owner's end of the readiness pair closed, which it
    // does only when its outlet is gone (the Sender closed, or died).
    if (sender_said_closed() || hung_up_ || ready_eof_) return true;
    auto now = Clock::now();
    if (now - last_check_ < kHangupCheckEvery) return false;
    last_check_ = now;
    pollfd p{sock_.get(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) hung_up_ = true;
    return hung_up_;
  }

  Result<View> make_view(const Descriptor& d) noexcept override {
    if (d.pool != 0) return make_forwarded_view(d);
    std::optional<std::uint64_t> at = geometry_.locate(d);
    if (!at) {
      rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      return Errc::kBadDescriptor;
    }
    return ViewAccess::make(std::shared_ptr<ViewOwner>(shared_from_this(), this), pool_map_.data() + *at,
                            d.length, d.pool, d.index, d.generation);
  }

  std::shared_ptr<Upstream> upstream() noexcept override {
    return std::shared_ptr<Upstream>(shared_from_this(), this);
  }

  bool share(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept override {
    return shares_.add(pool, index, generation);
  }

  // --- Upstream: this receiver's views forwarded on. ---
  const ipc::WelcomeInfo& pool_info() const noexcept override { return info_; }
  int pool_fd() const noexcept override { return pool_fd_.get(); }
  int doorbell_fd() const noexcept override { return bell_fd_.get(); }
  std::optional<std::uint32_t> offset_in_buffer(std::uint32_t index, const std::byte* data,
                                                std::size_t size) const noexcept override {
    return ipc::offset_in_buffer(geometry_, pool_map_.data(), index, data, size);
  }
  HolderGrant request_holder(Clock::time_point deadline) override {
    std::lock_guard lock(sock_mu_);
    return path::request_holder(sock_.get(), deadline, &stash_);
  }
  std::error_code lend(std::uint32_t index, std::uint32_t generation, std::uint32_t token,
                       Clock::time_point deadline) noexcept override {
    // Room for a return of every buffer of the pool stays free: the owner
    // lends each at most once at a time, so releases never find the ring
    // full.
    return path::push_lend(returns_, return_mu_, static_cast<std::uint32_t>(geometry_.buffer_count()),
                           sock_.get(), index, generation, token, deadline);
  }

 protected:
  void close_ready() noexcept override {
    std::lock_guard lock(return_mu_);
    ready_fd_.reset();
  }

 private:
  Result<View> make_forwarded_view(const Descriptor& d) noexcept {
    if (d.pool > slots_.size()) learn_slots();
    if (d.pool > slots_.size()) {
      // No announcement before it: a bad descriptor.
      rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      return Errc::kBadDescriptor;
    }
    Result<View> v = make_held_view(*slots_[d.pool - 1], d);
    if (!v) rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
    return v;
  }

  // Reads the announcements waiting in the control socket (and those a
  // holder request set aside), in slot order. A bad one is counted and
  // dropped, its fds closed; the stream goes on.
  void learn_slots() noexcept {
    std::lock_guard lock(sock_mu_);
    auto take = [&](ipc::Datagram& dg) {
      try {
        ipc::PoolAnnounceInfo a = ipc::decode_pool_announce(dg.words);
        if (a.slot != slots_.size() + 1)
          throw_error(Errc::kProtocol, "PoolAnnounce for slot " + std::to_string(a.slot) + ", expected " +
                                           std::to_string(slots_.size() + 1));
        auto held = make_held_pool(a, std::move(dg.fds));
        slots_.push_back(std::move(held));
      } catch (...) {
        rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      }
    };
    for (auto& dg : stash_) take(dg);
    stash_.clear();
    for (;;) {
      ipc::Datagram dg;
      if (ipc::receive_message(sock_.get(), dg, std::chrono::nanoseconds(0))) return;
      take(dg);
    }
  }

  bool push_return_locked(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept {
    // The return ring holds as many descriptors as the pool has buffers,
    // and an honest sender lends each at most once at a time, so it is
    // never full; a sender that lends more than it has loses the excess.
    if (returns_.reserve() != RingStatus::kOk) {
      rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      return false;
    }
    // Counted before the return is published: a thread that sees the
    // buffer back in the sender's pool and then asks this receiver for
    // its counters must find the return there.
    bump_single_writer(returned_, 1);  // under return_mu_
    returns_.write(Descriptor{pool, index, generation, 0, 0, 0, 0});
    (void)returns_.publish();  // the owner's pool never arms a readiness fd on it
    return true;
  }

  UniqueFd sock_;
  ipc::WelcomeInfo info_;
  UniqueFd pool_fd_;
  UniqueFd bell_fd_;
  Mapping pool_map_;
  SegvRegistration segv_;
  ChannelMemory ring_;
  Mapping bell_map_;
  DoorbellHeader* bell_ = nullptr;
  ipc::PoolGeometry geometry_;

  std::mutex return_mu_;
  RingProducer returns_;  // guarded by return_mu_
  SharedRefs shares_;     // views forwarded to receivers of this process
  bool closed_ = false;   // guarded by return_mu_

  std::mutex sock_mu_;                  // serialises reads of sock_
  std::vector<ipc::Datagram> stash_;   // guarded by sock_mu_: announcements read by a holder request
  // Touched only by the receiving thread.
  std::vector<std::shared_ptr<HeldPool>> slots_;  // slot k at [k - 1]
  bool hung_up_ = false;
  Clock::time_point last_check_{};
};

}  // namespace

std::shared_ptr<ReceiverCore> connect_remote(std::string_view service, Clock::time_point deadline,
                                             const ReceiverOptions& options) {
  ipc::HelloInfo request;
  request.pid = static_cast<std::uint32_t>(::getpid());
  if (options.slow_receiver > SlowReceiverPolicy::kCutOff)
    throw_error(Errc::kInvalidArgument, "ReceiverOptions::slow_receiver is not a SlowReceiverPolicy");
  if (options.hold_timeout.count() < 0) throw_error(Errc::kInvalidArgument, "ReceiverOptions::hold_timeout < 0");
  request.slow_policy = options.slow_receiver;
  request.receiver_budget = options.receiver_budget;
  request.hold_timeout_ns = static_cast<std::uint64_t>(options.hold_timeout.count());
  auto left = [&] { return std::max<std::chrono::nanoseconds>(time_left(deadline, kForever), std::chrono::milliseconds(1)); };
  UniqueFd sock = ipc::connect_service(service, left());
  capnp::MallocMessageBuilder hello;
  ipc::build_hello(hello, request);
  const std::string what = "connect(service '" + std::string(service) + "')";
  ipc::Datagram dg;
  bool send_failed = false;
  const std::error_code ec = ipc::exchange(sock.get(), hello, dg, left(), send_failed);  // reads a Reject too
  if (ec) throw Error(ec, what + (send_failed ? ": sending Hello" : ": waiting for Welcome"));
  ipc::WelcomeInfo info = ipc::decode_welcome(dg.words);
  if (dg.fds.size() != ipc::kWelcomeFds)
    throw_error(Errc::kProtocol, what + ": Welcome carried " + std::to_string(dg.fds.size()) + " fds, expected " +
                                     std::to_string(ipc::kWelcomeFds));
  return std::make_shared<RemoteReceiver>(std::move(sock), info, std::move(dg.fds));
}

}  // namespace fbuf::detail

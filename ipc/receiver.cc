#include "fbuf/receiver.h"

#include <capnp/message.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <thread>

#include "fbuf/buffers/segv_report.h"
#include "fbuf/pool_core.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/validate.h"

namespace fbuf {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

// How long receive() polls the ring before it sleeps on the futex. Short
// enough to cost little when idle, long enough to catch a sender that is
// a few microseconds behind without a syscall on either side.
constexpr std::chrono::microseconds kSpin{20};
// The longest a receiver sleeps before it checks whether the sender died
// (a killed sender cannot wake it).
constexpr std::chrono::milliseconds kMaxSleep{20};
// How often an idle receiver asks the kernel whether the control socket
// hung up.
constexpr std::chrono::milliseconds kHangupCheckEvery{5};

inline void cpu_relax() noexcept { __builtin_ia32_pause(); }

}  // namespace

ipc::ChannelHeader* init_channel_header(std::byte* memory, std::uint32_t send_capacity,
                                        std::uint32_t return_capacity) noexcept {
  auto* h = new (memory) ipc::ChannelHeader{};
  h->magic = ipc::kChannelMagic;
  h->version = ipc::kProtocolVersion;
  h->send_capacity = send_capacity;
  h->return_capacity = return_capacity;
  return h;
}

Result<View> ReceiverCore::try_receive() noexcept {
  ipc::Descriptor d;
  switch (in_.pop(d)) {
    case ipc::RingStatus::kOk:
      received_.fetch_add(1, std::memory_order_relaxed);
      return make_view(d);
    case ipc::RingStatus::kCorrupt:
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return Errc::kBadDescriptor;
    default:
      break;
  }
  if (peer_closed()) {
    // Everything the sender published before it went is still in the ring.
    if (in_.readable()) return try_receive();
    return Errc::kPeerGone;
  }
  return Errc::kWouldBlock;
}

Result<View> ReceiverCore::receive(std::chrono::nanoseconds timeout) noexcept {
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  const auto wouldblock = make_error_code(Errc::kWouldBlock);
  for (unsigned i = 0;; ++i) {
    if (in_.readable() || (i % 256) == 0) {
      Result<View> r = try_receive();
      if (r || r.error() != wouldblock) return r;
      if (Clock::now() - start > kSpin) break;
    }
    cpu_relax();
  }
  for (;;) {
    Result<View> r = try_receive();
    if (r || r.error() != wouldblock) return r;
    auto now = Clock::now();
    if (now >= deadline) return Errc::kTimedOut;
    ipc::sleep_until(header_->send.consumer_waiters, header_->send.data_seq,
                     std::min<std::chrono::nanoseconds>(deadline - now, kMaxSleep),
                     [&] { return in_.readable() || header_->sender_closed.load(std::memory_order_acquire) != 0; });
  }
}

ReceiverStats ReceiverCore::stats() const noexcept {
  ReceiverStats s;
  s.received = received_.load(std::memory_order_relaxed);
  s.returned = returned_.load(std::memory_order_relaxed);
  s.rejected_descriptors = rejected_.load(std::memory_order_relaxed);
  return s;
}

namespace {

// A receiver in the sender's own process: views read the pool directly and
// go back to it directly.
class LocalReceiver final : public ReceiverCore {
 public:
  LocalReceiver(std::shared_ptr<PoolCore> pool, std::shared_ptr<LocalChannel> channel)
      : pool_(std::move(pool)), channel_(std::move(channel)) {
    header_ = channel_->memory.header();
    in_ = ipc::RingConsumer(&header_->send, channel_->memory.send_slots(), header_->send_capacity);
  }
  ~LocalReceiver() override { close(); }

  void close() noexcept override {
    {
      std::lock_guard lock(pool_->mutex());
      if (channel_->receiver_gone) return;
      channel_->receiver_gone = true;
      // The sender pushes only with the mutex held and checks
      // receiver_gone first, so what is in the ring now is all there is.
      ipc::Descriptor d;
      while (in_.pop(d) == ipc::RingStatus::kOk) pool_->release_ref_locked(d.index, d.generation);
    }
    ipc::ring_doorbell(pool_->doorbell());
  }

 protected:
  bool peer_closed() noexcept override { return header_->sender_closed.load(std::memory_order_acquire) != 0; }

  Result<View> make_view(const ipc::Descriptor& d) noexcept override {
    // The sender is this process's own code, but the checks are cheap.
    if (d.index >= pool_->buffer_count() || d.offset > pool_->buffer_capacity(d.index) ||
        d.length > pool_->buffer_capacity(d.index) - d.offset) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return Errc::kBadDescriptor;
    }
    return View(std::shared_ptr<ViewOwner>(pool_, pool_.get()),
                pool_->reader_base() + pool_->buffer_offset(d.index) + d.offset, d.length, d.pool, d.index,
                d.generation);
  }

 private:
  std::shared_ptr<PoolCore> pool_;
  std::shared_ptr<LocalChannel> channel_;
};

// A receiver in another process than its sender. Everything read from the
// shared rings is validated against the geometry learned (and checked) at
// the handshake.
class RemoteReceiver final : public ReceiverCore,
                             public ViewOwner,
                             public std::enable_shared_from_this<RemoteReceiver> {
 public:
  RemoteReceiver(UniqueFd sock, const ipc::WelcomeInfo& info, std::vector<UniqueFd> fds)
      : sock_(std::move(sock)), info_(info) {
    pool_fd_ = std::move(fds[0]);
    ring_fd_ = std::move(fds[1]);
    bell_fd_ = std::move(fds[2]);
    ipc::check_memfd(pool_fd_.get(), info_.pool_size, "pool fd");
    ipc::check_memfd(ring_fd_.get(), info_.ring_bytes, "ring fd");
    ipc::check_memfd(bell_fd_.get(), page_size(), "doorbell fd");
    pool_map_ = Mapping::map(pool_fd_.get(), info_.pool_size, PROT_READ, "pool '" + info_.pool_name + "'");
    ring_.map = Mapping::map(ring_fd_.get(), info_.ring_bytes, PROT_READ | PROT_WRITE, "ring");
    bell_map_ = Mapping::map(bell_fd_.get(), page_size(), PROT_READ | PROT_WRITE, "doorbell");

    header_ = ring_.header();
    if (header_->magic != ipc::kChannelMagic || header_->version != ipc::kProtocolVersion ||
        header_->send_capacity != info_.send_capacity || header_->return_capacity != info_.return_capacity)
      throw_error(Errc::kProtocol, "ring header does not match the handshake");
    install_segv_report();
    segv_ = SegvRegistration(register_mapping(pool_map_.data(), pool_map_.size(), MappingKind::kReceived,
                                              info_.policy, info_.pool_name.c_str(), info_.classes));
    bell_ = reinterpret_cast<ipc::DoorbellHeader*>(bell_map_.data());
    if (bell_->magic != ipc::kDoorbellMagic || bell_->version != ipc::kProtocolVersion)
      throw_error(Errc::kProtocol, "doorbell header does not match the handshake");
    in_ = ipc::RingConsumer(&header_->send, ring_.send_slots(), info_.send_capacity);
    returns_ = ipc::RingProducer(&header_->ret, ring_.return_slots(), info_.return_capacity);

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
    ipc::Descriptor d;
    while (in_.pop(d) == ipc::RingStatus::kOk) push_return_locked(d.pool, d.index, d.generation);
    ipc::ring_doorbell(bell_);
    ::shutdown(sock_.get(), SHUT_WR);
  }

  void release(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept override {
    bool pushed;
    {
      std::lock_guard lock(return_mu_);
      pushed = push_return_locked(pool, index, generation);
    }
    // publish() in the push issued the fence the doorbell needs.
    if (pushed) ipc::ring_doorbell(bell_, /*fenced=*/true);
  }

 protected:
  bool peer_closed() noexcept override {
    if (header_->sender_closed.load(std::memory_order_acquire) != 0) return true;
    if (hung_up_) return true;
    auto now = Clock::now();
    if (now - last_check_ < kHangupCheckEvery) return false;
    last_check_ = now;
    pollfd p{sock_.get(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) hung_up_ = true;
    return hung_up_;
  }

  Result<View> make_view(const ipc::Descriptor& d) noexcept override {
    std::optional<std::uint64_t> at = geometry_.locate(d);
    if (!at) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return Errc::kBadDescriptor;
    }
    return View(std::shared_ptr<ViewOwner>(shared_from_this(), this), pool_map_.data() + *at, d.length,
                d.pool, d.index, d.generation);
  }

 private:
  bool push_return_locked(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept {
    // The return ring holds as many descriptors as the pool has buffers,
    // and an honest sender lends each at most once at a time, so it is
    // never full; a sender that lends more than it has loses the excess.
    if (!returns_.push(ipc::Descriptor{pool, index, generation, 0, 0, 0, 0})) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    returned_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  UniqueFd sock_;
  ipc::WelcomeInfo info_;
  UniqueFd pool_fd_, ring_fd_, bell_fd_;
  Mapping pool_map_;
  SegvRegistration segv_;
  ChannelMemory ring_;
  Mapping bell_map_;
  ipc::DoorbellHeader* bell_ = nullptr;
  ipc::PoolGeometry geometry_;

  std::mutex return_mu_;
  ipc::RingProducer returns_;  // guarded by return_mu_
  bool closed_ = false;        // guarded by return_mu_

  // Touched only by the receiving thread.
  bool hung_up_ = false;
  Clock::time_point last_check_{};
};

}  // namespace

std::shared_ptr<ReceiverCore> make_local_receiver(std::shared_ptr<PoolCore> pool,
                                                  std::shared_ptr<LocalChannel> channel) {
  return std::make_shared<LocalReceiver>(std::move(pool), std::move(channel));
}

}  // namespace detail

namespace {

// One handshake on a fresh connection. Throws Error.
Receiver handshake(std::string_view service, std::chrono::steady_clock::time_point deadline) {
  auto left = [&] {
    return std::max<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now(),
                                              std::chrono::milliseconds(1));
  };
  detail::UniqueFd sock = ipc::connect_service(service, left());
  capnp::MallocMessageBuilder hello;
  auto h = hello.initRoot<ipc::proto::ControlMessage>().initHello();
  h.setVersion(ipc::kProtocolVersion);
  h.setPid(static_cast<std::uint32_t>(::getpid()));
  const std::string what = "connect(service '" + std::string(service) + "')";
  if (auto ec = ipc::send_message(sock.get(), hello, {}); ec) throw Error(ec, what + ": sending Hello");

  ipc::Datagram dg;
  if (auto ec = ipc::receive_message(sock.get(), dg, left()); ec) throw Error(ec, what + ": waiting for Welcome");
  ipc::WelcomeInfo info = ipc::decode_welcome(dg.words);
  if (dg.fds.size() != 3)
    detail::throw_error(Errc::kProtocol, what + ": Welcome carried " + std::to_string(dg.fds.size()) +
                                             " fds, expected 3");
  auto core = std::make_shared<detail::RemoteReceiver>(std::move(sock), info, std::move(dg.fds));
  return Receiver(std::move(core));
}

bool cut_off(const std::error_code& ec) {
  return ec == make_error_code(Errc::kPeerGone) || ec == std::error_code(ECONNRESET, std::system_category()) ||
         ec == std::error_code(EPIPE, std::system_category());
}

}  // namespace

Receiver Receiver::connect(std::string_view service, ReceiverOptions options) {
  const auto deadline = std::chrono::steady_clock::now() + options.connect_timeout;
  for (;;) {
    try {
      return handshake(service, deadline);
    } catch (const Error& e) {
      // A sender that closes while this handshake is in its backlog cuts
      // the connection off; its successor may already be listening.
      if (!cut_off(e.code()) || std::chrono::steady_clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

Receiver::Receiver() noexcept = default;
Receiver::Receiver(std::shared_ptr<detail::ReceiverCore> core) noexcept : core_(std::move(core)) {}
Receiver::~Receiver() {
  if (core_) core_->close();
}
Receiver::Receiver(Receiver&&) noexcept = default;
Receiver& Receiver::operator=(Receiver&& o) noexcept {
  if (this != &o) {
    if (core_) core_->close();
    core_ = std::move(o.core_);
  }
  return *this;
}

Result<View> Receiver::try_receive() noexcept {
  if (!core_) return Errc::kClosed;
  return core_->try_receive();
}
Result<View> Receiver::receive(std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->receive(timeout);
}
ReceiverStats Receiver::stats() const { return core_ ? core_->stats() : ReceiverStats{}; }

}  // namespace fbuf

// The sender's receivers: admission (in-process and remote), bookkeeping,
// statistics; and the public Sender handle.
#include "fbuf/sender.h"

#include <capnp/message.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <bit>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/readiness.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/receiver.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/listener.h"
#include "ipc/monitor.h"
#include "ipc/outlet.h"
#include "ipc/receiver_core.h"
#include "ipc/sender_core.h"

namespace fbuf {
namespace detail {
namespace {

// The control thread checks hold timeouts while sends are idle every
// eighth of the shortest hold timeout, within these bounds.
constexpr std::chrono::milliseconds kMinHoldCheck{1};
constexpr std::chrono::milliseconds kMaxHoldCheck{50};

}  // namespace

SenderCore::SenderCore(Pool pool, std::string service, SenderOptions options)
    : pool_handle_(std::move(pool)),
      pool_(PoolAccess::core(pool_handle_)),
      service_(std::move(service)),
      options_(options),
      returns_(std::make_shared<ReturnCounters>()) {
  FBUF_REQUIRE(pool_ != nullptr, "a Sender of a moved-from Pool");
  if (!std::has_single_bit(options_.ring_capacity) || options_.ring_capacity > kMaxRingCapacity)
    throw_error(Errc::kInvalidArgument, "ring_capacity must be a power of two up to 2^22");
  if (options_.max_receivers == 0) throw_error(Errc::kInvalidArgument, "max_receivers must be at least 1");
  if (options_.slow_receiver > SlowReceiverPolicy::kCutOff)
    throw_error(Errc::kInvalidArgument, "slow_receiver is not a SlowReceiverPolicy");
  if (options_.hold_timeout.count() < 0) throw_error(Errc::kInvalidArgument, "hold_timeout must not be negative");
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("epoll_create1(Sender readiness)");
  ReadyPair self = make_ready_pair();
  self_signal_ = std::move(self.owner);
  self_wait_ = std::move(self.receiver);
  watch_ready_fd(self_wait_.get());
  {
    std::lock_guard lock(pool_->mutex());
    pool_->set_owner_signal_locked(self_signal_.get());
  }
  if (!service_.empty()) listener_ = std::make_unique<Listener>(*this, service_);
}

void SenderCore::watch_ready_fd(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl(Sender readiness)");
}

void SenderCore::drain_ready_fds() noexcept {
  epoll_event events[32];
  const int n = ::epoll_wait(epoll_.get(), events, 32, 0);
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    // End-of-file: the receiver closed its end (it went, or died). Its
    // outlet may live on a while (returns still to come); its end must
    // leave the set now or the set would poll readable for ever.
    if (!drain_ready(fd)) (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
}

bool SenderCore::arm(std::size_t size) noexcept {
  drain_ready_fds();
  std::lock_guard lock(pool_->mutex());
  if (closed_) return false;
  // relaxed, all: only this side sets the words to 1; the receivers and the
  // pool take them back with an exchange after their own fence. The
  // seq_cst fence below orders these stores before the re-check.
  for (auto& o : outlets_) {
    if (o->usable_locked()) o->out.indices()->producer_armed.store(1, std::memory_order_relaxed);
  }
  pool_->doorbell()->armed.store(1, std::memory_order_relaxed);
  // seq_cst: the sleeping side's store-buffer fence; pairs with the fence
  // in RingConsumer::release() (ring room) and in the doorbell's ring
  // before take_doorbell_arming() (returns).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (would_block_locked(size)) return true;
  disarm_locked();
  return false;
}

bool SenderCore::would_block_locked(std::size_t size) noexcept {
  if (size != 0 && !pool_->can_allocate_locked(size)) return true;
  for (auto& o : outlets_) {
    if (!o->usable_locked()) continue;
    // Receivers that are skipped or cut off when they fall behind never
    // make a send wait; under kFailFast a full ring fails the send.
    const SlowReceiverPolicy p = o->terms.policy;
    if (p != SlowReceiverPolicy::kBlock && p != SlowReceiverPolicy::kFailFast) continue;
    if (o->out.reserve(1) == RingStatus::kFull) return true;
  }
  return false;
}

void SenderCore::disarm_locked() noexcept {
  // relaxed: as in arm(). An arming someone took already was signalled:
  // the next arm() drains that record.
  for (auto& o : outlets_) o->out.indices()->producer_armed.exchange(0, std::memory_order_relaxed);
  pool_->doorbell()->armed.exchange(0, std::memory_order_relaxed);
}

SenderCore::~SenderCore() {
  // Refuse new receivers before telling the current ones the stream has
  // ended, so a receiver that reconnects at once reaches whoever takes the
  // name next, not this dying sender's backlog.
  if (listener_) listener_->stop();
  std::lock_guard lock(pool_->mutex());
  closed_ = true;
  pool_->clear_owner_signal_locked(self_signal_.get());
  for (auto& o : outlets_) o->close_locked();
  if (listener_) listener_->close_remotes_locked();
  outlets_.clear();
  watched_.clear();
}

Receiver SenderCore::connect_local() {
  auto ch = std::make_shared<LocalChannel>();
  ch->memory = ChannelMemory::anonymous(options_.ring_capacity);
  const ReceiverTerms terms = terms_for(nullptr);
  ch->count_held = (terms.policy == SlowReceiverPolicy::kSkip || terms.policy == SlowReceiverPolicy::kCutOff) &&
                   terms.budget != 0;
  ReadyPair ready = make_ready_pair();
  // Before the outlet exists, so that a failure leaves nothing behind; the
  // end leaves the set by itself when the outlet closes it.
  watch_ready_fd(ready.owner.get());
  auto outlet = std::make_shared<LocalOutlet>(ch, terms, std::move(ready.owner));
  outlet->identity.pid = static_cast<std::uint32_t>(::getpid());
  outlet->identity.uid = ::geteuid();
  {
    std::lock_guard lock(pool_->mutex());
    outlet->identity.id = next_id_++;
    if (closed_) throw_error(Errc::kClosed, "connect_local on a closed sender");
    // Receivers closed since the last send no longer count.
    prune_locked();
    if (outlets_.size() >= options_.max_receivers) throw_error(Errc::kInvalidArgument, "max_receivers reached");
    add_locked(outlet);
  }
  return ReceiverAccess::make(make_local_receiver(pool_, std::move(ch), std::move(ready.receiver)));
}

bool SenderCore::wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const {
  std::unique_lock lock(count_mu_);
  // relaxed: read with count_mu_ held, the mutex its writer holds too.
  auto ready = [&] { return receivers_.load(std::memory_order_relaxed) >= n; };
  if (timeout >= std::chrono::hours(24 * 365)) {
    count_cv_.wait(lock, ready);
    return true;
  }
  return count_cv_.wait_for(lock, timeout, ready);
}

SenderStats SenderCore::stats() {
  std::lock_guard lock(pool_->mutex());
  pool_->drain_inlets_locked();
  if (!closed_ && !watched_.empty()) check_holds_locked(Clock::now());
  if (!closed_) prune_locked();  // counts receivers the drain cut off
  SenderStats s = counters_;
  s.returned = returns_->returned;
  s.rejected_returns = returns_->rejected;
  return s;
}

void SenderCore::check_room(std::size_t connections) const {
  std::lock_guard lock(pool_->mutex());
  if (closed_) throw_error(Errc::kClosed, "the sender is closing");
  // Connections still open (receivers that detached but hold views count
  // until they let go), not only the receivers being sent to.
  if (std::max(connections, outlets_.size()) >= options_.max_receivers)
    throw_error(Errc::kProtocol, "too many receivers (max_receivers " + std::to_string(options_.max_receivers) + ")");
}

std::shared_ptr<RemoteOutlet> SenderCore::add_remote(UniqueFd& sock, const ipc::HelloInfo& hello) {
  const std::uint32_t send_cap = options_.ring_capacity;
  // Returns and, for a receiver that forwards, lend records (the path).
  const std::uint32_t ret_cap = ipc::return_ring_capacity(pool_->buffer_count());
  UniqueFd ring_fd;
  ChannelMemory mem = ChannelMemory::shared(send_cap, ret_cap, ring_fd, service_);

  ipc::WelcomeInfo info;
  info.pool_name = pool_->options().name;
  info.pool_size = pool_->total_size();
  info.classes = pool_->geometry();  // sealed slots' classes included
  info.policy = pool_->options().policy;
  info.send_capacity = send_cap;
  info.return_capacity = ret_cap;
  info.ring_bytes = ipc::ChannelHeader::bytes(send_cap, ret_cap);
  {
    std::lock_guard lock(pool_->mutex());
    info.receiver_id = next_id_++;
  }
  capnp::MallocMessageBuilder m;
  ipc::build_welcome(m, info);
  ReadyPair ready = make_ready_pair();
  const int fds[ipc::kWelcomeFds] = {pool_->read_only_fd(), ring_fd.get(), pool_->doorbell_fd(), ready.receiver.get()};
  // The Welcome goes out before the receiver is counted and served, not
  // after: a receiver whose connect() gives up before it arrives (a short
  // connect_timeout under load) would otherwise be counted, wake
  // wait_for_receivers() and take sends, then be lost at once. So a
  // receiver's connect() may return a moment before receiver_count() and
  // receivers_connected include it: wait_for_receivers() is what orders
  // the two (docs/api.md).
  if (auto ec = ipc::send_message(sock.get(), m, fds); ec) throw Error(ec, "sending Welcome");

  watch_ready_fd(ready.owner.get());  // as in connect_local()
  std::lock_guard lock(pool_->mutex());
  if (closed_) throw_error(Errc::kClosed, "the sender is closing");
  auto outlet = std::make_shared<RemoteOutlet>(*pool_, std::move(sock), std::move(mem), returns_, terms_for(&hello),
                                               std::move(ready.owner));
  outlet->identity.id = info.receiver_id;
  add_locked(outlet);
  return outlet;
}

bool SenderCore::on_detach(RemoteOutlet& outlet) noexcept {
  std::lock_guard lock(pool_->mutex());
  outlet.detach_locked();
  prune_locked();
  if (outlet.outstanding_locked() != 0) return false;
  outlet.hang_up_locked();  // nothing to take back: finished
  return true;
}

void SenderCore::on_hang_up(RemoteOutlet& outlet) noexcept {
  std::lock_guard lock(pool_->mutex());
  if (!outlet.finished_locked()) {
    outlet.hang_up_locked();
    ++counters_.receivers_lost;
  }
  prune_locked();
}

void SenderCore::count_rejected_handshake() noexcept {
  std::lock_guard lock(pool_->mutex());
  ++counters_.rejected_handshakes;
}

void SenderCore::set_peer(Outlet& outlet, std::uint32_t pid, std::uint32_t uid) noexcept {
  std::lock_guard lock(pool_->mutex());
  outlet.identity.pid = pid;
  outlet.identity.uid = uid;
}

ipc::MonitorInfo SenderCore::monitor(std::span<const std::shared_ptr<RemoteOutlet>> remotes) {
  ipc::MonitorInfo info;
  // Everything that allocates happens before the lock: the copy under it
  // only fills what is reserved here.
  info.service = service_;
  info.owner_pid = static_cast<std::uint32_t>(::getpid());
  info.owner_uid = ::geteuid();
  info.pool_name = pool_->options().name;
  info.policy = pool_->options().policy;
  info.slow_policy = options_.slow_receiver;
  info.receiver_budget = options_.receiver_budget;
  info.hold_timeout_ns = static_cast<std::uint64_t>(options_.hold_timeout.count());
  info.ring_capacity = options_.ring_capacity;
  info.max_receivers = options_.max_receivers;
  info.sealed_copy_size = pool_->sealed_copy_size();
  const auto& classes = pool_->options().classes;
  info.classes.resize(classes.size());
  const std::size_t room = std::min<std::size_t>(remotes.size() + options_.max_receivers, ipc::kMaxMonitorReceivers);
  info.receivers.reserve(room);
  // relaxed: a count for display only.
  info.monitor_requests = monitor_requests_.fetch_add(1, std::memory_order_relaxed) + 1;

  std::lock_guard lock(pool_->mutex());
  for (std::size_t k = 0; k < classes.size(); ++k) {
    const std::uint32_t sealed_free = pool_->sealed_free_in_class_locked(k);
    info.classes[k] = {classes[k].buffer_size, classes[k].count, pool_->free_in_class_locked(k),
                       pool_->class_sealed(k), sealed_free};
    info.sealed_free += sealed_free;
  }
  PoolStats sealed;
  pool_->sealed_counters_locked(sealed);
  info.sealed_total = sealed.sealed_total;
  info.sealed_in_flight = sealed.sealed_in_flight;
  info.sealed_copies = sealed.sealed_copies;
  info.sealed_fallbacks = sealed.sealed_fallbacks;
  info.stats = counters_;
  info.stats.returned = returns_->returned;
  info.stats.rejected_returns = returns_->rejected;
  auto take = [&](const Outlet& o) {
    if (info.receivers.size() == info.receivers.capacity()) {
      ++info.receivers_omitted;
      return;
    }
    o.snapshot_locked(info.receivers.emplace_back());
  };
  // In-process receivers are in outlets_ only; remote ones are listed from
  // the control thread's connections, which also hold those that detached
  // but still hold views.
  for (const auto& o : outlets_)
    if (dynamic_cast<const LocalOutlet*>(o.get()) != nullptr) take(*o);
  for (const auto& r : remotes) {
    take(*r);
    info.returns_waiting += r->returns_waiting_locked();
  }
  return info;
}

void SenderCore::add_locked(std::shared_ptr<Outlet> outlet) {
  const bool watch = outlet->terms.hold_timeout.count() != 0;
  watched_.reserve(watched_.size() + 1);  // nothing can throw after the push below
  outlets_.push_back(outlet);
  if (watch) watched_.push_back(std::move(outlet));
  ++counters_.receivers_connected;
  publish_count_locked();
}

void SenderCore::refresh_terms_locked() noexcept {
  lenient_ = !watched_.empty() ||
             std::any_of(outlets_.begin(), outlets_.end(), [](const auto& o) { return o->terms.lenient(); });
  std::chrono::nanoseconds shortest = std::chrono::nanoseconds::max();
  for (const auto& o : watched_) shortest = std::min(shortest, o->terms.hold_timeout);
  int ms = 0;
  if (!watched_.empty()) {
    auto every = std::chrono::duration_cast<std::chrono::milliseconds>(shortest / 8);
    ms = static_cast<int>(std::clamp<std::chrono::milliseconds>(every, kMinHoldCheck, kMaxHoldCheck).count());
  }
  // relaxed: read by the control thread only to size its epoll timeout.
  hold_check_ms_.store(ms, std::memory_order_relaxed);
}

void SenderCore::prune_locked() noexcept {
  std::size_t before = outlets_.size();
  std::erase_if(outlets_, [&](const std::shared_ptr<Outlet>& o) {
    if (o->usable_locked()) return false;
    // A receiver the pool cut off while draining (a corrupt return ring)
    // has not been told or counted yet.
    if (o->retire_locked()) ++counters_.receivers_lost;
    return true;
  });
  if (outlets_.size() != before) publish_count_locked();
}

void SenderCore::publish_count_locked() noexcept {
  refresh_terms_locked();
  {
    std::lock_guard lock(count_mu_);
    // relaxed: count_mu_ orders it for wait_for_receivers(); lock-free
    // readers (receiver_count()) only want a recent value.
    receivers_.store(outlets_.size(), std::memory_order_relaxed);
  }
  count_cv_.notify_all();
}

}  // namespace detail

// A moved-from Sender has no core: its hot-path calls say kClosed and its
// setup calls treat it as the caller's mistake.
Sender::Sender(Pool pool, SenderOptions options)
    : core_(std::make_unique<detail::SenderCore>(std::move(pool), std::string(), options)) {}
Sender::Sender(Pool pool, std::string_view service, SenderOptions options) {
  FBUF_REQUIRE(!service.empty(), "a listening Sender needs a service name");
  core_ = std::make_unique<detail::SenderCore>(std::move(pool), std::string(service), options);
}
Sender::~Sender() = default;
Sender::Sender(Sender&&) noexcept = default;
Sender& Sender::operator=(Sender&&) noexcept = default;

Receiver Sender::connect_local() {
  if (!core_) detail::throw_error(Errc::kClosed, "connect_local on a moved-from Sender");
  return core_->connect_local();
}
Result<Buffer> Sender::try_allocate(std::size_t size) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->pool_core().try_allocate(size);
}
Result<Buffer> Sender::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->pool_core().allocate(size, timeout);
}
int Sender::fd() const noexcept { return core_ ? core_->fd() : -1; }
bool Sender::arm(std::size_t size) noexcept { return core_ && core_->arm(size); }
std::error_code Sender::try_send(Buffer&& buffer, std::size_t length) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send(std::span<Buffer>(&buffer, 1), std::span<const std::size_t>(&length, 1),
                     std::chrono::nanoseconds(0));
}
std::error_code Sender::send(Buffer&& buffer, std::size_t length, std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send(std::span<Buffer>(&buffer, 1), std::span<const std::size_t>(&length, 1), timeout);
}
std::error_code Sender::send_many(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                                  std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send(buffers, lengths, timeout);
}
std::error_code Sender::try_send(Message&& message) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send(message, std::chrono::nanoseconds(0));
}
std::error_code Sender::send(Message&& message, std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->send(message, timeout);
}
bool Sender::wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const {
  return core_ && core_->wait_for_receivers(n, timeout);
}
std::size_t Sender::receiver_count() const noexcept { return core_ ? core_->receiver_count() : 0; }
SenderStats Sender::stats() const { return core_ ? core_->stats() : SenderStats{}; }
const std::string& Sender::service() const noexcept {
  static const std::string none;
  return core_ ? core_->service() : none;
}
Pool Sender::pool() const {
  if (!core_) detail::throw_error(Errc::kClosed, "pool() of a moved-from Sender");
  return core_->pool();
}

}  // namespace fbuf

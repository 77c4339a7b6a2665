// The send path: SenderCore and the public Sender handle.
#include "fbuf/sender.h"

#include <capnp/message.h>
#include <unistd.h>

#include <algorithm>
#include <bit>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/receiver.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/listener.h"
#include "ipc/outlet.h"
#include "ipc/receiver_core.h"
#include "ipc/sender_core.h"

namespace fbuf {
namespace detail {
namespace {

// A sender blocked on a full ring re-checks at least this often, so a
// receiver that dies without waking it costs latency, never a hang.
constexpr std::chrono::milliseconds kMaxSleep{20};
// Hold timeouts are checked at most this often by the send path.
constexpr std::chrono::milliseconds kHoldCheckEvery{1};
// The control thread checks them while sends are idle every eighth of the
// shortest hold timeout, within these bounds.
constexpr std::chrono::milliseconds kMinHoldCheck{1};
constexpr std::chrono::milliseconds kMaxHoldCheck{50};

bool held_too_long(const Outlet& o, Clock::time_point now) noexcept {
  const Clock::time_point oldest = o.oldest_lend_locked();
  return oldest != Clock::time_point::max() && now > oldest && now - oldest > o.terms.hold_timeout;
}

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
  if (!service_.empty()) listener_ = std::make_unique<Listener>(*this, service_);
}

SenderCore::~SenderCore() {
  // Refuse new receivers before telling the current ones the stream has
  // ended, so a receiver that reconnects at once reaches whoever takes the
  // name next, not this dying sender's backlog.
  if (listener_) listener_->stop();
  std::lock_guard lock(pool_->mutex());
  closed_ = true;
  for (auto& o : outlets_) o->close_locked();
  if (listener_) listener_->close_remotes_locked();
  outlets_.clear();
  watched_.clear();
}

Receiver SenderCore::connect_local() {
  auto ch = std::make_shared<LocalChannel>();
  ch->memory = ChannelMemory::anonymous(options_.ring_capacity);
  auto outlet = std::make_shared<LocalOutlet>(ch, terms_for(nullptr));
  {
    std::lock_guard lock(pool_->mutex());
    if (closed_) throw_error(Errc::kClosed, "connect_local on a closed sender");
    // Receivers closed since the last send no longer count.
    prune_locked();
    if (outlets_.size() >= options_.max_receivers) throw_error(Errc::kInvalidArgument, "max_receivers reached");
    add_locked(outlet);
  }
  return ReceiverAccess::make(make_local_receiver(pool_, std::move(ch)));
}

std::error_code SenderCore::send(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                                 std::chrono::nanoseconds timeout) noexcept {
  const std::size_t n = buffers.size();
  if (n == 0 || lengths.size() != n || n > options_.ring_capacity) return Errc::kInvalidArgument;
  // Small batches need no allocation; larger ones are rare and may.
  std::uint32_t local[kStackBatch];
  std::vector<std::uint32_t> heap;
  std::span<std::uint32_t> indices;
  if (n <= kStackBatch) {
    indices = std::span<std::uint32_t>(local, n);
  } else {
    try {
      heap.resize(n);
    } catch (...) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    indices = heap;
  }
  for (std::size_t i = 0; i < n; ++i) {
    PoolCore::BufferRef ref = PoolCore::inspect(buffers[i]);
    if (ref.pool != pool_.get() || lengths[i] > ref.capacity) return Errc::kInvalidArgument;
    indices[i] = ref.index;
  }
  const auto count = static_cast<std::uint32_t>(n);
  const auto deadline = deadline_after(timeout);
  for (;;) {
    std::shared_ptr<Outlet> blocked;
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) return Errc::kClosed;
      bool fail_fast = false, skipping = false;
      Clock::time_point now{};
      if (!lenient_) {
        // Every receiver has the default terms: block on a full ring.
        for (auto& o : outlets_) {
          RingStatus st = o->out.reserve(count);
          if (st == RingStatus::kCorrupt) {
            // The receiver published an impossible head: its channel is
            // corrupt. It alone is cut off; the others are served on.
            o->cut_off_locked();
            ++counters_.receivers_lost;
          } else if (st == RingStatus::kFull && !blocked) {
            blocked = o;
          }
        }
      } else {
        // Lend times are recorded only for receivers with a hold timeout,
        // all of which are watched.
        if (!watched_.empty()) now = Clock::now();
        classify_locked(count, now, blocked, fail_fast, skipping);
      }
      prune_locked();
      if (outlets_.empty()) return Errc::kNoReceivers;
      if (fail_fast) return Errc::kWouldBlock;
      if (!blocked) return deliver_locked(buffers, lengths, indices, skipping, now);
    }
    if (timeout.count() <= 0) return Errc::kWouldBlock;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = blocked->out.indices();
    sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
      std::lock_guard lock(pool_->mutex());
      return !blocked->usable_locked() ||
             blocked->out.reserve(static_cast<std::uint32_t>(n)) != RingStatus::kFull;
    });
  }
}

void SenderCore::classify_locked(std::uint32_t n, Clock::time_point now, std::shared_ptr<Outlet>& blocked,
                                 bool& fail_fast, bool& skipping) noexcept {
  if (!watched_.empty() && now - last_hold_check_ >= kHoldCheckEvery) check_holds_locked(now);
  for (auto& o : outlets_) {
    o->skip = false;
    if (!o->usable_locked()) continue;  // cut off just now; pruned next
    RingStatus st = o->out.reserve(n);
    if (st == RingStatus::kCorrupt) {
      o->cut_off_locked();
      ++counters_.receivers_lost;
      continue;
    }
    switch (o->terms.policy) {
      case SlowReceiverPolicy::kBlock:
        if (st == RingStatus::kFull && !blocked) blocked = o;
        break;
      case SlowReceiverPolicy::kFailFast:
        if (st == RingStatus::kFull) fail_fast = true;
        break;
      case SlowReceiverPolicy::kSkip:
      case SlowReceiverPolicy::kCutOff: {
        // A full ring is over budget too: never wait for this receiver.
        const bool over = st == RingStatus::kFull || over_budget_locked(*o, n);
        if (!over || !o->usable_locked()) break;
        if (o->terms.policy == SlowReceiverPolicy::kSkip) {
          o->skip = true;
          skipping = true;
        } else {
          o->cut_off_locked();
          ++counters_.receivers_cut_off;
        }
        break;
      }
    }
  }
}

bool SenderCore::over_budget_locked(Outlet& o, std::uint32_t n) noexcept {
  const std::uint64_t budget = o.terms.budget;
  if (budget == 0 || std::uint64_t{o.outstanding_locked()} + n <= budget) return false;
  // Returns it made and the pool has not collected yet count for it.
  o.collect_returns_locked();
  return std::uint64_t{o.outstanding_locked()} + n > budget;
}

std::error_code SenderCore::deliver_locked(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                                           std::span<const std::uint32_t> indices, bool skipping,
                                           Clock::time_point now) noexcept {
  const std::size_t n = buffers.size();
  auto receivers = static_cast<std::uint32_t>(outlets_.size());
  if (skipping) {
    receivers = static_cast<std::uint32_t>(
        std::count_if(outlets_.begin(), outlets_.end(), [](const std::shared_ptr<Outlet>& o) { return !o->skip; }));
    // Every receiver would skip it: nothing is sent and nothing is
    // dropped; the buffer stays the caller's.
    if (receivers == 0) return Errc::kWouldBlock;
  }
  // The sender's write access ends before any receiver can see the
  // buffers.
  if (std::error_code ec = pool_->guard_locked(indices); ec) return ec;
  for (std::size_t i = 0; i < n; ++i) {
    PoolCore::BufferRef ref = PoolCore::inspect(buffers[i]);
    Descriptor d{0, ref.index, ref.generation, 0, static_cast<std::uint32_t>(lengths[i]), 0, sequence_++};
    for (auto& o : outlets_) {
      if (!skipping || !o->skip) o->write_locked(d, now);
    }
  }
  for (auto& o : outlets_) {
    if (skipping && o->skip) {
      o->count_dropped_locked(n);
      o->skip = false;
    } else {
      o->out.publish();
    }
  }
  for (std::size_t i = 0; i < n; ++i) pool_->mark_sent_locked(buffers[i], receivers);
  counters_.sent += n;
  counters_.delivered += n * receivers;
  counters_.dropped += n * (outlets_.size() - receivers);
  return {};
}

void SenderCore::check_holds() noexcept {
  std::lock_guard lock(pool_->mutex());
  if (closed_ || watched_.empty()) return;
  const auto now = Clock::now();
  if (now - last_hold_check_ >= kHoldCheckEvery) check_holds_locked(now);
}

void SenderCore::check_holds_locked(Clock::time_point now) noexcept {
  last_hold_check_ = now;
  for (auto& o : watched_) {
    if (!o->reclaimable_locked() || !held_too_long(*o, now)) continue;
    // It may have returned the buffer already: collect before judging.
    o->collect_returns_locked();
    if (!o->reclaimable_locked() || !held_too_long(*o, now)) continue;
    o->cut_off_locked();
    ++counters_.receivers_cut_off;
  }
  const std::size_t before = watched_.size();
  std::erase_if(watched_, [](const std::shared_ptr<Outlet>& o) { return !o->reclaimable_locked(); });
  if (watched_.size() != before) refresh_terms_locked();
}

ReceiverTerms SenderCore::terms_for(const ipc::HelloInfo* asked) const noexcept {
  ReceiverTerms t{options_.slow_receiver, options_.receiver_budget, options_.hold_timeout};
  if (asked != nullptr) {
    // Only ever more lenient to the other receivers: a later policy, a
    // smaller budget, a shorter hold timeout (decode_hello checked the
    // ranges).
    t.policy = std::max(t.policy, asked->slow_policy);
    if (asked->receiver_budget != 0 && (t.budget == 0 || asked->receiver_budget < t.budget))
      t.budget = asked->receiver_budget;
    const std::chrono::nanoseconds hold(static_cast<std::int64_t>(asked->hold_timeout_ns));
    if (hold.count() != 0 && (t.hold_timeout.count() == 0 || hold < t.hold_timeout)) t.hold_timeout = hold;
  }
  if (t.policy != SlowReceiverPolicy::kSkip && t.policy != SlowReceiverPolicy::kCutOff) t.budget = 0;
  return t;
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
  const std::uint32_t ret_cap = std::bit_ceil(std::max<std::uint32_t>(2, pool_->buffer_count()));
  UniqueFd ring_fd;
  ChannelMemory mem = ChannelMemory::shared(send_cap, ret_cap, ring_fd, service_);

  ipc::WelcomeInfo info;
  info.pool_name = pool_->options().name;
  info.pool_size = pool_->total_size();
  info.classes = pool_->options().classes;
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
  const int fds[3] = {pool_->read_only_fd(), ring_fd.get(), pool_->doorbell_fd()};
  if (auto ec = ipc::send_message(sock.get(), m, fds); ec) throw Error(ec, "sending Welcome");

  std::lock_guard lock(pool_->mutex());
  if (closed_) throw_error(Errc::kClosed, "the sender is closing");
  auto outlet = std::make_shared<RemoteOutlet>(*pool_, std::move(sock), std::move(mem), returns_, terms_for(&hello));
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
  std::erase_if(outlets_, [](const std::shared_ptr<Outlet>& o) { return !o->usable_locked(); });
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

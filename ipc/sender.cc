#include "fbuf/sender.h"

#include <capnp/message.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "fbuf/assert.h"
#include "fbuf/pool_core.h"
#include "fbuf/receiver.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/validate.h"

namespace fbuf {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

// A sender blocked on a full ring re-checks at least this often, so a
// receiver that dies without waking it costs latency, never a hang.
constexpr std::chrono::milliseconds kMaxSleep{20};
// A connection that has not said Hello by then is dropped.
constexpr std::chrono::seconds kHelloTimeout{5};
constexpr std::size_t kMaxPending = 64;

struct Counters {
  SenderStats s;  // guarded by the pool's mutex
};

void wake_space(ipc::RingIndices* idx) noexcept {
  idx->space_seq.fetch_add(1, std::memory_order_relaxed);
  ipc::futex_wake_all(&idx->space_seq);
}

void mark_sender_closed(ipc::ChannelHeader* h) noexcept {
  // release: the receiver that observes the flag (acquire) also observes
  // every descriptor published before it.
  h->sender_closed.store(1, std::memory_order_release);
  h->send.data_seq.fetch_add(1, std::memory_order_relaxed);
  ipc::futex_wake_all(&h->send.data_seq);
}

// One receiver's ring, as the sender sees it. Every member is guarded by
// the pool's mutex.
class Outlet {
 public:
  virtual ~Outlet() = default;
  // False once the receiver is gone or detached: nothing more is pushed.
  virtual bool usable_locked() const noexcept = 0;
  virtual void on_pushed_locked(const ipc::Descriptor&) noexcept {}
  // The sender is going away.
  virtual void close_locked() noexcept = 0;

  ipc::RingProducer out;
};

class LocalOutlet final : public Outlet {
 public:
  explicit LocalOutlet(std::shared_ptr<LocalChannel> ch) : ch_(std::move(ch)) {
    auto* h = ch_->memory.header();
    out = ipc::RingProducer(&h->send, ch_->memory.send_slots(), h->send_capacity);
  }
  bool usable_locked() const noexcept override { return !ch_->receiver_gone; }
  void close_locked() noexcept override { mark_sender_closed(ch_->memory.header()); }

 private:
  std::shared_ptr<LocalChannel> ch_;
};

// A receiver in another process. It is also a source of returns for the
// pool, and outlives the Sender if buffers are still lent when the Sender
// goes: the pool then drains it and watches its socket.
class RemoteOutlet final : public Outlet, public ReturnSource {
 public:
  RemoteOutlet(PoolCore* pool, UniqueFd sock, UniqueFd ring_fd, ChannelMemory memory,
               std::shared_ptr<Counters> counters)
      : pool_(pool), sock_(std::move(sock)), ring_fd_(std::move(ring_fd)), mem_(std::move(memory)),
        counters_(std::move(counters)), lent_(pool->buffer_count()) {
    auto* h = mem_.header();
    out = ipc::RingProducer(&h->send, mem_.send_slots(), h->send_capacity);
    returns_ = ipc::RingConsumer(&h->ret, mem_.return_slots(), h->return_capacity);
  }

  int fd() const noexcept { return sock_.get(); }
  bool usable_locked() const noexcept override { return state_ == State::kActive; }
  void on_pushed_locked(const ipc::Descriptor& d) noexcept override { lent_.lend(d.index, d.generation); }

  bool drain_locked(bool slow) noexcept override {
    if (state_ == State::kFinished) return false;
    // The receiver never waits for space in its return ring (it holds as
    // many slots as the pool has buffers), so the slots are handed back
    // once per batch.
    ipc::Descriptor d;
    for (;;) {
      ipc::RingStatus st = returns_.take(d);
      if (st == ipc::RingStatus::kEmpty) break;
      if (st == ipc::RingStatus::kCorrupt) {
        // The receiver broke its own return ring: cut it off.
        ++counters_->s.rejected_returns;
        ::shutdown(sock_.get(), SHUT_RDWR);
        reclaim_all_locked();
        return false;
      }
      apply_return_locked(d, true);
    }
    returns_.release();
    if (slow && orphan_ && hung_up()) reclaim_all_locked();
    return state_ != State::kFinished;
  }

  // The receiver closed its end for writing: it takes nothing more. What
  // is still in its ring, unconsumed, comes back now.
  void detach_locked() noexcept {
    if (state_ != State::kActive) return;
    state_ = State::kDetached;
    drain_locked(false);
    auto& idx = mem_.header()->send;
    // acquire: pairs with the receiver's release store of head.
    std::uint64_t head = idx.head.load(std::memory_order_acquire);
    std::uint64_t tail = out.tail();
    if (head <= tail && tail - head <= out.capacity())
      for (std::uint64_t p = head; p < tail; ++p) apply_return_locked(out.slot(p), false);
    wake_space(&idx);
  }

  // The receiver is gone: everything lent to it comes back.
  void reclaim_all_locked() noexcept {
    if (state_ == State::kFinished) return;
    lent_.take_all([this](std::uint32_t index, std::uint32_t generation) {
      pool_->release_ref_locked(index, generation);
    });
    state_ = State::kFinished;
    wake_space(&mem_.header()->send);
  }

  void close_locked() noexcept override {
    mark_sender_closed(mem_.header());
    orphan_ = true;
    if (state_ == State::kActive) state_ = State::kDetached;
  }

  bool finished_locked() const noexcept { return state_ == State::kFinished; }

 private:
  enum class State { kActive, kDetached, kFinished };

  void apply_return_locked(const ipc::Descriptor& d, bool count_rejects) noexcept {
    // Everything here came from the receiver: check it against what was
    // actually lent to this receiver, at this generation.
    if (lent_.take_back(d)) {
      pool_->release_ref_locked(d.index, d.generation);
      ++counters_->s.returned;
    } else if (count_rejects) {
      ++counters_->s.rejected_returns;
    }
  }

  bool hung_up() const noexcept {
    pollfd p{sock_.get(), POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
  }

  PoolCore* pool_;  // the pool owns this outlet as a source, so outlives it
  UniqueFd sock_;
  UniqueFd ring_fd_;
  ChannelMemory mem_;
  std::shared_ptr<Counters> counters_;
  ipc::RingConsumer returns_;
  ipc::LentSet lent_;
  State state_ = State::kActive;
  bool orphan_ = false;  // the Sender is gone; the pool watches the socket
};

}  // namespace

class SenderCore {
 public:
  SenderCore(Pool pool, std::string service, SenderOptions options)
      : pool_handle_(std::move(pool)),
        pool_(pool_handle_.core().shared_from_this()),
        service_(std::move(service)),
        options_(options),
        counters_(std::make_shared<Counters>()) {
    if (!std::has_single_bit(options_.ring_capacity) || options_.ring_capacity > ipc::kMaxRingCapacity)
      throw_error(Errc::kInvalidArgument, "ring_capacity must be a power of two up to 2^22");
    if (options_.max_receivers == 0) throw_error(Errc::kInvalidArgument, "max_receivers must be at least 1");
    if (service_.empty()) return;
    listen_fd_ = ipc::listen_service(service_);
    epoll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd_) throw_errno("epoll_create1");
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_) throw_errno("eventfd");
    watch(listen_fd_.get(), EPOLLIN);
    watch(stop_fd_.get(), EPOLLIN);
    control_ = std::thread([this] { control_loop(); });
  }

  ~SenderCore() {
    if (control_.joinable()) {
      std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
      control_.join();
    }
    // Refuse new receivers before telling the current ones the stream has
    // ended, so a receiver that reconnects at once reaches whoever takes
    // the name next, not this dying sender's backlog.
    listen_fd_.reset();
    pending_.clear();
    std::lock_guard lock(pool_->mutex());
    closed_ = true;
    for (auto& o : outlets_) o->close_locked();
    for (auto& [fd, r] : remotes_) r->close_locked();
    outlets_.clear();
  }

  Receiver connect_local() {
    auto ch = std::make_shared<LocalChannel>();
    std::size_t bytes = ipc::ChannelHeader::bytes(options_.ring_capacity, 0);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw_errno("mmap(in-process ring)");
    ch->memory.map = Mapping(p, bytes);
    init_channel_header(ch->memory.map.data(), options_.ring_capacity, 0);
    auto outlet = std::make_shared<LocalOutlet>(ch);
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) throw_error(Errc::kClosed, "connect_local on a closed sender");
      if (outlets_.size() >= options_.max_receivers)
        throw_error(Errc::kInvalidArgument, "max_receivers reached");
      outlets_.push_back(outlet);
      ++counters_->s.receivers_connected;
      publish_count_locked();
    }
    return Receiver(make_local_receiver(pool_, std::move(ch)));
  }

  std::error_code send(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                       std::chrono::nanoseconds timeout) noexcept {
    const std::size_t n = buffers.size();
    if (n == 0 || lengths.size() != n || n > options_.ring_capacity) return Errc::kInvalidArgument;
    // Small batches need no allocation; larger ones are rare and may.
    std::uint32_t local[64];
    std::vector<std::uint32_t> heap;
    std::span<std::uint32_t> indices;
    if (n <= 64) {
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
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      std::shared_ptr<Outlet> blocked;
      {
        std::lock_guard lock(pool_->mutex());
        if (closed_) return Errc::kClosed;
        prune_locked();
        if (outlets_.empty()) return Errc::kNoReceivers;
        for (auto& o : outlets_) {
          // kCorrupt (a receiver wrote an impossible head) also blocks:
          // that receiver is cut off when its socket closes, or the wait
          // times out. It never makes a descriptor disappear.
          if (o->out.reserve(static_cast<std::uint32_t>(n)) != ipc::RingStatus::kOk) {
            blocked = o;
            break;
          }
        }
        if (!blocked) {
          // The sender's write access ends before any receiver can see
          // the buffers.
          if (std::error_code ec = pool_->guard_locked(indices); ec) return ec;
          for (std::size_t i = 0; i < n; ++i) {
            PoolCore::BufferRef ref = PoolCore::inspect(buffers[i]);
            ipc::Descriptor d{0, ref.index, ref.generation, 0, static_cast<std::uint32_t>(lengths[i]), 0,
                              sequence_++};
            for (auto& o : outlets_) {
              o->out.write(d);
              o->on_pushed_locked(d);
            }
          }
          for (auto& o : outlets_) o->out.publish();
          auto receivers = static_cast<std::uint32_t>(outlets_.size());
          for (std::size_t i = 0; i < n; ++i) pool_->mark_sent_locked(buffers[i], receivers);
          counters_->s.sent += n;
          counters_->s.delivered += n * receivers;
          return {};
        }
      }
      if (timeout.count() <= 0) return Errc::kWouldBlock;
      auto now = Clock::now();
      if (now >= deadline) return Errc::kTimedOut;
      ipc::RingIndices* idx = blocked->out.indices();
      ipc::sleep_until(idx->producer_waiters, idx->space_seq,
                       std::min<std::chrono::nanoseconds>(deadline - now, kMaxSleep), [&] {
                         std::lock_guard lock(pool_->mutex());
                         return !blocked->usable_locked() ||
                                blocked->out.reserve(static_cast<std::uint32_t>(n)) == ipc::RingStatus::kOk;
                       });
    }
  }

  bool wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const {
    std::unique_lock lock(count_mu_);
    return count_cv_.wait_for(lock, timeout, [&] { return receivers_.load(std::memory_order_relaxed) >= n; });
  }
  std::size_t receiver_count() const noexcept { return receivers_.load(std::memory_order_relaxed); }

  SenderStats stats() const {
    std::lock_guard lock(pool_->mutex());
    pool_->drain_sources_locked();
    return counters_->s;
  }

  const std::string& service() const noexcept { return service_; }
  const Pool& pool() const noexcept { return pool_handle_; }
  PoolCore& pool_core() const noexcept { return *pool_; }

 private:
  void prune_locked() noexcept {
    std::size_t before = outlets_.size();
    std::erase_if(outlets_, [](const std::shared_ptr<Outlet>& o) { return !o->usable_locked(); });
    if (outlets_.size() != before) publish_count_locked();
  }

  void publish_count_locked() noexcept {
    {
      std::lock_guard lock(count_mu_);
      receivers_.store(outlets_.size(), std::memory_order_relaxed);
    }
    count_cv_.notify_all();
  }

  void watch(int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
  }

  // --- The control thread: accepts receivers, runs handshakes, and
  // notices receivers that detach or die. ---
  void control_loop() noexcept {
    epoll_event events[16];
    for (;;) {
      int n = ::epoll_wait(epoll_fd_.get(), events, 16, pending_.empty() ? -1 : 1000);
      if (n < 0 && errno != EINTR) return;
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == stop_fd_.get()) return;
        if (fd == listen_fd_.get()) {
          accept_all();
        } else if (pending_.count(fd) != 0) {
          on_pending(fd, events[i].events);
        } else if (auto it = remotes_.find(fd); it != remotes_.end()) {
          on_remote(it, events[i].events);
        }
      }
      auto now = Clock::now();
      std::erase_if(pending_, [&](auto& p) {
        if (now - p.second.since < kHelloTimeout) return false;
        std::lock_guard lock(pool_->mutex());
        ++counters_->s.rejected_handshakes;
        return true;  // closing the fd also removes it from the epoll set
      });
    }
  }

  void accept_all() noexcept {
    for (;;) {
      UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!fd) return;
      if (pending_.size() >= kMaxPending) continue;  // closed: try again later
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd.get();
      if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
      int raw = fd.get();
      pending_.emplace(raw, Pending{std::move(fd), Clock::now()});
    }
  }

  void reject(int fd, const std::string& reason) noexcept {
    try {
      capnp::MallocMessageBuilder m;
      auto r = m.initRoot<ipc::proto::ControlMessage>().initReject();
      r.setVersion(ipc::kProtocolVersion);
      r.setReason(reason.substr(0, 1024));
      (void)ipc::send_message(fd, m, {});
    } catch (...) {
      // The connection is being dropped anyway.
    }
    std::lock_guard lock(pool_->mutex());
    ++counters_->s.rejected_handshakes;
  }

  void on_pending(int fd, std::uint32_t events) noexcept {
    auto node = pending_.extract(fd);
    UniqueFd sock = std::move(node.mapped().fd);
    if ((events & EPOLLIN) == 0) return;  // hung up before saying Hello
    ipc::Datagram dg;
    if (auto ec = ipc::receive_message(fd, dg, std::chrono::nanoseconds(0)); ec) {
      reject(fd, "unreadable Hello: " + ec.message());
      return;
    }
    try {
      ucred peer{};
      socklen_t len = sizeof peer;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) throw_errno("SO_PEERCRED");
      if (!options_.allow_other_users && peer.uid != ::geteuid() && peer.uid != 0)
        throw_error(Errc::kProtocol, "user id " + std::to_string(peer.uid) + " may not connect");
      ipc::decode_hello(dg.words);
      if (!dg.fds.empty()) throw_error(Errc::kProtocol, "Hello carried fds");
      {
        std::lock_guard lock(pool_->mutex());
        if (outlets_.size() >= options_.max_receivers) throw_error(Errc::kProtocol, "too many receivers");
      }
      add_remote(std::move(sock));
    } catch (const std::exception& e) {
      reject(fd, e.what());
    }
  }

  void add_remote(UniqueFd sock) {
    const std::uint32_t send_cap = options_.ring_capacity;
    const std::uint32_t ret_cap = std::bit_ceil(std::max<std::uint32_t>(2, pool_->buffer_count()));
    const std::size_t bytes = ipc::ChannelHeader::bytes(send_cap, ret_cap);
    UniqueFd ring_fd = make_sealed_memfd("fbuf-ring:" + service_, bytes);
    ChannelMemory mem;
    mem.map = Mapping::map(ring_fd.get(), bytes, PROT_READ | PROT_WRITE, "ring of '" + service_ + "'");
    init_channel_header(mem.map.data(), send_cap, ret_cap);

    capnp::MallocMessageBuilder m;
    auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
    w.setVersion(ipc::kProtocolVersion);
    w.setPoolName(pool_->options().name);
    w.setPoolSize(pool_->total_size());
    const auto& classes = pool_->options().classes;
    auto list = w.initClasses(static_cast<unsigned>(classes.size()));
    for (unsigned i = 0; i < classes.size(); ++i) {
      list[i].setBufferSize(classes[i].buffer_size);
      list[i].setCount(classes[i].count);
    }
    w.setPolicy(static_cast<std::uint8_t>(pool_->options().policy));
    w.setSendCapacity(send_cap);
    w.setReturnCapacity(ret_cap);
    w.setRingBytes(bytes);
    w.setReceiverId(next_id_++);
    const int fds[3] = {pool_->read_only_fd(), ring_fd.get(), pool_->doorbell_fd()};
    if (auto ec = ipc::send_message(sock.get(), m, fds); ec) throw Error(ec, "sending Welcome");

    const int fd = sock.get();
    auto outlet = std::make_shared<RemoteOutlet>(pool_.get(), std::move(sock), std::move(ring_fd),
                                                 std::move(mem), counters_);
    {
      std::lock_guard lock(pool_->mutex());
      outlets_.push_back(outlet);
      pool_->add_source_locked(outlet);
      ++counters_->s.receivers_connected;
      publish_count_locked();
    }
    remotes_.emplace(fd, std::move(outlet));
  }

  void on_remote(std::map<int, std::shared_ptr<RemoteOutlet>>::iterator it, std::uint32_t events) noexcept {
    auto& outlet = it->second;
    if ((events & (EPOLLHUP | EPOLLERR)) != 0) {
      // The receiver's process closed its socket or died.
      {
        std::lock_guard lock(pool_->mutex());
        outlet->drain_locked(false);
        if (!outlet->finished_locked()) {
          outlet->reclaim_all_locked();
          ++counters_->s.receivers_lost;
        }
        prune_locked();
      }
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, it->first, nullptr);
      remotes_.erase(it);
      return;
    }
    // A receiver sends nothing after Hello but its end-of-file (detach).
    ipc::Datagram dg;
    std::error_code ec = ipc::receive_message(it->first, dg, std::chrono::nanoseconds(0));
    if (ec == make_error_code(Errc::kPeerGone) || (events & EPOLLRDHUP) != 0) {
      {
        std::lock_guard lock(pool_->mutex());
        outlet->detach_locked();
        prune_locked();
      }
      // Only a hang-up is of interest now (it is always reported).
      epoll_event ev{};
      ev.events = 0;
      ev.data.fd = it->first;
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, it->first, &ev);
    } else if (!ec) {
      std::lock_guard lock(pool_->mutex());
      ++counters_->s.rejected_handshakes;
    }
  }

  struct Pending {
    UniqueFd fd;
    Clock::time_point since;
  };

  Pool pool_handle_;
  std::shared_ptr<PoolCore> pool_;
  std::string service_;
  SenderOptions options_;
  std::shared_ptr<Counters> counters_;

  std::vector<std::shared_ptr<Outlet>> outlets_;  // guarded by the pool's mutex
  std::uint64_t sequence_ = 0;                    // guarded by the pool's mutex
  bool closed_ = false;                           // guarded by the pool's mutex

  mutable std::mutex count_mu_;
  mutable std::condition_variable count_cv_;
  std::atomic<std::size_t> receivers_{0};

  UniqueFd listen_fd_, epoll_fd_, stop_fd_;
  // Touched only by the control thread (and the destructor after joining it).
  std::map<int, Pending> pending_;
  std::map<int, std::shared_ptr<RemoteOutlet>> remotes_;
  std::uint32_t next_id_ = 1;
  std::thread control_;
};

}  // namespace detail

Sender::Sender(Pool pool, SenderOptions options)
    : core_(std::make_unique<detail::SenderCore>(std::move(pool), std::string(), options)) {}
Sender::Sender(Pool pool, std::string_view service, SenderOptions options)
    : core_(std::make_unique<detail::SenderCore>(std::move(pool), std::string(service), options)) {
  FBUF_REQUIRE(!service.empty(), "a listening Sender needs a service name");
}
Sender::~Sender() = default;
Sender::Sender(Sender&&) noexcept = default;
Sender& Sender::operator=(Sender&&) noexcept = default;

Receiver Sender::connect_local() { return core_->connect_local(); }
Result<Buffer> Sender::try_allocate(std::size_t size) noexcept { return core_->pool_core().try_allocate(size); }
Result<Buffer> Sender::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  return core_->pool_core().allocate(size, timeout);
}
std::error_code Sender::try_send(Buffer&& buffer, std::size_t length) noexcept {
  return core_->send(std::span<Buffer>(&buffer, 1), std::span<const std::size_t>(&length, 1),
                     std::chrono::nanoseconds(0));
}
std::error_code Sender::send(Buffer&& buffer, std::size_t length, std::chrono::nanoseconds timeout) noexcept {
  return core_->send(std::span<Buffer>(&buffer, 1), std::span<const std::size_t>(&length, 1), timeout);
}
std::error_code Sender::send_many(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                                  std::chrono::nanoseconds timeout) noexcept {
  return core_->send(buffers, lengths, timeout);
}
bool Sender::wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const {
  return core_->wait_for_receivers(n, timeout);
}
std::size_t Sender::receiver_count() const noexcept { return core_->receiver_count(); }
SenderStats Sender::stats() const { return core_->stats(); }
const std::string& Sender::service() const noexcept { return core_->service(); }
Pool Sender::pool() const { return core_->pool(); }

}  // namespace fbuf

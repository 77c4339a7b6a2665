// fbuf's ends: a pool buffer is allocated, produced into and sent; the
// consumer reads the producer's memory through a View and drops it. Replies
// travel the same way in the other direction, from the consumer's own pool.

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "ends.h"
#include "fbuf/fbuf.h"

namespace fbuf::bench::peers {

namespace {

fbuf::Policy to_policy(int p) {
  switch (p) {
    case 0: return fbuf::Policy::kVolatile;
    case 1: return fbuf::Policy::kReadOnly;
    case 2: return fbuf::Policy::kCopyOnWrite;
    default: throw std::invalid_argument("unknown fbuf policy " + std::to_string(p));
  }
}

// A reply buffer holds one cache line; a few dozen cover every reply that
// can be in flight (one at a time) plus the lazily returned ones.
constexpr std::uint32_t kReplyBuffers = 64;

// Allocates a buffer of `size` bytes, produces into it and sends it.
class FbufOutlet final : public Outlet {
 public:
  // With `wait_for_receiver` the first send waits for the other side to
  // connect (the producer connects to the reply channel right after the
  // consumer connected to the data channel).
  FbufOutlet(Sender tx, std::size_t size, Mode mode, bool wait_for_receiver)
      : tx_(std::move(tx)), size_(size), mode_(mode), connected_(!wait_for_receiver) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    if (!connected_ && !(connected_ = tx_.wait_for_receivers(1, kOpTimeout))) {
      error_ = "fbuf: the other side never connected";
      return false;
    }
    Result<Buffer> b = tx_.allocate(size_, kOpTimeout);
    if (!b) return fail("allocate", b.error());
    produce(b->data(), size_, seq, flags, mode_);
    if (std::error_code ec = tx_.send(std::move(*b), size_, kOpTimeout); ec) return fail("send", ec);
    return true;
  }

 private:
  bool fail(const char* what, std::error_code ec) {
    error_ = std::string("fbuf ") + what + ": " + ec.message();
    return false;
  }

  Sender tx_;
  std::size_t size_;
  Mode mode_;
  bool connected_;
};

// Receives a View, consumes it and drops it (which returns the buffer).
// With `spin` set, waits the event-loop way: receive(spin) (the library's
// own polling, for at most `spin`), then arm() and epoll_wait() on the
// readiness fd.
class FbufInlet final : public Inlet {
 public:
  FbufInlet(Receiver rx, std::size_t size, Mode mode, std::optional<std::chrono::nanoseconds> spin = std::nullopt)
      : rx_(std::move(rx)), size_(size), mode_(mode), spin_(spin) {
    if (!spin_) return;
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (epoll_ < 0 || ::epoll_ctl(epoll_, EPOLL_CTL_ADD, rx_.fd(), &ev) != 0)
      throw std::system_error(errno, std::system_category(), "epoll for the readiness fd");
  }
  ~FbufInlet() override {
    if (epoll_ >= 0) ::close(epoll_);
  }
  FbufInlet(const FbufInlet&) = delete;
  FbufInlet& operator=(const FbufInlet&) = delete;

  bool next(Consumed& out) override {
    Result<View> v = spin_ ? receive_via_fd() : rx_.receive(kOpTimeout);
    if (!v) {
      error_ = "fbuf receive: " + v.error().message();
      return false;
    }
    if (v->size() < sizeof(Header)) {
      error_ = "fbuf: short message";
      return false;
    }
    out = consume(v->data(), v->size(), mode_);
    if (v->size() != size_) out.data_ok = false;
    return true;
  }

 private:
  Result<View> receive_via_fd() {
    // The library's own spin (receive() polls the ring for its first
    // microseconds before it would sleep), bounded by --spin-us; only when
    // that finds nothing does the consumer arm the fd and sleep in epoll.
    // So the cells differ only in how the consumer sleeps, not in how it
    // polls.
    const auto timedout = make_error_code(Errc::kTimedOut);
    Result<View> v = rx_.receive(*spin_);
    if (v || v.error() != timedout) return v;
    const auto wouldblock = make_error_code(Errc::kWouldBlock);
    const int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(kOpTimeout).count());
    for (;;) {
      if (rx_.arm()) {
        epoll_event ev;
        if (::epoll_wait(epoll_, &ev, 1, ms) == 0) return Errc::kTimedOut;
      }
      v = rx_.try_receive();
      if (v || v.error() != wouldblock) return v;
    }
  }

  Receiver rx_;
  std::size_t size_;
  Mode mode_;
  std::optional<std::chrono::nanoseconds> spin_;
  int epoll_ = -1;
};

// The middle of a path cell. Built in the order the cell's processes meet:
// the relay's Sender first, then it waits for the consumer, then connects
// to the producer (which waits for it before it connects to the reply
// channel the consumer already made).
class FbufRelay final : public Relay {
 public:
  FbufRelay(const EndConfig& c, const std::string& upstream, const std::string& downstream, bool forward)
      : tx_(Pool(PoolOptions{.name = "peer_bench-relay",
                             // Forwarding sends the producer's buffers:
                             // the relay's own pool is never used.
                             .classes = {{forward ? kReplySize : c.size, forward ? 4 : c.depth}},
                             .policy = fbuf::Policy::kVolatile}),
            downstream),
        forward_(forward) {
    if (!tx_.wait_for_receivers(1, kOpTimeout)) throw std::runtime_error("fbuf relay: no consumer connected");
    rx_.emplace(Receiver::connect(upstream, ReceiverOptions{.connect_timeout = kOpTimeout}));
  }

  bool pass(bool& last) override {
    Result<View> v = rx_->receive(kOpTimeout);
    if (!v) return fail("receive", v.error());
    if (v->size() < sizeof(Header)) {
      error_ = "fbuf relay: short message";
      return false;
    }
    Header h;
    std::memcpy(&h, v->data(), sizeof(h));
    last = (h.flags & kFlagStop) != 0;
    if (forward_) {
      if (std::error_code ec = tx_.send(*v, kOpTimeout); ec) return fail("forward", ec);
      return true;
    }
    Result<Buffer> b = tx_.allocate(v->size(), kOpTimeout);
    if (!b) return fail("allocate", b.error());
    std::memcpy(b->data(), v->data(), v->size());
    if (std::error_code ec = tx_.send(std::move(*b), v->size(), kOpTimeout); ec) return fail("send", ec);
    return true;
  }

 private:
  bool fail(const char* what, std::error_code ec) {
    error_ = std::string("fbuf relay ") + what + ": " + ec.message();
    return false;
  }

  Sender tx_;
  std::optional<Receiver> rx_;
  bool forward_;
};

}  // namespace

std::unique_ptr<ProducerEnd> make_fbuf_producer(const EndConfig& c, const std::string& service,
                                                int policy) {
  Pool pool(PoolOptions{.name = "peer_bench",
                        .classes = {{c.size, c.depth}},
                        .policy = to_policy(policy)});
  Sender tx(std::move(pool), service);
  // The consumer publishes its reply channel before it connects here, so
  // once it is connected the reply channel exists.
  if (!tx.wait_for_receivers(1, kOpTimeout)) {
    throw std::runtime_error("fbuf: no consumer connected to '" + service + "'");
  }
  Receiver replies = Receiver::connect(service + "-r", ReceiverOptions{.connect_timeout = kOpTimeout});
  return std::make_unique<ProducerEnd>(std::make_unique<FbufOutlet>(std::move(tx), c.size, c.mode, false),
                                       std::make_unique<FbufInlet>(std::move(replies), kReplySize, Mode::kTransport));
}

std::unique_ptr<ConsumerEnd> make_fbuf_consumer(const EndConfig& c, const std::string& service,
                                                int policy, bool via_fd, const std::string& upstream) {
  Pool reply_pool(PoolOptions{.name = "peer_bench-reply",
                              .classes = {{kReplySize, kReplyBuffers}},
                              .policy = to_policy(policy)});
  Sender reply_tx(std::move(reply_pool), service + "-r");
  Receiver rx = Receiver::connect(upstream.empty() ? service : upstream,
                                  ReceiverOptions{.connect_timeout = kOpTimeout});
  std::optional<std::chrono::nanoseconds> spin;
  if (via_fd) spin = c.spin;
  return std::make_unique<ConsumerEnd>(std::make_unique<FbufInlet>(std::move(rx), c.size, c.mode, spin),
                                       std::make_unique<FbufOutlet>(std::move(reply_tx), kReplySize,
                                                                    Mode::kTransport, true));
}

std::unique_ptr<Relay> make_fbuf_relay(const EndConfig& c, const std::string& upstream,
                                       const std::string& downstream, bool forward) {
  return std::make_unique<FbufRelay>(c, upstream, downstream, forward);
}

Ends make_fbuf_local_pair(const EndConfig& c) {
  Sender tx(Pool(PoolOptions{.name = "peer_bench",
                             .classes = {{c.size, c.depth}},
                             .policy = fbuf::Policy::kVolatile}));
  Receiver rx = tx.connect_local();
  Sender reply_tx(Pool(PoolOptions{.name = "peer_bench-reply",
                                   .classes = {{kReplySize, kReplyBuffers}},
                                   .policy = fbuf::Policy::kVolatile}));
  Receiver replies = reply_tx.connect_local();
  Ends pair;
  pair.producer = std::make_unique<ProducerEnd>(
      std::make_unique<FbufOutlet>(std::move(tx), c.size, c.mode, false),
      std::make_unique<FbufInlet>(std::move(replies), kReplySize, Mode::kTransport));
  pair.consumer = std::make_unique<ConsumerEnd>(
      std::make_unique<FbufInlet>(std::move(rx), c.size, c.mode),
      std::make_unique<FbufOutlet>(std::move(reply_tx), kReplySize, Mode::kTransport, false));
  return pair;
}

}  // namespace fbuf::bench::peers

// fbuf's ends: a pool buffer is allocated, produced into and sent; the
// consumer reads the producer's memory through a View and drops it. Replies
// travel the same way in the other direction, from the consumer's own pool.

#include <cstring>
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

std::string describe(const char* what, std::error_code ec) {
  return std::string("fbuf ") + what + ": " + ec.message();
}

// A reply buffer holds one cache line; a few dozen cover every reply that
// can be in flight (one at a time) plus the lazily returned ones.
constexpr std::uint32_t kReplyBuffers = 64;

class FbufProducer final : public ProducerEnd {
 public:
  FbufProducer(const EndConfig& c, Sender tx, Receiver replies)
      : c_(c), tx_(std::move(tx)), replies_(std::move(replies)) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    Result<Buffer> b = tx_.allocate(c_.size, kOpTimeout);
    if (!b) {
      error_ = describe("allocate", b.error());
      return false;
    }
    produce(b->data(), c_.size, seq, flags, c_.mode);
    if (std::error_code ec = tx_.send(std::move(*b), c_.size, kOpTimeout); ec) {
      error_ = describe("send", ec);
      return false;
    }
    return true;
  }

  bool wait_reply(std::uint64_t seq) override {
    Result<View> v = replies_.receive(kOpTimeout);
    if (!v) {
      error_ = describe("receive(reply)", v.error());
      return false;
    }
    Header h{};
    if (v->size() < sizeof(h)) {
      error_ = "fbuf: short reply";
      return false;
    }
    std::memcpy(&h, v->data(), sizeof(h));
    if (h.seq != seq) {
      error_ = "fbuf: reply to " + std::to_string(h.seq) + ", expected " + std::to_string(seq);
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Sender tx_;
  Receiver replies_;
};

class FbufConsumer final : public ConsumerEnd {
 public:
  FbufConsumer(const EndConfig& c, Receiver rx, Sender reply_tx, bool wait_for_reply_receiver)
      : c_(c), rx_(std::move(rx)), reply_tx_(std::move(reply_tx)),
        reply_connected_(!wait_for_reply_receiver) {}

  bool next(Consumed& out) override {
    Result<View> v = rx_.receive(kOpTimeout);
    if (!v) {
      error_ = describe("receive", v.error());
      return false;
    }
    out = consume(v->data(), v->size(), c_.mode);
    if (v->size() != c_.size) out.data_ok = false;
    return true;  // the View returns the buffer to the producer here
  }

  bool reply(std::uint64_t seq) override {
    if (!reply_connected_) {
      // The producer connects to the reply channel right after this
      // consumer connected to the data channel; the first reply waits
      // for it.
      if (!reply_tx_.wait_for_receivers(1, kOpTimeout)) {
        error_ = "fbuf: the producer never connected to the reply channel";
        return false;
      }
      reply_connected_ = true;
    }
    Result<Buffer> b = reply_tx_.allocate(kReplySize, kOpTimeout);
    if (!b) {
      error_ = describe("allocate(reply)", b.error());
      return false;
    }
    const Header h{seq, 0};
    std::memcpy(b->data(), &h, sizeof(h));
    if (std::error_code ec = reply_tx_.send(std::move(*b), kReplySize, kOpTimeout); ec) {
      error_ = describe("send(reply)", ec);
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Receiver rx_;
  Sender reply_tx_;
  bool reply_connected_;
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
  return std::make_unique<FbufProducer>(c, std::move(tx), std::move(replies));
}

std::unique_ptr<ConsumerEnd> make_fbuf_consumer(const EndConfig& c, const std::string& service,
                                                int policy) {
  Pool reply_pool(PoolOptions{.name = "peer_bench-reply",
                              .classes = {{kReplySize, kReplyBuffers}},
                              .policy = to_policy(policy)});
  Sender reply_tx(std::move(reply_pool), service + "-r");
  Receiver rx = Receiver::connect(service, ReceiverOptions{.connect_timeout = kOpTimeout});
  return std::make_unique<FbufConsumer>(c, std::move(rx), std::move(reply_tx), true);
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
  pair.producer = std::make_unique<FbufProducer>(c, std::move(tx), std::move(replies));
  pair.consumer = std::make_unique<FbufConsumer>(c, std::move(rx), std::move(reply_tx), false);
  return pair;
}

}  // namespace fbuf::bench::peers

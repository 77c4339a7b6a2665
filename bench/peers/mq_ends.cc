// Boost.Interprocess message_queue: a queue of fixed-size message slots in
// a named shared-memory segment, guarded by a process-shared mutex and two
// condition variables. send() copies the message into a slot, receive()
// copies it out: two copies of every byte, as with a pipe, but no syscall
// while neither side has to sleep.

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>

#include <chrono>
#include <cstring>
#include <exception>
#include <string>

#include "bench_sys.h"
#include "ends.h"

namespace fbuf::bench::peers {

namespace bip = boost::interprocess;

namespace {

using Clock = std::chrono::steady_clock;

// Messages the reply queue holds: one reply is in flight at a time.
constexpr unsigned kReplyDepth = 4;

boost::posix_time::ptime deadline() {
  return boost::posix_time::microsec_clock::universal_time() +
         boost::posix_time::seconds(static_cast<long>(kOpTimeout.count()));
}

// Sends with the wait policy of every end here: try for `spin`, then block
// (bounded by kOpTimeout).
bool send_spin(bip::message_queue& q, const void* p, std::size_t n, std::chrono::nanoseconds spin) {
  if (spin.count() > 0) {
    const auto start = Clock::now();
    do {
      if (q.try_send(p, n, 0)) return true;
      cpu_relax();
    } while (Clock::now() - start < spin);
  }
  return q.timed_send(p, n, 0, deadline());
}

// Receives into `p` (which holds the queue's maximum message size).
bool receive_spin(bip::message_queue& q, void* p, std::size_t capacity, std::size_t& got,
                  std::chrono::nanoseconds spin) {
  bip::message_queue::size_type received = 0;
  unsigned priority = 0;
  bool ok = false;
  if (spin.count() > 0) {
    const auto start = Clock::now();
    do {
      ok = q.try_receive(p, capacity, received, priority);
      if (ok) break;
      cpu_relax();
    } while (Clock::now() - start < spin);
  }
  if (!ok) ok = q.timed_receive(p, capacity, received, priority, deadline());
  got = received;
  return ok;
}

class MqProducer final : public ProducerEnd {
 public:
  MqProducer(const EndConfig& c, const std::string& name)
      : c_(c),
        data_(bip::open_only, (name + "-d").c_str()),
        replies_(bip::open_only, (name + "-r").c_str()),
        buffer_(c.size) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    produce(buffer_.data(), c_.size, seq, flags, c_.mode);
    try {
      if (!send_spin(data_, buffer_.data(), c_.size, c_.spin)) {
        error_ = "message_queue send: timed out";
        return false;
      }
    } catch (const std::exception& e) {
      error_ = std::string("message_queue send: ") + e.what();
      return false;
    }
    return true;
  }

  bool wait_reply(std::uint64_t seq) override {
    std::byte r[kReplySize];
    std::size_t got = 0;
    try {
      if (!receive_spin(replies_, r, sizeof(r), got, c_.spin)) {
        error_ = "message_queue receive(reply): timed out";
        return false;
      }
    } catch (const std::exception& e) {
      error_ = std::string("message_queue receive(reply): ") + e.what();
      return false;
    }
    Header h{};
    std::memcpy(&h, r, sizeof(h));
    if (got != kReplySize || h.seq != seq) {
      error_ = "message_queue: bad reply";
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  bip::message_queue data_;
  bip::message_queue replies_;
  PageBuffer buffer_;
};

class MqConsumer final : public ConsumerEnd {
 public:
  MqConsumer(const EndConfig& c, const std::string& name)
      : c_(c),
        data_(bip::open_only, (name + "-d").c_str()),
        replies_(bip::open_only, (name + "-r").c_str()),
        buffer_(c.size) {}

  bool next(Consumed& out) override {
    std::size_t got = 0;
    try {
      if (!receive_spin(data_, buffer_.data(), c_.size, got, c_.spin)) {
        error_ = "message_queue receive: timed out";
        return false;
      }
    } catch (const std::exception& e) {
      error_ = std::string("message_queue receive: ") + e.what();
      return false;
    }
    out = consume(buffer_.data(), c_.size, c_.mode);
    if (got != c_.size) out.data_ok = false;
    return true;
  }

  bool reply(std::uint64_t seq) override {
    std::byte r[kReplySize] = {};
    const Header h{seq, 0};
    std::memcpy(r, &h, sizeof(h));
    try {
      if (!send_spin(replies_, r, sizeof(r), c_.spin)) {
        error_ = "message_queue send(reply): timed out";
        return false;
      }
    } catch (const std::exception& e) {
      error_ = std::string("message_queue send(reply): ") + e.what();
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  bip::message_queue data_;
  bip::message_queue replies_;
  PageBuffer buffer_;
};

}  // namespace

MqQueues::MqQueues(const std::string& name, std::size_t size, std::uint32_t depth) : name_(name) {
  bip::message_queue::remove((name_ + "-d").c_str());
  bip::message_queue::remove((name_ + "-r").c_str());
  // The queues only have to exist for the two ends to open them; the
  // objects here are dropped at once (the named segments stay).
  bip::message_queue data(bip::create_only, (name_ + "-d").c_str(), depth, size);
  bip::message_queue replies(bip::create_only, (name_ + "-r").c_str(), kReplyDepth, kReplySize);
}

MqQueues::~MqQueues() {
  bip::message_queue::remove((name_ + "-d").c_str());
  bip::message_queue::remove((name_ + "-r").c_str());
}

std::unique_ptr<ProducerEnd> make_mq_producer(const EndConfig& c, const std::string& name) {
  return std::make_unique<MqProducer>(c, name);
}

std::unique_ptr<ConsumerEnd> make_mq_consumer(const EndConfig& c, const std::string& name) {
  return std::make_unique<MqConsumer>(c, name);
}

}  // namespace fbuf::bench::peers

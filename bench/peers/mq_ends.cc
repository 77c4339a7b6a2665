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

// Messages the reply queue holds: one reply is in flight at a time.
constexpr unsigned kReplyDepth = 4;

boost::posix_time::ptime deadline() {
  return boost::posix_time::microsec_clock::universal_time() +
         boost::posix_time::seconds(static_cast<long>(kOpTimeout.count()));
}

// Sends with the wait policy of every end here: try for `spin`, then block
// (bounded by kOpTimeout).
bool send_spin(bip::message_queue& q, const void* p, std::size_t n, std::chrono::nanoseconds spin) {
  return poll_for(spin, [&] { return q.try_send(p, n, 0); }) || q.timed_send(p, n, 0, deadline());
}

// Receives into `p` (which holds the queue's maximum message size).
bool receive_spin(bip::message_queue& q, void* p, std::size_t capacity, std::size_t& got,
                  std::chrono::nanoseconds spin) {
  bip::message_queue::size_type received = 0;
  unsigned priority = 0;
  const bool ok = poll_for(spin, [&] { return q.try_receive(p, capacity, received, priority); }) ||
                  q.timed_receive(p, capacity, received, priority, deadline());
  got = received;
  return ok;
}

// Produces into a private buffer and sends (copies) it into the queue.
class MqOutlet final : public Outlet {
 public:
  MqOutlet(const std::string& queue, std::size_t size, Mode mode, std::chrono::nanoseconds spin)
      : q_(bip::open_only, queue.c_str()), size_(size), mode_(mode), spin_(spin), buffer_(size) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    produce(buffer_.data(), size_, seq, flags, mode_);
    try {
      if (send_spin(q_, buffer_.data(), size_, spin_)) return true;
      error_ = "message_queue send: timed out";
    } catch (const std::exception& e) {
      error_ = std::string("message_queue send: ") + e.what();
    }
    return false;
  }

 private:
  bip::message_queue q_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
  PageBuffer buffer_;
};

// Receives (copies) a message into a private buffer and consumes it there.
class MqInlet final : public Inlet {
 public:
  MqInlet(const std::string& queue, std::size_t size, Mode mode, std::chrono::nanoseconds spin)
      : q_(bip::open_only, queue.c_str()), size_(size), mode_(mode), spin_(spin), buffer_(size) {}

  bool next(Consumed& out) override {
    std::size_t got = 0;
    try {
      if (!receive_spin(q_, buffer_.data(), size_, got, spin_)) {
        error_ = "message_queue receive: timed out";
        return false;
      }
    } catch (const std::exception& e) {
      error_ = std::string("message_queue receive: ") + e.what();
      return false;
    }
    out = consume(buffer_.data(), size_, mode_);
    if (got != size_) out.data_ok = false;
    return true;
  }

 private:
  bip::message_queue q_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
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
  return std::make_unique<ProducerEnd>(std::make_unique<MqOutlet>(name + "-d", c.size, c.mode, c.spin),
                                       std::make_unique<MqInlet>(name + "-r", kReplySize, Mode::kTransport, c.spin));
}

std::unique_ptr<ConsumerEnd> make_mq_consumer(const EndConfig& c, const std::string& name) {
  return std::make_unique<ConsumerEnd>(std::make_unique<MqInlet>(name + "-d", c.size, c.mode, c.spin),
                                       std::make_unique<MqOutlet>(name + "-r", kReplySize, Mode::kTransport, c.spin));
}

}  // namespace fbuf::bench::peers

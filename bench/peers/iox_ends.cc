// Eclipse iceoryx 2.0: zero-copy publish/subscribe through shared-memory
// mempools managed by the RouDi daemon. The producer loans a chunk,
// produces into it and publishes it; the consumer takes it, reads it in
// place and releases it. Replies are a second topic in the other direction.
//
// Loss-free like every other transport here: the publisher waits for a
// full subscriber queue (ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER with
// QueueFullPolicy::BLOCK_PRODUCER; iceoryx then yields in a loop until
// the queue has room). A waiting subscriber polls take() for `spin`, then
// sleeps in a WaitSet (a semaphore in shared memory), as fbuf spins then
// sleeps on a futex.

#include "ends.h"

#ifdef PEER_BENCH_HAVE_ICEORYX

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/mepoo/chunk_settings.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "iceoryx_versions.hpp"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;

// Payloads start on a cache line, as fbuf's (page-aligned) buffers do.
constexpr std::uint32_t kAlignment = 64;
// Replies in flight: one at a time.
constexpr std::uint64_t kReplyQueue = 8;

iox::capro::ServiceDescription topic(const std::string& instance, const char* event) {
  // Built from std::strings: from a string literal, GCC 12 warns about a
  // branch of iceoryx's constructor that cannot run (-Warray-bounds).
  return iox::capro::ServiceDescription(
      iox::capro::IdString_t(iox::cxx::TruncateToCapacity, std::string("PeerBench")),
      iox::capro::IdString_t(iox::cxx::TruncateToCapacity, instance),
      iox::capro::IdString_t(iox::cxx::TruncateToCapacity, std::string(event)));
}

iox::popo::PublisherOptions publisher_options() {
  iox::popo::PublisherOptions o;
  o.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  return o;
}

iox::popo::SubscriberOptions subscriber_options(std::uint64_t queue) {
  iox::popo::SubscriberOptions o;
  o.queueCapacity = queue;
  o.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  return o;
}

const char* to_string(iox::popo::AllocationError e) {
  switch (e) {
    case iox::popo::AllocationError::NO_MEMPOOLS_AVAILABLE: return "NO_MEMPOOLS_AVAILABLE";
    case iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS: return "RUNNING_OUT_OF_CHUNKS";
    case iox::popo::AllocationError::TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL:
      return "TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL";
    case iox::popo::AllocationError::INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER:
      return "INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER";
    default: return "allocation error";
  }
}

// Waits up to kOpTimeout for `done()`, checking every millisecond.
template <class Done>
bool wait_until(Done done) {
  const auto deadline = Clock::now() + kOpTimeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Loans a chunk, produces into it and publishes it.
class IoxOutlet final : public Outlet {
 public:
  // With `wait_for_subscriber` the first send waits for the other side to
  // subscribe (the producer subscribes to the reply topic after it saw the
  // consumer subscribe to the data topic); otherwise the constructor does.
  IoxOutlet(const iox::capro::ServiceDescription& topic, std::size_t size, Mode mode, bool wait_for_subscriber)
      : pub_(topic, publisher_options()), size_(size), mode_(mode), connected_(!wait_for_subscriber) {
    if (connected_ && !wait_until([&] { return pub_.hasSubscribers(); })) {
      throw std::runtime_error("iceoryx: no subscriber for the data topic");
    }
  }

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    if (!connected_ && !(connected_ = wait_until([&] { return pub_.hasSubscribers(); }))) {
      error_ = "iceoryx: the other side never subscribed";
      return false;
    }
    auto chunk = pub_.loan(static_cast<std::uint32_t>(size_), kAlignment);
    if (chunk.has_error()) {
      error_ = std::string("iceoryx loan: ") + to_string(chunk.get_error());
      return false;
    }
    produce(static_cast<std::byte*>(chunk.value()), size_, seq, flags, mode_);
    pub_.publish(chunk.value());
    return true;
  }

 private:
  iox::popo::UntypedPublisher pub_;
  std::size_t size_;
  Mode mode_;
  bool connected_;
};

// Takes a chunk, consumes it in place and releases it. A waiting
// consumer polls take() for `spin`, then sleeps in a WaitSet.
class IoxInlet final : public Inlet {
 public:
  IoxInlet(const iox::capro::ServiceDescription& topic, std::uint64_t queue, std::size_t size, Mode mode,
           std::chrono::nanoseconds spin)
      : sub_(topic, subscriber_options(queue)), size_(size), mode_(mode), spin_(spin) {
    if (ws_.attachState(sub_, iox::popo::SubscriberState::HAS_DATA).has_error()) {
      throw std::runtime_error("iceoryx: cannot attach the subscriber to a WaitSet");
    }
    if (!wait_until([&] { return sub_.getSubscriptionState() == iox::SubscribeState::SUBSCRIBED; })) {
      throw std::runtime_error("iceoryx: not subscribed to a topic");
    }
  }

  bool next(Consumed& out) override {
    const void* p = nullptr;
    if (!take(p)) return false;
    out = consume(static_cast<const std::byte*>(p), size_, mode_);
    if (iox::mepoo::ChunkHeader::fromUserPayload(p)->userPayloadSize() != size_) out.data_ok = false;
    sub_.release(p);
    return true;
  }

  // Takes the next sample into `p` (polling for `spin`, then sleeping in
  // the WaitSet); the caller gives it back with release().
  bool take(const void*& p) {
    p = nullptr;
    bool failed = false;
    auto ready = [&] {
      auto r = sub_.take();
      if (!r.has_error()) p = r.value();
      failed = r.has_error() && r.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE;
      return p != nullptr || failed;
    };
    const auto deadline = Clock::now() + kOpTimeout;
    if (!poll_for(spin_, ready)) {
      while (!ready() && Clock::now() < deadline) ws_.timedWait(iox::units::Duration::fromMilliseconds(20));
    }
    if (p == nullptr) {
      error_ = failed ? "iceoryx take: too many chunks held" : "iceoryx take: timed out";
      return false;
    }
    return true;
  }

  void release(const void* p) { sub_.release(p); }

 private:
  iox::popo::UntypedSubscriber sub_;
  // Declared after the subscriber, so destroyed (detached) before it.
  iox::popo::WaitSet<> ws_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
};

// Takes a sample, loans a chunk downstream, copies the payload over,
// publishes it and releases the sample: iceoryx 2.0 has no way to publish
// a received sample again.
class IoxRelay final : public Relay {
 public:
  IoxRelay(const EndConfig& c, const std::string& upstream, const std::string& downstream)
      : in_(topic(upstream, "data"), c.depth, c.size, Mode::kTransport, c.spin),
        pub_(topic(downstream, "data"), publisher_options()) {}

  bool pass(bool& last) override {
    const void* p = nullptr;
    if (!in_.take(p)) {
      error_ = "iceoryx relay: " + in_.error();
      return false;
    }
    const std::uint32_t size = iox::mepoo::ChunkHeader::fromUserPayload(p)->userPayloadSize();
    Header h;
    std::memcpy(&h, p, sizeof(h));
    last = (h.flags & kFlagStop) != 0;
    if (!connected_ && !(connected_ = wait_until([&] { return pub_.hasSubscribers(); }))) {
      error_ = "iceoryx relay: the consumer never subscribed";
      return false;
    }
    auto chunk = pub_.loan(size, kAlignment);
    if (chunk.has_error()) {
      error_ = std::string("iceoryx relay loan: ") + to_string(chunk.get_error());
      return false;
    }
    std::memcpy(chunk.value(), p, size);
    pub_.publish(chunk.value());
    in_.release(p);
    return true;
  }

 private:
  IoxInlet in_;
  iox::popo::UntypedPublisher pub_;
  bool connected_ = false;
};

}  // namespace

bool iceoryx_compiled() noexcept { return true; }

const char* iceoryx_version() noexcept { return ICEORYX_LATEST_RELEASE_VERSION; }

void iceoryx_init_runtime(const std::string& name) {
  // Debian's build logs every registration at debug level; warnings and
  // errors still show.
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                        iox::log::LogLevelOutput::kHideLogLevel);
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name));
}

std::unique_ptr<Relay> make_iox_relay(const EndConfig& c, const std::string& upstream,
                                      const std::string& downstream) {
  return std::make_unique<IoxRelay>(c, upstream, downstream);
}

std::unique_ptr<ProducerEnd> make_iox_producer(const EndConfig& c, const std::string& instance) {
  auto data = std::make_unique<IoxOutlet>(topic(instance, "data"), c.size, c.mode, false);
  return std::make_unique<ProducerEnd>(
      std::move(data), std::make_unique<IoxInlet>(topic(instance, "reply"), kReplyQueue, kReplySize, Mode::kTransport,
                                                  c.spin));
}

std::unique_ptr<ConsumerEnd> make_iox_consumer(const EndConfig& c, const std::string& instance,
                                               const std::string& data_instance) {
  auto data = std::make_unique<IoxInlet>(topic(data_instance.empty() ? instance : data_instance, "data"), c.depth,
                                         c.size, c.mode, c.spin);
  auto replies = std::make_unique<IoxOutlet>(topic(instance, "reply"), kReplySize, Mode::kTransport, true);
  return std::make_unique<ConsumerEnd>(std::move(data), std::move(replies));
}

std::size_t iceoryx_chunk_overhead(std::size_t size) noexcept {
  auto s = iox::mepoo::ChunkSettings::create(static_cast<std::uint32_t>(size), kAlignment);
  if (s.has_error()) return 4096;
  return s.value().requiredChunkSize() - size;
}

}  // namespace fbuf::bench::peers

#else  // !PEER_BENCH_HAVE_ICEORYX

#include <stdexcept>

namespace fbuf::bench::peers {

namespace {
[[noreturn]] void missing() {
  throw std::runtime_error("peer_bench was built without iceoryx (CMake found no iceoryx_posh)");
}
}  // namespace

bool iceoryx_compiled() noexcept { return false; }
const char* iceoryx_version() noexcept { return "not built"; }
void iceoryx_init_runtime(const std::string&) { missing(); }
std::unique_ptr<ProducerEnd> make_iox_producer(const EndConfig&, const std::string&) { missing(); }
std::unique_ptr<ConsumerEnd> make_iox_consumer(const EndConfig&, const std::string&, const std::string&) {
  missing();
}
std::unique_ptr<Relay> make_iox_relay(const EndConfig&, const std::string&, const std::string&) { missing(); }
std::size_t iceoryx_chunk_overhead(std::size_t) noexcept { return 0; }

}  // namespace fbuf::bench::peers

#endif  // PEER_BENCH_HAVE_ICEORYX

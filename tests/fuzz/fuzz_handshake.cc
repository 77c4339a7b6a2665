// libFuzzer target for the control-plane decoders: arbitrary bytes, as a
// peer could send them in one datagram, go to decode_hello(),
// decode_welcome(), request_kind(), decode_monitor_request(),
// decode_monitor_reply(), and the path's decode_peer_message(),
// decode_holder_grant() and decode_pool_announce(). Each may throw fbuf::Error and nothing else; any
// other exception escapes, terminates, and libFuzzer records the input. A
// Welcome that decodes must satisfy every promise control.h makes about
// WelcomeInfo, a MonitorReply every promise of monitor.h about MonitorInfo,
// and both must decode again to the same values once re-encoded.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "fbuf/error.h"
#include "fbuf/base/fd.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/handshake.capnp.h"
#include "ipc/layout.h"
#include "ipc/monitor.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fbuf::ipc::WelcomeInfo;

bool power_of_two_ring(std::uint32_t v) {
  return v != 0 && (v & (v - 1)) == 0 && v <= fbuf::ipc::kMaxRingCapacity;
}

void check_welcome(const WelcomeInfo& info) {
  const std::uint64_t page = fbuf::detail::page_size();
  FUZZ_CHECK(!info.classes.empty());
  FUZZ_CHECK(info.classes.size() <= fbuf::ipc::kMaxClasses);
  FUZZ_CHECK(info.pool_name.size() <= 256);
  FUZZ_CHECK(static_cast<std::uint8_t>(info.policy) <= static_cast<std::uint8_t>(fbuf::Policy::kCopyOnWrite));
  std::uint64_t bytes = 0, count = 0;
  for (const auto& c : info.classes) {
    FUZZ_CHECK(c.buffer_size != 0);
    FUZZ_CHECK(c.buffer_size % page == 0);
    // Descriptor offsets and lengths are 32-bit: a buffer must fit them.
    FUZZ_CHECK(c.buffer_size <= (std::uint64_t{1} << 32) - page);
    FUZZ_CHECK(c.count != 0);
    count += c.count;
    bytes += std::uint64_t{c.buffer_size} * c.count;
  }
  FUZZ_CHECK(count <= fbuf::ipc::kMaxBuffers);
  FUZZ_CHECK(info.pool_size == bytes);
  FUZZ_CHECK(power_of_two_ring(info.send_capacity));
  FUZZ_CHECK(power_of_two_ring(info.return_capacity));
  // The return ring must hold every buffer at once, or an honest receiver
  // could be unable to give a buffer back.
  FUZZ_CHECK(info.return_capacity >= count);
  FUZZ_CHECK(info.ring_bytes == fbuf::ipc::ChannelHeader::bytes(info.send_capacity, info.return_capacity));
}

// Encodes `info` as a Welcome again; decoding that must give back the same
// values (the decoder keeps nothing it did not check, and drops nothing).
void check_round_trip(const WelcomeInfo& info) {
  capnp::MallocMessageBuilder message;
  auto w = message.initRoot<fbuf::ipc::proto::ControlMessage>().initWelcome();
  w.setVersion(fbuf::ipc::kProtocolVersion);
  w.setPoolName(info.pool_name.c_str());
  w.setPoolSize(info.pool_size);
  auto classes = w.initClasses(static_cast<unsigned>(info.classes.size()));
  for (unsigned i = 0; i < classes.size(); ++i) {
    classes[i].setBufferSize(info.classes[i].buffer_size);
    classes[i].setCount(info.classes[i].count);
  }
  w.setPolicy(static_cast<std::uint8_t>(info.policy));
  w.setSendCapacity(info.send_capacity);
  w.setReturnCapacity(info.return_capacity);
  w.setRingBytes(info.ring_bytes);
  w.setReceiverId(info.receiver_id);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);

  WelcomeInfo again;
  try {
    again = fbuf::ipc::decode_welcome(words);
  } catch (const fbuf::Error& e) {
    std::fprintf(stderr, "a decoded Welcome does not decode again: %s\n", e.what());
    __builtin_trap();
  }
  FUZZ_CHECK(again.pool_name == info.pool_name);
  FUZZ_CHECK(again.pool_size == info.pool_size);
  FUZZ_CHECK(again.classes.size() == info.classes.size());
  for (std::size_t i = 0; i < info.classes.size(); ++i) {
    FUZZ_CHECK(again.classes[i].buffer_size == info.classes[i].buffer_size);
    FUZZ_CHECK(again.classes[i].count == info.classes[i].count);
  }
  FUZZ_CHECK(again.policy == info.policy);
  FUZZ_CHECK(again.send_capacity == info.send_capacity);
  FUZZ_CHECK(again.return_capacity == info.return_capacity);
  FUZZ_CHECK(again.ring_bytes == info.ring_bytes);
  FUZZ_CHECK(again.receiver_id == info.receiver_id);
}

void check_monitor(const fbuf::ipc::MonitorInfo& info) {
  FUZZ_CHECK(info.service.size() <= fbuf::ipc::kMaxServiceName);
  FUZZ_CHECK(info.pool_name.size() <= fbuf::ipc::kMaxMonitorPoolName);
  FUZZ_CHECK(static_cast<std::uint8_t>(info.policy) <= static_cast<std::uint8_t>(fbuf::Policy::kCopyOnWrite));
  FUZZ_CHECK(static_cast<std::uint8_t>(info.slow_policy) <=
             static_cast<std::uint8_t>(fbuf::SlowReceiverPolicy::kCutOff));
  FUZZ_CHECK(info.classes.size() <= fbuf::ipc::kMaxClasses);
  std::uint64_t sealed_total = 0, sealed_free = 0;
  for (const auto& c : info.classes) {
    FUZZ_CHECK(c.free <= c.count);
    FUZZ_CHECK(c.count <= fbuf::ipc::kMaxBuffers);
    FUZZ_CHECK(c.sealed_free <= (c.sealed ? c.count : 0));
    if (c.sealed) {
      sealed_total += c.count;
      sealed_free += c.sealed_free;
      FUZZ_CHECK(c.buffer_size <= info.sealed_copy_size);
    }
  }
  FUZZ_CHECK(info.sealed_total == sealed_total);
  FUZZ_CHECK(info.sealed_free == sealed_free);
  FUZZ_CHECK(std::uint64_t{info.sealed_free} + info.sealed_in_flight <= info.sealed_total);
  FUZZ_CHECK(info.sealed_in_flight <= info.sealed_copies);
  FUZZ_CHECK(info.receivers.size() <= fbuf::ipc::kMaxMonitorReceivers);
  for (const auto& r : info.receivers) {
    FUZZ_CHECK(r.queued <= r.ring_capacity);
    FUZZ_CHECK(r.ring_capacity <= fbuf::ipc::kMaxRingCapacity);
    FUZZ_CHECK(r.held <= fbuf::ipc::kMaxBuffers);
    FUZZ_CHECK(static_cast<std::uint8_t>(r.slow_policy) <=
               static_cast<std::uint8_t>(fbuf::SlowReceiverPolicy::kCutOff));
  }
}

void check_monitor_round_trip(const fbuf::ipc::MonitorInfo& info) {
  capnp::MallocMessageBuilder message;
  fbuf::ipc::build_monitor_reply(message, info);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  fbuf::ipc::MonitorInfo again;
  try {
    again = fbuf::ipc::decode_monitor_reply(words);
  } catch (const fbuf::Error& e) {
    std::fprintf(stderr, "a decoded MonitorReply does not decode again: %s\n", e.what());
    __builtin_trap();
  }
  FUZZ_CHECK(again.service == info.service);
  FUZZ_CHECK(again.pool_name == info.pool_name);
  FUZZ_CHECK(again.classes.size() == info.classes.size());
  FUZZ_CHECK(again.receivers.size() == info.receivers.size());
  for (std::size_t i = 0; i < info.receivers.size(); ++i) {
    FUZZ_CHECK(again.receivers[i].held == info.receivers[i].held);
    FUZZ_CHECK(again.receivers[i].queued == info.receivers[i].queued);
    FUZZ_CHECK(again.receivers[i].delivered == info.receivers[i].delivered);
  }
  FUZZ_CHECK(again.stats.sent == info.stats.sent);
  FUZZ_CHECK(again.receivers_omitted == info.receivers_omitted);
  FUZZ_CHECK(again.returns_waiting == info.returns_waiting);
  FUZZ_CHECK(again.sealed_copy_size == info.sealed_copy_size);
  FUZZ_CHECK(again.sealed_total == info.sealed_total);
  FUZZ_CHECK(again.sealed_free == info.sealed_free);
  FUZZ_CHECK(again.sealed_in_flight == info.sealed_in_flight);
  FUZZ_CHECK(again.sealed_copies == info.sealed_copies);
  FUZZ_CHECK(again.sealed_fallbacks == info.sealed_fallbacks);
}

// The path: a PoolAnnounce that decodes describes a pool as a Welcome does
// and a holder ring that can take a return of every buffer; it decodes
// again to the same values once re-encoded.
void check_announce(const fbuf::ipc::PoolAnnounceInfo& a) {
  FUZZ_CHECK(a.slot >= 1 && a.slot <= fbuf::ipc::kMaxPoolSlots);
  FUZZ_CHECK(a.token != 0);
  FUZZ_CHECK(a.pool.send_capacity == fbuf::ipc::kHolderSendCapacity);
  check_welcome(a.pool);
  capnp::MallocMessageBuilder message;
  fbuf::ipc::build_pool_announce(message, a);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  fbuf::ipc::PoolAnnounceInfo again;
  try {
    again = fbuf::ipc::decode_pool_announce(words);
  } catch (const fbuf::Error& e) {
    std::fprintf(stderr, "a decoded PoolAnnounce does not decode again: %s\n", e.what());
    __builtin_trap();
  }
  FUZZ_CHECK(again.slot == a.slot && again.token == a.token);
  FUZZ_CHECK(again.pool.pool_name == a.pool.pool_name && again.pool.pool_size == a.pool.pool_size);
  FUZZ_CHECK(again.pool.classes.size() == a.pool.classes.size());
  FUZZ_CHECK(again.pool.return_capacity == a.pool.return_capacity && again.pool.ring_bytes == a.pool.ring_bytes);
}

void check_grant(const fbuf::ipc::HolderGrantInfo& g) {
  FUZZ_CHECK(g.token != 0);
  FUZZ_CHECK(power_of_two_ring(g.return_capacity));
  FUZZ_CHECK(g.ring_bytes == fbuf::ipc::ChannelHeader::bytes(fbuf::ipc::kHolderSendCapacity, g.return_capacity));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // receive_message() hands the decoders a word-aligned array of whole
  // words; this does the same. The array is exactly as long as the message,
  // so AddressSanitizer sees any read past its end by instrumented code
  // (fbuf and the generated accessors; the system libcapnp is not).
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  if (words.size() != 0) std::memcpy(words.begin(), data, words.size() * sizeof(capnp::word));

  try {
    (void)fbuf::ipc::decode_hello(words);
  } catch (const fbuf::Error&) {
  }

  try {
    WelcomeInfo info = fbuf::ipc::decode_welcome(words);
    check_welcome(info);
    check_round_trip(info);
  } catch (const fbuf::Error&) {
  }

  // The monitoring request, as the control thread reads it, and its reply,
  // as the fbuf tool reads it.
  try {
    if (fbuf::ipc::request_kind(words) == fbuf::ipc::Request::kMonitor) fbuf::ipc::decode_monitor_request(words);
  } catch (const fbuf::Error&) {
  }
  try {
    fbuf::ipc::MonitorInfo info = fbuf::ipc::decode_monitor_reply(words);
    check_monitor(info);
    check_monitor_round_trip(info);
  } catch (const fbuf::Error&) {
  }

  // The path: what a stage sends its owner, the owner's grant, and the
  // announcement a downstream receiver reads.
  try {
    (void)fbuf::ipc::decode_peer_message(words);
  } catch (const fbuf::Error&) {
  }
  try {
    check_grant(fbuf::ipc::decode_holder_grant(words));
  } catch (const fbuf::Error&) {
  }
  try {
    check_announce(fbuf::ipc::decode_pool_announce(words));
  } catch (const fbuf::Error&) {
  }
  return 0;
}

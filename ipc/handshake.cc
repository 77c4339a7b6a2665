#include "ipc/handshake.h"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fbuf/base/assert.h"
#include "fbuf/base/fd.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/layout.h"

namespace fbuf::ipc {
namespace {

[[noreturn]] void protocol_error(const std::string& what) { detail::throw_error(Errc::kProtocol, what); }

capnp::ReaderOptions reader_options() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = kMaxControlBytes / sizeof(capnp::word);
  o.nestingLimit = 8;
  return o;
}

// The pool's geometry, as a Welcome or a PoolAnnounce states it: checked
// field by field into `info`. Returns the pool's buffer count.
template <class Reader>
std::uint64_t decode_geometry(Reader w, WelcomeInfo& info) {
  auto name = w.getPoolName();
  if (name.size() > 256) protocol_error("pool name longer than 256 bytes");
  info.pool_name = name.cStr();
  if (w.getPolicy() > static_cast<std::uint8_t>(Policy::kCopyOnWrite))
    protocol_error("unknown policy " + std::to_string(w.getPolicy()));
  info.policy = static_cast<Policy>(w.getPolicy());

  auto classes = w.getClasses();
  if (classes.size() == 0 || classes.size() > kMaxClasses)
    protocol_error("pool has " + std::to_string(classes.size()) + " size classes");
  const std::uint64_t page = detail::page_size();
  std::uint64_t total = 0, count = 0;
  for (auto c : classes) {
    std::uint64_t size = c.getBufferSize();
    if (size == 0 || size % page != 0 || size > (std::uint64_t{1} << 32) - page)
      protocol_error("bad buffer size " + std::to_string(size));
    if (c.getCount() == 0 || c.getCount() > kMaxBuffers) protocol_error("bad buffer count " + std::to_string(c.getCount()));
    count += c.getCount();
    if (count > kMaxBuffers) protocol_error("more than 2^24 buffers");
    total += size * c.getCount();  // at most 2^32 * 2^24: no overflow
    info.classes.push_back(SizeClass{static_cast<std::size_t>(size), c.getCount()});
  }
  if (w.getPoolSize() != total)
    protocol_error("pool size " + std::to_string(w.getPoolSize()) + " does not match its classes (" +
                   std::to_string(total) + ")");
  info.pool_size = total;
  return count;
}

// A ring memory's capacities: powers of two up to 2^22, the return ring at
// least as large as the pool.
void check_capacities(std::uint32_t send, std::uint32_t ret, std::uint64_t buffers) {
  auto pow2 = [](std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0 && v <= kMaxRingCapacity; };
  if (!pow2(send) || !pow2(ret))
    protocol_error("ring capacities " + std::to_string(send) + "/" + std::to_string(ret) +
                   " are not powers of two up to 2^22");
  if (ret < buffers)
    protocol_error("return ring (" + std::to_string(ret) + ") smaller than the pool (" + std::to_string(buffers) +
                   " buffers)");
}

void check_path_version(std::uint32_t version, const char* what) {
  if (version != kPathVersion)
    detail::throw_error(Errc::kVersionMismatch, std::string(what) + " version " + std::to_string(version) +
                                                    ", this side speaks " + std::to_string(kPathVersion));
}

}  // namespace

HelloInfo decode_hello(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (!m.isHello()) protocol_error("expected Hello");
    auto h = m.getHello();
    if (h.getVersion() != kProtocolVersion)
      detail::throw_error(Errc::kVersionMismatch, "Hello version " + std::to_string(h.getVersion()) +
                                                      ", this side speaks " + std::to_string(kProtocolVersion));
    HelloInfo info;
    info.pid = h.getPid();
    // Each read once into a local, checked, then used.
    const std::uint8_t policy = h.getSlowPolicy();
    if (policy > static_cast<std::uint8_t>(SlowReceiverPolicy::kCutOff))
      protocol_error("unknown slow-receiver policy " + std::to_string(policy));
    info.slow_policy = static_cast<SlowReceiverPolicy>(policy);
    info.receiver_budget = h.getReceiverBudget();
    const std::uint64_t hold = h.getHoldTimeoutNs();
    if (hold > static_cast<std::uint64_t>(INT64_MAX)) protocol_error("hold timeout " + std::to_string(hold) + " ns");
    info.hold_timeout_ns = hold;
    return info;
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed Hello: ") + e.getDescription().cStr());
  }
}

WelcomeInfo decode_welcome(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (m.isReject()) {
      auto r = m.getReject();
      protocol_error("sender rejected the connection: " + std::string(r.getReason().cStr()));
    }
    if (!m.isWelcome()) protocol_error("expected Welcome");
    auto w = m.getWelcome();
    if (w.getVersion() != kProtocolVersion)
      detail::throw_error(Errc::kVersionMismatch, "Welcome version " + std::to_string(w.getVersion()) +
                                                      ", this side speaks " + std::to_string(kProtocolVersion));
    WelcomeInfo info;
    const std::uint64_t count = decode_geometry(w, info);

    info.send_capacity = w.getSendCapacity();
    info.return_capacity = w.getReturnCapacity();
    check_capacities(info.send_capacity, info.return_capacity, count);
    info.ring_bytes = ChannelHeader::bytes(info.send_capacity, info.return_capacity);
    if (w.getRingBytes() != info.ring_bytes)
      protocol_error("ring size " + std::to_string(w.getRingBytes()) + ", expected " + std::to_string(info.ring_bytes));
    info.receiver_id = w.getReceiverId();
    return info;
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed Welcome: ") + e.getDescription().cStr());
  }
}

void build_hello(capnp::MessageBuilder& m, const HelloInfo& info) {
  auto h = m.initRoot<proto::ControlMessage>().initHello();
  h.setVersion(kProtocolVersion);
  h.setPid(info.pid);
  h.setSlowPolicy(static_cast<std::uint8_t>(info.slow_policy));
  h.setReceiverBudget(info.receiver_budget);
  h.setHoldTimeoutNs(info.hold_timeout_ns);
}

void build_welcome(capnp::MessageBuilder& m, const WelcomeInfo& info) {
  auto w = m.initRoot<proto::ControlMessage>().initWelcome();
  w.setVersion(kProtocolVersion);
  w.setPoolName(info.pool_name);
  w.setPoolSize(info.pool_size);
  auto list = w.initClasses(static_cast<unsigned>(info.classes.size()));
  for (unsigned i = 0; i < info.classes.size(); ++i) {
    list[i].setBufferSize(info.classes[i].buffer_size);
    list[i].setCount(info.classes[i].count);
  }
  w.setPolicy(static_cast<std::uint8_t>(info.policy));
  w.setSendCapacity(info.send_capacity);
  w.setReturnCapacity(info.return_capacity);
  w.setRingBytes(info.ring_bytes);
  w.setReceiverId(info.receiver_id);
}

void build_reject(capnp::MessageBuilder& m, const std::string& reason) {
  auto r = m.initRoot<proto::ControlMessage>().initReject();
  r.setVersion(kProtocolVersion);
  r.setReason(reason.substr(0, 1024));
}

Request request_kind(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (m.isHello()) return Request::kHello;
    if (m.isMonitorRequest()) return Request::kMonitor;
    protocol_error("expected Hello or MonitorRequest");
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed request: ") + e.getDescription().cStr());
  }
}

void decode_monitor_request(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (!m.isMonitorRequest()) protocol_error("expected MonitorRequest");
    const std::uint32_t version = m.getMonitorRequest().getVersion();
    if (version != kMonitorVersion)
      detail::throw_error(Errc::kVersionMismatch, "MonitorRequest version " + std::to_string(version) +
                                                      ", this side speaks " + std::to_string(kMonitorVersion));
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed MonitorRequest: ") + e.getDescription().cStr());
  }
}

namespace {

// The sealed-copy state of a reply against what the pool keeps true
// (fbuf/buffers/sealed.cc): the sealed classes have as many slots as
// buffers, the copy size is the largest sealed class's, a slot is free, in
// flight or (during a send) neither, a copy in flight was counted as a
// copy, and a pool without sealed slots neither copies nor falls back.
void check_sealed(const MonitorInfo& info) {
  std::uint64_t total = 0, free = 0, largest = 0;
  for (const MonitorClass& c : info.classes) {
    if (!c.sealed) continue;
    total += c.count;
    free += c.sealed_free;
    largest = std::max(largest, c.buffer_size);
  }
  if (total != 0 && info.policy == Policy::kVolatile) protocol_error("a volatile pool with sealed classes");
  if (info.sealed_copy_size != largest)
    protocol_error("sealed copies up to " + std::to_string(info.sealed_copy_size) +
                   " bytes, but the largest sealed class holds " + std::to_string(largest));
  if (info.sealed_total != total)
    protocol_error(std::to_string(info.sealed_total) + " sealed slots, but the sealed classes have " +
                   std::to_string(total));
  if (info.sealed_free != free)
    protocol_error(std::to_string(info.sealed_free) + " sealed slots free, but the sealed classes have " +
                   std::to_string(free));
  if (std::uint64_t{info.sealed_free} + info.sealed_in_flight > info.sealed_total)
    protocol_error("sealed slots: " + std::to_string(info.sealed_free) + " free and " +
                   std::to_string(info.sealed_in_flight) + " in flight of " + std::to_string(info.sealed_total));
  if (info.sealed_in_flight > info.sealed_copies)
    protocol_error(std::to_string(info.sealed_in_flight) + " sealed copies in flight, but " +
                   std::to_string(info.sealed_copies) + " made");
  if (info.sealed_total == 0 && (info.sealed_copies != 0 || info.sealed_fallbacks != 0))
    protocol_error("sealed copies or fallbacks counted without sealed slots");
}

}  // namespace

MonitorInfo decode_monitor_reply(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (m.isReject()) {
      // Bounded like everything else before it is quoted.
      std::string reason(m.getReject().getReason().cStr());
      if (reason.size() > 1024) reason.resize(1024);
      protocol_error("the service refused the monitoring request: " + reason);
    }
    if (!m.isMonitorReply()) protocol_error("expected MonitorReply");
    auto r = m.getMonitorReply();
    if (r.getVersion() != kMonitorVersion)
      detail::throw_error(Errc::kVersionMismatch, "MonitorReply version " + std::to_string(r.getVersion()) +
                                                      ", this side speaks " + std::to_string(kMonitorVersion));
    MonitorInfo info;
    info.protocol_version = r.getProtocolVersion();
    auto service = r.getService();
    if (service.size() > kMaxServiceName) protocol_error("service name longer than " + std::to_string(kMaxServiceName));
    info.service = service.cStr();
    info.owner_pid = r.getOwnerPid();
    info.owner_uid = r.getOwnerUid();
    auto pool = r.getPoolName();
    if (pool.size() > kMaxMonitorPoolName) protocol_error("pool name longer than 256 bytes");
    info.pool_name = pool.cStr();
    const std::uint8_t policy = r.getPolicy();
    if (policy > static_cast<std::uint8_t>(Policy::kCopyOnWrite)) protocol_error("unknown policy " + std::to_string(policy));
    info.policy = static_cast<Policy>(policy);
    auto classes = r.getClasses();
    if (classes.size() > kMaxClasses) protocol_error("MonitorReply has " + std::to_string(classes.size()) + " size classes");
    info.classes.reserve(classes.size());
    for (auto c : classes) {
      MonitorClass k{c.getBufferSize(), c.getCount(), c.getFree(), c.getSealed(), c.getSealedFree()};
      if (k.count > kMaxBuffers || k.free > k.count)
        protocol_error("size class with " + std::to_string(k.free) + " of " + std::to_string(k.count) + " free");
      // A sealed class has as many sealed slots as buffers.
      if (k.sealed_free > (k.sealed ? k.count : 0))
        protocol_error("size class with " + std::to_string(k.sealed_free) + " of " +
                       std::to_string(k.sealed ? k.count : 0) + " sealed slots free");
      info.classes.push_back(k);
    }
    const std::uint8_t slow = r.getSlowPolicy();
    if (slow > static_cast<std::uint8_t>(SlowReceiverPolicy::kCutOff))
      protocol_error("unknown slow-receiver policy " + std::to_string(slow));
    info.slow_policy = static_cast<SlowReceiverPolicy>(slow);
    info.receiver_budget = r.getReceiverBudget();
    info.hold_timeout_ns = r.getHoldTimeoutNs();
    info.ring_capacity = r.getRingCapacity();
    info.max_receivers = r.getMaxReceivers();
    info.stats.sent = r.getSent();
    info.stats.delivered = r.getDelivered();
    info.stats.returned = r.getReturned();
    info.stats.rejected_returns = r.getRejectedReturns();
    info.stats.rejected_handshakes = r.getRejectedHandshakes();
    info.stats.receivers_connected = r.getReceiversConnected();
    info.stats.receivers_lost = r.getReceiversLost();
    info.stats.dropped = r.getDropped();
    info.stats.receivers_cut_off = r.getReceiversCutOff();
    info.monitor_requests = r.getMonitorRequests();
    auto receivers = r.getReceivers();
    if (receivers.size() > kMaxMonitorReceivers)
      protocol_error("MonitorReply lists " + std::to_string(receivers.size()) + " receivers");
    info.receivers.reserve(receivers.size());
    for (auto x : receivers) {
      MonitorReceiver v;
      v.id = x.getId();
      v.pid = x.getPid();
      v.uid = x.getUid();
      v.connected_since_ns = x.getConnectedSinceNs();
      v.local = x.getLocal();
      v.held = x.getHeld();
      v.queued = x.getQueued();
      v.ring_capacity = x.getRingCapacity();
      if (v.ring_capacity > kMaxRingCapacity || v.queued > v.ring_capacity || v.held > kMaxBuffers)
        protocol_error("receiver " + std::to_string(v.id) + " holds " + std::to_string(v.held) + " and has " +
                       std::to_string(v.queued) + " of " + std::to_string(v.ring_capacity) + " queued");
      v.delivered = x.getDelivered();
      v.returned = x.getReturned();
      v.dropped = x.getDropped();
      v.rejected_returns = x.getRejectedReturns();
      v.cut_off = x.getCutOff();
      v.detached = x.getDetached();
      const std::uint8_t p = x.getSlowPolicy();
      if (p > static_cast<std::uint8_t>(SlowReceiverPolicy::kCutOff))
        protocol_error("unknown slow-receiver policy " + std::to_string(p));
      v.slow_policy = static_cast<SlowReceiverPolicy>(p);
      v.receiver_budget = x.getReceiverBudget();
      v.hold_timeout_ns = x.getHoldTimeoutNs();
      info.receivers.push_back(v);
    }
    info.receivers_omitted = r.getReceiversOmitted();
    info.returns_waiting = r.getReturnsWaiting();
    info.sealed_copy_size = r.getSealedCopySize();
    info.sealed_total = r.getSealedTotal();
    info.sealed_free = r.getSealedFree();
    info.sealed_in_flight = r.getSealedInFlight();
    info.sealed_copies = r.getSealedCopies();
    info.sealed_fallbacks = r.getSealedFallbacks();
    check_sealed(info);
    return info;
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed MonitorReply: ") + e.getDescription().cStr());
  }
}

void build_monitor_request(capnp::MessageBuilder& m) {
  m.initRoot<proto::ControlMessage>().initMonitorRequest().setVersion(kMonitorVersion);
}

void build_monitor_reply(capnp::MessageBuilder& m, const MonitorInfo& info) {
  auto r = m.initRoot<proto::ControlMessage>().initMonitorReply();
  r.setVersion(kMonitorVersion);
  r.setProtocolVersion(kProtocolVersion);
  r.setService(info.service.substr(0, kMaxServiceName));
  r.setOwnerPid(info.owner_pid);
  r.setOwnerUid(info.owner_uid);
  r.setPoolName(info.pool_name.substr(0, kMaxMonitorPoolName));
  r.setPolicy(static_cast<std::uint8_t>(info.policy));
  auto classes = r.initClasses(static_cast<unsigned>(info.classes.size()));
  for (unsigned i = 0; i < info.classes.size(); ++i) {
    classes[i].setBufferSize(info.classes[i].buffer_size);
    classes[i].setCount(info.classes[i].count);
    classes[i].setFree(info.classes[i].free);
    classes[i].setSealed(info.classes[i].sealed);
    classes[i].setSealedFree(info.classes[i].sealed_free);
  }
  r.setSlowPolicy(static_cast<std::uint8_t>(info.slow_policy));
  r.setReceiverBudget(info.receiver_budget);
  r.setHoldTimeoutNs(info.hold_timeout_ns);
  r.setRingCapacity(info.ring_capacity);
  r.setMaxReceivers(info.max_receivers);
  r.setSent(info.stats.sent);
  r.setDelivered(info.stats.delivered);
  r.setReturned(info.stats.returned);
  r.setRejectedReturns(info.stats.rejected_returns);
  r.setRejectedHandshakes(info.stats.rejected_handshakes);
  r.setReceiversConnected(info.stats.receivers_connected);
  r.setReceiversLost(info.stats.receivers_lost);
  r.setDropped(info.stats.dropped);
  r.setReceiversCutOff(info.stats.receivers_cut_off);
  r.setMonitorRequests(info.monitor_requests);
  const std::size_t listed = std::min<std::size_t>(info.receivers.size(), kMaxMonitorReceivers);
  auto list = r.initReceivers(static_cast<unsigned>(listed));
  for (unsigned i = 0; i < listed; ++i) {
    const MonitorReceiver& v = info.receivers[i];
    auto x = list[i];
    x.setId(v.id);
    x.setPid(v.pid);
    x.setUid(v.uid);
    x.setConnectedSinceNs(v.connected_since_ns);
    x.setLocal(v.local);
    x.setHeld(v.held);
    x.setQueued(v.queued);
    x.setRingCapacity(v.ring_capacity);
    x.setDelivered(v.delivered);
    x.setReturned(v.returned);
    x.setDropped(v.dropped);
    x.setRejectedReturns(v.rejected_returns);
    x.setCutOff(v.cut_off);
    x.setDetached(v.detached);
    x.setSlowPolicy(static_cast<std::uint8_t>(v.slow_policy));
    x.setReceiverBudget(v.receiver_budget);
    x.setHoldTimeoutNs(v.hold_timeout_ns);
  }
  r.setReturnsWaiting(info.returns_waiting);
  r.setSealedCopySize(info.sealed_copy_size);
  r.setSealedTotal(info.sealed_total);
  r.setSealedFree(info.sealed_free);
  r.setSealedInFlight(info.sealed_in_flight);
  r.setSealedCopies(info.sealed_copies);
  r.setSealedFallbacks(info.sealed_fallbacks);
  r.setReceiversOmitted(info.receivers_omitted +
                        static_cast<std::uint32_t>(info.receivers.size() - listed));
}

PeerMessage decode_peer_message(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (m.isHolderRequest()) {
      check_path_version(m.getHolderRequest().getVersion(), "HolderRequest");
      return PeerMessage::kHolderRequest;
    }
    if (m.isDrainRequest()) {
      check_path_version(m.getDrainRequest().getVersion(), "DrainRequest");
      return PeerMessage::kDrainRequest;
    }
    protocol_error("expected HolderRequest or DrainRequest");
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed request: ") + e.getDescription().cStr());
  }
}

HolderGrantInfo decode_holder_grant(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (m.isReject()) {
      std::string reason(m.getReject().getReason().cStr());
      if (reason.size() > 1024) reason.resize(1024);
      protocol_error("the owner refused a holder: " + reason);
    }
    if (!m.isHolderGrant()) protocol_error("expected HolderGrant");
    auto g = m.getHolderGrant();
    check_path_version(g.getVersion(), "HolderGrant");
    HolderGrantInfo info;
    info.token = g.getToken();
    if (info.token == 0) protocol_error("holder token 0");
    info.return_capacity = g.getReturnCapacity();
    check_capacities(kHolderSendCapacity, info.return_capacity, 0);
    info.ring_bytes = ChannelHeader::bytes(kHolderSendCapacity, info.return_capacity);
    if (g.getRingBytes() != info.ring_bytes)
      protocol_error("holder ring size " + std::to_string(g.getRingBytes()) + ", expected " +
                     std::to_string(info.ring_bytes));
    return info;
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed HolderGrant: ") + e.getDescription().cStr());
  }
}

bool is_pool_announce(kj::ArrayPtr<const capnp::word> words) noexcept {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    return reader.getRoot<proto::ControlMessage>().isPoolAnnounce();
  } catch (...) {
    return false;
  }
}

PoolAnnounceInfo decode_pool_announce(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (!m.isPoolAnnounce()) protocol_error("expected PoolAnnounce");
    auto a = m.getPoolAnnounce();
    check_path_version(a.getVersion(), "PoolAnnounce");
    PoolAnnounceInfo info;
    info.slot = a.getSlot();
    if (info.slot == 0 || info.slot > kMaxPoolSlots)
      protocol_error("pool slot " + std::to_string(info.slot) + " outside 1.." + std::to_string(kMaxPoolSlots));
    const std::uint64_t count = decode_geometry(a, info.pool);
    info.pool.send_capacity = kHolderSendCapacity;
    info.pool.return_capacity = a.getReturnCapacity();
    check_capacities(kHolderSendCapacity, info.pool.return_capacity, count);
    info.pool.ring_bytes = ChannelHeader::bytes(kHolderSendCapacity, info.pool.return_capacity);
    if (a.getRingBytes() != info.pool.ring_bytes)
      protocol_error("holder ring size " + std::to_string(a.getRingBytes()) + ", expected " +
                     std::to_string(info.pool.ring_bytes));
    info.token = a.getToken();
    if (info.token == 0) protocol_error("holder token 0");
    return info;
  } catch (const kj::Exception& e) {
    protocol_error(std::string("malformed PoolAnnounce: ") + e.getDescription().cStr());
  }
}

void build_holder_request(capnp::MessageBuilder& m) {
  m.initRoot<proto::ControlMessage>().initHolderRequest().setVersion(kPathVersion);
}

void build_holder_grant(capnp::MessageBuilder& m, const HolderGrantInfo& info) {
  auto g = m.initRoot<proto::ControlMessage>().initHolderGrant();
  g.setVersion(kPathVersion);
  g.setToken(info.token);
  g.setReturnCapacity(info.return_capacity);
  g.setRingBytes(info.ring_bytes);
}

void build_drain_request(capnp::MessageBuilder& m) {
  m.initRoot<proto::ControlMessage>().initDrainRequest().setVersion(kPathVersion);
}

void build_pool_announce(capnp::MessageBuilder& m, const PoolAnnounceInfo& info) {
  auto a = m.initRoot<proto::ControlMessage>().initPoolAnnounce();
  a.setVersion(kPathVersion);
  a.setSlot(info.slot);
  a.setPoolName(info.pool.pool_name);
  a.setPoolSize(info.pool.pool_size);
  auto list = a.initClasses(static_cast<unsigned>(info.pool.classes.size()));
  for (unsigned i = 0; i < info.pool.classes.size(); ++i) {
    list[i].setBufferSize(info.pool.classes[i].buffer_size);
    list[i].setCount(info.pool.classes[i].count);
  }
  a.setPolicy(static_cast<std::uint8_t>(info.pool.policy));
  a.setReturnCapacity(info.pool.return_capacity);
  a.setRingBytes(info.pool.ring_bytes);
  a.setToken(info.token);
}

void check_memfd(int fd, std::uint64_t size, const char* what) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) detail::throw_errno(std::string("fstat(") + what + ")");
  if (!S_ISREG(st.st_mode)) protocol_error(std::string(what) + " is not a memfd");
  char link[64] = {};
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
  if (n < 7 || std::strncmp(link, "/memfd:", 7) != 0) protocol_error(std::string(what) + " is not a memfd");
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    protocol_error(std::string(what) + " is not sealed against shrinking and growing");
  if (static_cast<std::uint64_t>(st.st_size) != size)
    protocol_error(std::string(what) + " is " + std::to_string(st.st_size) + " bytes, expected " +
                   std::to_string(size));
}

void check_ready_socket(int fd, const char* what) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) detail::throw_errno(std::string("fstat(") + what + ")");
  if (!S_ISSOCK(st.st_mode)) protocol_error(std::string(what) + " is not a socket");
  int domain = 0, type = 0, listening = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX)
    protocol_error(std::string(what) + " is not a Unix socket");
  len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET)
    protocol_error(std::string(what) + " is not a SOCK_SEQPACKET socket");
  len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening != 0)
    protocol_error(std::string(what) + " is a listening socket");
  sockaddr_storage peer{};
  len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0)
    protocol_error(std::string(what) + " is not connected");
}

}  // namespace fbuf::ipc

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
    auto name = w.getPoolName();
    if (name.size() > 256) protocol_error("pool name longer than 256 bytes");
    info.pool_name = name.cStr();
    if (w.getPolicy() > static_cast<std::uint8_t>(Policy::kCopyOnWrite))
      protocol_error("unknown policy " + std::to_string(w.getPolicy()));
    info.policy = static_cast<Policy>(w.getPolicy());

    auto classes = w.getClasses();
    if (classes.size() == 0 || classes.size() > kMaxClasses)
      protocol_error("Welcome has " + std::to_string(classes.size()) + " size classes");
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

    auto pow2 = [](std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0 && v <= kMaxRingCapacity; };
    info.send_capacity = w.getSendCapacity();
    info.return_capacity = w.getReturnCapacity();
    if (!pow2(info.send_capacity) || !pow2(info.return_capacity))
      protocol_error("ring capacities " + std::to_string(info.send_capacity) + "/" +
                     std::to_string(info.return_capacity) + " are not powers of two up to 2^22");
    if (info.return_capacity < count)
      protocol_error("return ring (" + std::to_string(info.return_capacity) + ") smaller than the pool (" +
                     std::to_string(count) + " buffers)");
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
      MonitorClass k{c.getBufferSize(), c.getCount(), c.getFree()};
      if (k.count > kMaxBuffers || k.free > k.count)
        protocol_error("size class with " + std::to_string(k.free) + " of " + std::to_string(k.count) + " free");
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
  r.setReceiversOmitted(info.receivers_omitted +
                        static_cast<std::uint32_t>(info.receivers.size() - listed));
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

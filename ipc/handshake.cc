#include "ipc/handshake.h"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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

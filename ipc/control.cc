#include "ipc/control.h"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "ipc/handshake.capnp.h"
#include "ipc/layout.h"

namespace fbuf::ipc {
namespace {

using detail::UniqueFd;

[[noreturn]] void protocol_error(const std::string& what) { detail::throw_error(Errc::kProtocol, what); }

sockaddr_un make_address(std::string_view service, socklen_t& len) {
  std::string name = service_address(service);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Abstract namespace: sun_path[0] is NUL and the name is not
  // NUL-terminated. It vanishes with its last socket, so a crashed sender
  // leaves nothing stale behind.
  std::memcpy(addr.sun_path, name.data(), name.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  return addr;
}

capnp::ReaderOptions reader_options() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = kMaxControlBytes / sizeof(capnp::word);
  o.nestingLimit = 8;
  return o;
}

}  // namespace

std::string service_address(std::string_view service) {
  if (service.empty() || service.size() > kMaxServiceName)
    detail::throw_error(Errc::kInvalidArgument,
                        "service name must be 1 to " + std::to_string(kMaxServiceName) + " bytes");
  for (char c : service)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      detail::throw_error(Errc::kInvalidArgument, "service name has a control character");
  std::string addr(1, '\0');
  addr += "fbuf/";
  addr += service;
  return addr;
}

UniqueFd listen_service(std::string_view service) {
  socklen_t len = 0;
  sockaddr_un addr = make_address(service, len);
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) detail::throw_errno("socket(service '" + std::string(service) + "')");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    detail::throw_errno("bind(service '" + std::string(service) + "')");
  if (::listen(fd.get(), 64) != 0) detail::throw_errno("listen(service '" + std::string(service) + "')");
  return fd;
}

UniqueFd connect_service(std::string_view service, std::chrono::nanoseconds timeout) {
  socklen_t len = 0;
  sockaddr_un addr = make_address(service, len);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd) detail::throw_errno("socket(service '" + std::string(service) + "')");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) return fd;
    // ECONNREFUSED: nobody listens yet; EAGAIN: the backlog is full.
    if ((errno != ECONNREFUSED && errno != EAGAIN && errno != ENOENT) ||
        std::chrono::steady_clock::now() >= deadline)
      detail::throw_errno("connect(service '" + std::string(service) + "')");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::error_code send_message(int sock, capnp::MessageBuilder& message, std::span<const int> fds) noexcept {
  try {
    kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    iovec iov{bytes.begin(), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxControlFds)] = {};
    if (!fds.empty()) {
      if (fds.size() > kMaxControlFds) return make_error_code(Errc::kInvalidArgument);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do {
      n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return {errno, std::system_category()};
    if (static_cast<std::size_t>(n) != bytes.size()) return make_error_code(Errc::kProtocol);
    return {};
  } catch (...) {
    return make_error_code(Errc::kProtocol);
  }
}

std::error_code receive_message(int sock, Datagram& out, std::chrono::nanoseconds timeout) noexcept {
  pollfd p{sock, POLLIN, 0};
  int ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(timeout).count());
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return {errno, std::system_category()};
  if (r == 0) return make_error_code(Errc::kTimedOut);

  try {
    auto words = kj::heapArray<capnp::word>(kMaxControlBytes / sizeof(capnp::word));
    auto bytes = words.asBytes();
    iovec iov{bytes.begin(), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxControlFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return {errno, std::system_category()};

    // Take ownership of every fd that arrived before judging the message,
    // so a rejected one leaks nothing.
    std::vector<UniqueFd> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
    if (n == 0) return make_error_code(Errc::kPeerGone);
    // A short control buffer drops fds silently but for this flag.
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) return make_error_code(Errc::kProtocol);
    if (n % sizeof(capnp::word) != 0) return make_error_code(Errc::kProtocol);
    // capnp::word is not copyable; copy the bytes.
    out.words = kj::heapArray<capnp::word>(static_cast<std::size_t>(n) / sizeof(capnp::word));
    std::memcpy(out.words.begin(), words.begin(), static_cast<std::size_t>(n));
    out.fds = std::move(fds);
    return {};
  } catch (...) {
    return make_error_code(Errc::kProtocol);
  }
}

std::uint32_t decode_hello(kj::ArrayPtr<const capnp::word> words) {
  try {
    capnp::FlatArrayMessageReader reader(words, reader_options());
    auto m = reader.getRoot<proto::ControlMessage>();
    if (!m.isHello()) protocol_error("expected Hello");
    auto h = m.getHello();
    if (h.getVersion() != kProtocolVersion)
      detail::throw_error(Errc::kVersionMismatch, "Hello version " + std::to_string(h.getVersion()) +
                                                      ", this side speaks " + std::to_string(kProtocolVersion));
    return h.getPid();
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

}  // namespace fbuf::ipc

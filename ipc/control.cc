#include "ipc/control.h"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/error.h"

namespace fbuf::ipc {
namespace {

using detail::UniqueFd;

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
  const auto deadline = detail::deadline_after(timeout);
  for (;;) {
    // Non-blocking: a blocking connect to a full backlog waits in the
    // kernel, past any timeout. This way a full backlog answers EAGAIN at
    // once and the loop below keeps the deadline.
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) detail::throw_errno("socket(service '" + std::string(service) + "')");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      // Back to blocking for the handshake's sends; receives poll first.
      int flags = ::fcntl(fd.get(), F_GETFL);
      if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
        detail::throw_errno("fcntl(service '" + std::string(service) + "')");
      return fd;
    }
    // ECONNREFUSED / ENOENT: nobody listens yet; EAGAIN: the backlog is full.
    const int err = errno;
    if ((err != ECONNREFUSED && err != EAGAIN && err != ENOENT) || detail::Clock::now() >= deadline) {
      errno = err == EAGAIN ? ETIMEDOUT : err;
      detail::throw_errno("connect(service '" + std::string(service) + "')" +
                          (err == EAGAIN ? ": the service's backlog stayed full" : ""));
    }
    std::this_thread::sleep_for(detail::time_left(deadline, std::chrono::milliseconds(5)));
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
  // Whole milliseconds, rounded up, saturating: kForever waits without end.
  int ms = -1;
  if (timeout <= std::chrono::nanoseconds(0)) {
    ms = 0;
  } else if (timeout < std::chrono::milliseconds(INT_MAX)) {
    ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(timeout).count());
  }
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

std::error_code exchange(int sock, capnp::MessageBuilder& request, Datagram& answer, std::chrono::nanoseconds timeout,
                         bool& send_failed) noexcept {
  const std::error_code sent = send_message(sock, request, {});
  send_failed = static_cast<bool>(sent);
  std::error_code ec = sent ? sent : receive_message(sock, answer, timeout);
  if (ec == std::errc::broken_pipe || ec == std::errc::connection_reset) {
    if (Datagram again; !receive_message(sock, again, std::chrono::nanoseconds(0))) {
      answer = std::move(again);
      ec = {};
    }
  }
  return ec;
}

}  // namespace fbuf::ipc

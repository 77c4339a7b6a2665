#include "fbuf/base/readiness.h"

#include <sys/socket.h>

#include <cerrno>

#include "fbuf/base/assert.h"

namespace fbuf::detail {
namespace {

// Records drain_ready() reads at most per call. An honest peer queues one
// per arming; a flood from a hostile one is left to cost spurious
// wake-ups.
constexpr int kMaxDrain = 16;

}  // namespace

ReadyPair make_ready_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0)
    throw_errno("socketpair(readiness)");
  return ReadyPair{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

void signal_ready(int fd) noexcept {
  if (fd < 0) return;
  const char byte = 1;
  // EAGAIN: the socket is full, so it is readable already. EPIPE or
  // ECONNRESET: the other side closed its end and waits no more.
  (void)::send(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

bool drain_ready(int fd) noexcept {
  char buf[8];
  for (int i = 0; i < kMaxDrain; ++i) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return false;  // the owner's end is closed
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // drained
    // Anything else (ENOTCONN, ECONNRESET) means no signal can come any
    // more; the socket then polls as hung up, so the stream must end
    // rather than leave an epoll loop spinning on it.
    return false;
  }
  return true;
}

}  // namespace fbuf::detail

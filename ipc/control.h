// The control plane's transport: a service's Unix socket (abstract
// namespace, SOCK_SEQPACKET) and Cap'n Proto messages carried one per
// datagram with fds attached by SCM_RIGHTS. Private to the library.
#pragma once

#include <capnp/message.h>
#include <kj/array.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fbuf/base/fd.h"

namespace fbuf::ipc {

inline constexpr std::size_t kMaxControlBytes = 64 * 1024;
inline constexpr std::size_t kMaxControlFds = 8;
inline constexpr std::size_t kMaxServiceName = 96;

// Checks a service name (1..96 printable bytes, no NUL) and returns the
// abstract socket address for it. Throws Error(kInvalidArgument).
std::string service_address(std::string_view service);

// A listening socket for `service`, non-blocking. Throws Error, with
// EADDRINUSE if another sender holds the name.
detail::UniqueFd listen_service(std::string_view service);
// A connected socket, retrying while nobody listens or the backlog is full,
// up to `timeout`; the connect itself never blocks past it.
detail::UniqueFd connect_service(std::string_view service, std::chrono::nanoseconds timeout);

// Sends one message with `fds` attached. Returns an errno-based code.
std::error_code send_message(int sock, capnp::MessageBuilder& message, std::span<const int> fds) noexcept;

// One received datagram: its words and the fds that came with it.
struct Datagram {
  kj::Array<capnp::word> words;
  std::vector<detail::UniqueFd> fds;
};
// Receives one datagram, waiting up to `timeout` (0: don't wait). Rejects
// truncated data or fds (MSG_TRUNC / MSG_CTRUNC) with Errc::kProtocol,
// closing whatever fds did arrive; EOF gives Errc::kPeerGone.
std::error_code receive_message(int sock, Datagram& out, std::chrono::nanoseconds timeout) noexcept;

// Sends `request` (no fds) and receives the one answer, waiting up to
// `timeout`. A service that refuses at accept (another user, too many
// pending handshakes) sends its Reject and closes at once, maybe before the
// request arrives: the send then fails (EPIPE), or the kernel reports the
// reset (ECONNRESET: the request was unread) before the Reject queued
// behind it; either way a Reject that came is read and returned as the
// answer. `send_failed` says which half an error came from.
std::error_code exchange(int sock, capnp::MessageBuilder& request, Datagram& answer, std::chrono::nanoseconds timeout,
                         bool& send_failed) noexcept;

}  // namespace fbuf::ipc

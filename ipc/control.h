// The control plane: a service's Unix socket (abstract namespace,
// SOCK_SEQPACKET), Cap'n Proto messages carried one per datagram with fds
// attached by SCM_RIGHTS, and the validating decoders for what a peer sends.
// Private to the library.
#pragma once

#include <capnp/message.h>
#include <kj/array.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fbuf/pool.h"
#include "fbuf/sys.h"

namespace fbuf::ipc {

inline constexpr std::size_t kMaxControlBytes = 64 * 1024;
inline constexpr std::size_t kMaxControlFds = 8;
inline constexpr std::size_t kMaxServiceName = 96;
inline constexpr std::uint32_t kMaxRingCapacity = 1u << 22;
inline constexpr std::uint32_t kMaxBuffers = 1u << 24;
inline constexpr std::size_t kMaxClasses = 64;

// Checks a service name (1..96 printable bytes, no NUL) and returns the
// abstract socket address for it. Throws Error(kInvalidArgument).
std::string service_address(std::string_view service);

// A listening socket for `service`, non-blocking. Throws Error, with
// EADDRINUSE if another sender holds the name.
detail::UniqueFd listen_service(std::string_view service);
// A connected socket, retrying while nobody listens, up to `timeout`.
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

// What a receiver learns from a Welcome, after validation.
struct WelcomeInfo {
  std::string pool_name;
  std::uint64_t pool_size = 0;
  std::vector<SizeClass> classes;  // in buffer-index order
  Policy policy = Policy::kVolatile;
  std::uint32_t send_capacity = 0;
  std::uint32_t return_capacity = 0;
  std::uint64_t ring_bytes = 0;
  std::uint32_t receiver_id = 0;
};

// Decode a peer's message. Each throws Error (kProtocol, kVersionMismatch,
// with the offending values in what()) and never anything else, whatever
// the bytes: they are the fuzzing targets for the handshake.
std::uint32_t decode_hello(kj::ArrayPtr<const capnp::word> words);
WelcomeInfo decode_welcome(kj::ArrayPtr<const capnp::word> words);

// Checks that `fd` is a memfd of exactly `size` bytes sealed against
// shrinking and growing. Throws Error(kProtocol) naming `what`.
void check_memfd(int fd, std::uint64_t size, const char* what);

}  // namespace fbuf::ipc

// The handshake: the validating decoders for what a peer sends on the
// control socket (Hello, Welcome) and the checks of the fds a Welcome
// carries. Private to the library.
#pragma once

#include <algorithm>
#include <bit>

#include <capnp/message.h>
#include <kj/array.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fbuf/base/limits.h"
#include "fbuf/pool.h"
#include "fbuf/sender.h"
#include "ipc/monitor.h"

namespace fbuf::ipc {

using detail::kMaxBuffers;
using detail::kMaxClasses;
using detail::kMaxRingCapacity;

// What a sender learns from a Hello, after validation.
struct HelloInfo {
  std::uint32_t pid = 0;
  // What the receiver asks for itself (zero: nothing).
  SlowReceiverPolicy slow_policy = SlowReceiverPolicy::kBlock;
  std::uint32_t receiver_budget = 0;
  std::uint64_t hold_timeout_ns = 0;  // at most INT64_MAX
};

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
HelloInfo decode_hello(kj::ArrayPtr<const capnp::word> words);
WelcomeInfo decode_welcome(kj::ArrayPtr<const capnp::word> words);

// What a connection's first message asks for: a receiver's Hello or a
// monitoring request. Throws Error(kProtocol) for anything else, or bytes
// that are no message.
enum class Request { kHello, kMonitor };
Request request_kind(kj::ArrayPtr<const capnp::word> words);
// Checks a MonitorRequest (its version: kVersionMismatch). Throws Error and
// nothing else.
void decode_monitor_request(kj::ArrayPtr<const capnp::word> words);
// Decodes and checks a MonitorReply against the limits in monitor.h; a
// Reject throws Error(kProtocol) with its reason. Throws Error and nothing
// else, whatever the bytes.
MonitorInfo decode_monitor_reply(kj::ArrayPtr<const capnp::word> words);

// --- The path (docs/design.md, "The path"). ---
// The version of the path's messages, apart from the handshake's.
inline constexpr std::uint32_t kPathVersion = 1;
// Upstream pools a connection may announce (slots 1..kMaxPoolSlots).
inline constexpr std::uint32_t kMaxPoolSlots = 16;
inline constexpr std::size_t kHolderGrantFds = 2;
inline constexpr std::size_t kPoolAnnounceFds = 4;
// A return ring (a receiver's or a holder's) holds this many times the
// pool (rounded up to a power of two): one pool's worth for returns, the
// rest for lend records, so a stage forwarding each view to up to five
// receivers never needs the owner to drain early, not even after the
// owner's Sender closed (docs/design.md, "The path").
inline constexpr std::uint32_t kReturnRingPools = 8;
inline std::uint32_t return_ring_capacity(std::uint32_t buffers) noexcept {
  const std::uint32_t pools = std::bit_ceil(std::max<std::uint32_t>(2, buffers));
  return pools >= kMaxRingCapacity / kReturnRingPools ? kMaxRingCapacity : pools * kReturnRingPools;
}
// A holder's ring memory: a ChannelHeader with a send ring of one unused
// slot and a return ring.
inline constexpr std::uint32_t kHolderSendCapacity = 1;

struct HolderGrantInfo {
  std::uint32_t token = 0;
  std::uint32_t return_capacity = 0;
  std::uint64_t ring_bytes = 0;
};

struct PoolAnnounceInfo {
  std::uint32_t slot = 0;
  // The pool's geometry and the holder ring's (send_capacity is
  // kHolderSendCapacity, receiver_id unused).
  WelcomeInfo pool;
  std::uint32_t token = 0;
};

// What a stage may send its owner after the handshake, on its receiver
// socket or a holder socket. Throws Error(kProtocol, kVersionMismatch).
enum class PeerMessage { kHolderRequest, kDrainRequest };
PeerMessage decode_peer_message(kj::ArrayPtr<const capnp::word> words);
// Each throws Error and nothing else, whatever the bytes; a Reject throws
// Error(kProtocol) with its reason.
HolderGrantInfo decode_holder_grant(kj::ArrayPtr<const capnp::word> words);
PoolAnnounceInfo decode_pool_announce(kj::ArrayPtr<const capnp::word> words);
// True if `words` is a PoolAnnounce (decode it to check it).
bool is_pool_announce(kj::ArrayPtr<const capnp::word> words) noexcept;

void build_holder_request(capnp::MessageBuilder& m);
void build_holder_grant(capnp::MessageBuilder& m, const HolderGrantInfo& info);
void build_drain_request(capnp::MessageBuilder& m);
void build_pool_announce(capnp::MessageBuilder& m, const PoolAnnounceInfo& info);

// Build this side's messages.
void build_hello(capnp::MessageBuilder& m, const HelloInfo& info);
void build_welcome(capnp::MessageBuilder& m, const WelcomeInfo& info);
void build_reject(capnp::MessageBuilder& m, const std::string& reason);
void build_monitor_request(capnp::MessageBuilder& m);
// Lists at most kMaxMonitorReceivers receivers; the rest are counted in
// receiversOmitted.
void build_monitor_reply(capnp::MessageBuilder& m, const MonitorInfo& info);

// Checks that `fd` is a memfd of exactly `size` bytes sealed against
// shrinking and growing. Throws Error(kProtocol) naming `what`.
void check_memfd(int fd, std::uint64_t size, const char* what);

// The fds a Welcome carries (ipc/handshake.capnp lists them).
inline constexpr std::size_t kWelcomeFds = 4;

// Checks that `fd` is a connected AF_UNIX SOCK_SEQPACKET socket (the
// receiver's end of its readiness pair). Throws Error(kProtocol) naming
// `what`.
void check_ready_socket(int fd, const char* what);

}  // namespace fbuf::ipc

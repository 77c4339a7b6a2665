// The monitoring request: what a listening Sender tells an inspecting
// client (the `fbuf` command-line tool) about its pool, its policy and its
// receivers, and the client side that asks for it. Private to the library;
// the CLI reaches it through fbuf_internal.
//
// Invariants:
//  - A MonitorInfo from decode_monitor_reply() (and so from
//    query_monitor()) is checked against the limits below: strings and
//    lists are bounded, enumerations are known values, free <= count per
//    class, queued <= ring capacity, and the sealed-copy state is
//    consistent (the sealed classes' counts add up to the sealed slots,
//    free + in flight <= slots, the copy size is a sealed class's). Nothing
//    in it is trusted further: the tool only prints it.
//  - The sender builds its MonitorInfo with the pool's lock held for one
//    bounded copy (O(receivers + classes), no allocation, no syscall); it
//    never drains rings or waits for anything (docs/design.md,
//    "Monitoring").
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fbuf/pool.h"
#include "fbuf/sender.h"

namespace fbuf::ipc {

// The monitoring protocol's version, apart from the handshake's.
inline constexpr std::uint32_t kMonitorVersion = 1;
// At most this many receivers are listed in one reply (the rest are only
// counted), so a reply always fits one 64 KiB datagram.
inline constexpr std::uint32_t kMaxMonitorReceivers = 256;
inline constexpr std::size_t kMaxMonitorPoolName = 256;

struct MonitorClass {
  std::uint64_t buffer_size = 0;
  std::uint32_t count = 0;
  std::uint32_t free = 0;
  // Sealed copies: the class sends by copying into sealed slots of its own
  // (`count` of them), `sealed_free` of which are free.
  bool sealed = false;
  std::uint32_t sealed_free = 0;
};

struct MonitorReceiver {
  std::uint32_t id = 0;
  std::uint32_t pid = 0;
  std::uint32_t uid = 0;
  std::int64_t connected_since_ns = 0;  // wall clock, since the Unix epoch
  bool local = false;                   // a thread of the owner's process
  std::uint32_t held = 0;               // taken and not returned
  std::uint32_t queued = 0;             // in its ring, not taken yet
  std::uint32_t ring_capacity = 0;
  std::uint64_t delivered = 0;
  std::uint64_t returned = 0;  // remote receivers only
  std::uint64_t dropped = 0;
  std::uint64_t rejected_returns = 0;
  bool cut_off = false;
  bool detached = false;
  SlowReceiverPolicy slow_policy = SlowReceiverPolicy::kBlock;
  std::uint32_t receiver_budget = 0;
  std::uint64_t hold_timeout_ns = 0;

  std::uint32_t outstanding() const noexcept { return held + queued; }
};

struct MonitorInfo {
  std::uint32_t protocol_version = 0;
  std::string service;
  std::uint32_t owner_pid = 0;
  std::uint32_t owner_uid = 0;
  std::string pool_name;
  Policy policy = Policy::kVolatile;
  std::vector<MonitorClass> classes;
  SlowReceiverPolicy slow_policy = SlowReceiverPolicy::kBlock;
  std::uint32_t receiver_budget = 0;
  std::uint64_t hold_timeout_ns = 0;
  std::uint32_t ring_capacity = 0;
  std::uint32_t max_receivers = 0;
  SenderStats stats;
  std::uint64_t monitor_requests = 0;
  std::vector<MonitorReceiver> receivers;  // at most kMaxMonitorReceivers
  std::uint32_t receivers_omitted = 0;
  // Returned by receivers and not collected by the pool yet: the pool
  // collects returns when a class runs empty, so `free` alone undercounts.
  std::uint64_t returns_waiting = 0;
  // Sealed copies (docs/design.md, "Sealed copies"), as PoolStats and
  // Pool::sealed_copy_size() have them: all 0 for none (a volatile pool,
  // SealedCopies::kNever, or a sender that predates these fields).
  std::uint64_t sealed_copy_size = 0;
  std::uint32_t sealed_total = 0;
  std::uint32_t sealed_free = 0;
  std::uint32_t sealed_in_flight = 0;
  std::uint64_t sealed_copies = 0;
  std::uint64_t sealed_fallbacks = 0;
};

// Asks the Sender listening as `service` for its state: connects, sends a
// MonitorRequest, waits up to `timeout` in all for the reply and validates
// it. Throws Error: the connect's errno (ECONNREFUSED, ETIMEDOUT),
// kTimedOut when no reply came, kProtocol for a Reject (its reason in
// what(); another user's service refuses unless it allows other users) or a
// malformed reply, kVersionMismatch for another monitoring version.
MonitorInfo query_monitor(std::string_view service, std::chrono::nanoseconds timeout);

const char* to_string(SlowReceiverPolicy p) noexcept;

}  // namespace fbuf::ipc

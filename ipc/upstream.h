// The path (docs/design.md, "The path"): a pool of another process whose
// views this process holds and may forward to its own receivers. Two kinds:
// the pool a Receiver was Welcomed to (RemoteReceiver, slot 0 of its
// connection), and an upstream pool announced on that connection
// (HeldPool, slots 1..kMaxPoolSlots). Forwarding a view asks the pool's
// owner for a holder inlet for each downstream connection (once), passes
// the pool downstream in a PoolAnnounce, and records each forwarded view
// as a lend record in this process's return ring to the owner before the
// descriptor is published. Private to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <system_error>
#include <vector>

#include "fbuf/base/deadline.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "ipc/control.h"
#include "ipc/handshake.h"

namespace fbuf::detail {

// A holder inlet the owner granted: its token, its ring memfd and the far
// end of its socket (both checked), for a PoolAnnounce downstream.
struct HolderGrant {
  ipc::HolderGrantInfo info;
  UniqueFd ring;
  UniqueFd sock;
};

class Upstream {
 public:
  virtual ~Upstream() = default;
  // The pool as it is announced downstream: name, size, classes, policy.
  virtual const ipc::WelcomeInfo& pool_info() const noexcept = 0;
  // This process's read-only fd of the pool, and its owner's doorbell.
  virtual int pool_fd() const noexcept = 0;
  virtual int doorbell_fd() const noexcept = 0;
  // Where a view of buffer `index` that starts at `data` and holds `size`
  // bytes begins within its buffer; nothing if it is not inside it.
  virtual std::optional<std::uint32_t> offset_in_buffer(std::uint32_t index, const std::byte* data,
                                                        std::size_t size) const noexcept = 0;
  // Asks the owner for a holder inlet (a round trip on the control
  // socket), waiting up to `deadline`. Throws Error.
  virtual HolderGrant request_holder(Clock::time_point deadline) = 0;
  // Records in this process's return ring to the owner that (index,
  // generation), which it holds, is lent to holder `token`. Waits up to
  // `deadline` for room (asking the owner to drain); kTimedOut then.
  virtual std::error_code lend(std::uint32_t index, std::uint32_t generation, std::uint32_t token,
                               Clock::time_point deadline) noexcept = 0;
};

// The parts both kinds share.
namespace path {

// One HolderRequest on `sock` and its HolderGrant, with the grant's fds
// checked; the caller holds whatever lock serialises reads of `sock`.
// PoolAnnounces that arrive first (on a receiver's socket, announcements
// for that receiver) go to `stash` (bounded); with no stash they are
// protocol errors. Throws Error.
HolderGrant request_holder(int sock, Clock::time_point deadline, std::vector<ipc::Datagram>* stash);

// Pushes a lend record into `ring` (guarded by `mu`), keeping room for
// `keep` returns, which the owner's honest lends can never exceed: a
// receiver's releases never find the ring full. Asks the owner to drain
// (a DrainRequest on `sock`) and waits for room up to `deadline`.
std::error_code push_lend(RingProducer& ring, std::mutex& mu, std::uint32_t keep, int sock, std::uint32_t index,
                          std::uint32_t generation, std::uint32_t token, Clock::time_point deadline) noexcept;

}  // namespace path

}  // namespace fbuf::detail

// The path (docs/design.md, "The path"): an upstream pool announced on a
// receiver's connection (slot k >= 1 of its descriptors). The receiver
// maps the pool read-only, as it maps the pool of its Welcome, and
// returns the views of it into the holder ring its owner granted, ringing
// that owner's doorbell: the stage that forwarded them is not involved, so
// it may die while they are held. Private to the library.
//
// Invariants:
//  - Everything in the announcement was checked before the constructor
//    returns (fds as in the Welcome, ring header against the geometry);
//    only private copies of the geometry are used afterwards.
//  - returns_ and sock_ are guarded by return_mu_ and sock_mu_: views are
//    released from any thread, and a forwarding thread may ask the owner
//    for a holder while another releases.
#pragma once

#include <memory>
#include <vector>

#include "fbuf/base/fd.h"
#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "ipc/upstream.h"

namespace fbuf::detail {

class HeldPool;

// Checks an announcement and maps what it carries. Throws Error(kProtocol)
// naming what was wrong; every fd is closed then.
std::shared_ptr<HeldPool> make_held_pool(const ipc::PoolAnnounceInfo& info, std::vector<UniqueFd> fds);

// A view of descriptor `d` (its `pool` is the slot) in `pool`, or
// kBadDescriptor (counted by the caller).
Result<View> make_held_view(HeldPool& pool, const Descriptor& d) noexcept;

// Hands back (index, generation) into the holder ring: a descriptor the
// receiver never took (it is closing).
void return_held(HeldPool& pool, std::uint32_t index, std::uint32_t generation) noexcept;

}  // namespace fbuf::detail

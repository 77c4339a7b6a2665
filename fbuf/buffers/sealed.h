// Sealed copies for small protected sends: which size classes of a
// read_only or copy_on_write pool get them, from a calibration at pool
// creation (docs/design.md, "Sealed copies"). The slots themselves are
// PoolCore's (pool_core.h, sealed.cc). Private to the library.
#pragma once

#include <cstddef>
#include <vector>

#include "fbuf/pool.h"

namespace fbuf::detail {

// What a protect + restore pair and a copy cost on this machine, measured
// on a scratch memfd: pair(pages) = pair_fixed_ns + pair_page_ns * pages
// (the restore's refill of each page included), copy(bytes) =
// copy_byte_ns * bytes. All 0 if nothing could be measured.
struct SealedCosts {
  double pair_fixed_ns = 0;
  double pair_page_ns = 0;
  double copy_byte_ns = 0;
};
SealedCosts measure_sealed_costs() noexcept;

// The largest buffer size of `classes` (sorted, rounded) that gets sealed
// slots under `options` (its policy and SealedCopies); 0 for none.
// Measures (measure_sealed_costs) only for SealedCopies::kAuto.
std::size_t choose_sealed_copy_size(const PoolOptions& options, const std::vector<SizeClass>& classes);

}  // namespace fbuf::detail

// Checks that every buffer of a pool has come back to it.
#pragma once

#include <chrono>
#include <string>

#include "fbuf/pool.h"

namespace fbuf::testing {

// Allocates every buffer of `pool` (largest class first, so that no request
// is served from a larger class), waiting up to `timeout` in all for buffers
// still out with receivers. A pool drains its return rings lazily, when it
// runs out of free buffers, so allocating everything is the reliable way to
// observe that all returns arrived. While it holds every buffer it checks
// the pool's statistics and fills each buffer with 0xEE (a receiver that
// still reads one would see its checksum fail), then gives them all back and
// checks that stats() shows the whole pool free.
// Returns an empty string on success, otherwise what went wrong.
std::string check_all_buffers_return(Pool& pool, std::chrono::milliseconds timeout);

// "total=.. free=.. allocated=.. in_flight=.. rejected_returns=..".
std::string describe(const PoolStats& s);

}  // namespace fbuf::testing

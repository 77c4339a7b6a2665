// Timeouts from Python (seconds as a float, None for ever) and the one way
// the binding waits: with the GIL released, so other Python threads run.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <system_error>

#include "fbuf/error.h"

namespace fbuf::python {

// None -> kForever; a number of seconds >= 0 -> nanoseconds (more than a
// century is for ever too). Negative or NaN raises ValueError.
std::chrono::nanoseconds to_timeout(const pybind11::object& seconds);

// True when FBUF_TEST_UNSLICED_SLEEP is set (docs/testing.md): waits are then
// not cut into slices, so a test cannot be rescued by a slice ending.
bool unsliced();

inline bool timed_out(const std::error_code& ec) { return ec == Errc::kTimedOut; }
template <class T>
bool timed_out(const Result<T>& r) {
  return !r && r.error() == Errc::kTimedOut;
}

// Calls `attempt(slice)` with the GIL released until it gives anything but
// kTimedOut or `timeout` has passed. A long wait is cut into slices of at
// most 200 ms; between slices, with the GIL held, Python's signal handlers
// run, so that Ctrl-C interrupts a receive that waits for ever (they raise
// out of here). `attempt` must leave nothing changed when it times out,
// which holds for every fbuf call it is used with (allocate, send, receive,
// wait_for_receivers: on a timeout the caller still owns everything).
template <class Attempt>
auto wait_released(std::chrono::nanoseconds timeout, Attempt&& attempt) {
  using Clock = std::chrono::steady_clock;
  constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(200);
  const bool forever = timeout == kForever;
  // to_timeout caps finite timeouts at a century: no overflow here.
  const Clock::time_point deadline = forever ? Clock::time_point::max() : Clock::now() + timeout;
  for (;;) {
    const std::chrono::nanoseconds left =
        forever ? kForever : std::max(std::chrono::nanoseconds(0), deadline - Clock::now());
    const std::chrono::nanoseconds slice = unsliced() ? left : std::min(left, kSlice);
    auto r = [&] {
      pybind11::gil_scoped_release nogil;
      return attempt(slice);
    }();
    if (!timed_out(r) || slice == left) return r;
    if (PyErr_CheckSignals() != 0) throw pybind11::error_already_set();
  }
}

}  // namespace fbuf::python

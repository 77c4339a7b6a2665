// Deadlines that never overflow: `now + timeout` saturates, so a timeout of
// fbuf::kForever (nanoseconds::max()) waits without end instead of wrapping
// into the past. Private to the library.
#pragma once

#include <chrono>

namespace fbuf::detail {

using Clock = std::chrono::steady_clock;

// `timeout` after `now` (a time the caller has read already).
inline Clock::time_point deadline_from(Clock::time_point now, std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() <= 0) return now;
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

inline Clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  return deadline_from(Clock::now(), timeout);
}

// Time left until `deadline`, at most `slice`; zero once it has passed.
inline std::chrono::nanoseconds time_left(Clock::time_point deadline, std::chrono::nanoseconds slice) noexcept {
  const Clock::time_point now = Clock::now();
  if (now >= deadline) return std::chrono::nanoseconds(0);
  const auto left = deadline - now;  // positive, and no larger than max() - now
  return left < slice ? std::chrono::duration_cast<std::chrono::nanoseconds>(left) : slice;
}

}  // namespace fbuf::detail

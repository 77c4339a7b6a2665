// Futex wait and wake on a 32-bit word that may live in memory shared
// between processes (so the non-private futex operations are used).
// Private to the library.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace fbuf::detail {

// Sleeps while `*word == expected`, at most `timeout` (nanoseconds::max()
// sleeps without end). Returns early on a wake, a signal, or a changed
// value; callers re-check their condition.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept;
// Wakes every thread sleeping on `word`, in any process.
void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept;

}  // namespace fbuf::detail

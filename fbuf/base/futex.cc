#include "fbuf/base/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "fbuf/base/wake.h"

namespace fbuf::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() <= 0) return;
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout != std::chrono::nanoseconds::max()) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    tsp = &ts;
  }
  // FUTEX_WAIT (not _PRIVATE): the word may be in a mapping shared with
  // another process. EAGAIN, EINTR and ETIMEDOUT all mean "re-check".
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, tsp, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

std::chrono::nanoseconds sleep_slice(std::chrono::nanoseconds normal) noexcept {
  static const bool unsliced = [] {
    const char* v = std::getenv("FBUF_TEST_UNSLICED_SLEEP");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return unsliced ? std::chrono::nanoseconds::max() : normal;
}

}  // namespace fbuf::detail

#include "pool_check.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <vector>

namespace fbuf::testing {

std::string describe(const PoolStats& s) {
  std::ostringstream out;
  out << "total=" << s.total << " free=" << s.free << " allocated=" << s.allocated
      << " in_flight=" << s.in_flight << " rejected_returns=" << s.rejected_returns;
  return out.str();
}

std::string check_all_buffers_return(Pool& pool, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  std::vector<SizeClass> classes = pool.options().classes;
  std::sort(classes.begin(), classes.end(),
            [](const SizeClass& a, const SizeClass& b) { return a.buffer_size > b.buffer_size; });
  std::uint32_t total = 0;
  for (const SizeClass& c : classes) total += c.count;

  std::vector<Buffer> held;
  held.reserve(total);
  for (const SizeClass& c : classes) {
    for (std::uint32_t i = 0; i < c.count; ++i) {
      const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
      Result<Buffer> b = pool.allocate(c.buffer_size, left);
      if (!b) {
        std::ostringstream out;
        out << "only " << held.size() << " of " << total
            << " buffers came back in time; allocate(" << c.buffer_size
            << ") failed: " << b.error().message() << "; stats: " << describe(pool.stats());
        return out.str();
      }
      if (b->capacity() != c.buffer_size) {
        std::ostringstream out;
        out << "allocate(" << c.buffer_size << ") returned a buffer of capacity " << b->capacity()
            << " although every larger buffer is held";
        return out.str();
      }
      std::memset(b->data(), 0xEE, b->capacity());
      held.push_back(std::move(*b));
    }
  }

  const PoolStats all_held = pool.stats();
  if (all_held.total != total || all_held.free != 0 || all_held.allocated != total ||
      all_held.in_flight != 0) {
    return "with every buffer allocated the stats disagree: " + describe(all_held);
  }
  held.clear();
  const PoolStats after = pool.stats();
  if (after.free != after.total || after.allocated != 0 || after.in_flight != 0) {
    return "after releasing every buffer the pool is not all free: " + describe(after);
  }
  return {};
}

}  // namespace fbuf::testing

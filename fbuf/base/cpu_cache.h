// What the pool needs to know about the CPU's caches, read at run time so
// that no choice is tuned for one machine. Private to the library.
#pragma once

#include <cstddef>

namespace fbuf::detail {

// The size in bytes of the largest cache of CPU 0 as the kernel describes
// it (/sys/devices/system/cpu/cpu0/cache/index*/size, the highest level;
// glibc's sysconf as a second source), read once per process. 0 if neither
// says (some containers and emulators hide it).
std::size_t last_level_cache_size() noexcept;

// The size in bytes of CPU 0's data or unified cache of level 2 at most
// (the core's own on most CPUs), as above; 0 if neither says.
std::size_t core_cache_size() noexcept;

}  // namespace fbuf::detail

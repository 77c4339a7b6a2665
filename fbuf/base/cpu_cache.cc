#include "fbuf/base/cpu_cache.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace fbuf::detail {
namespace {

// The first line of a small sysfs file, or "" if it cannot be read.
std::string first_line(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return {};
  char buf[64] = {};
  const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  return got ? std::string(buf) : std::string();
}

// sysfs writes cache sizes as "2048K" (or "32M"); 0 if unreadable.
std::size_t parse_size(const std::string& s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  switch (*end) {
    case 'K': return static_cast<std::size_t>(v) << 10;
    case 'M': return static_cast<std::size_t>(v) << 20;
    case 'G': return static_cast<std::size_t>(v) << 30;
    default: return static_cast<std::size_t>(v);
  }
}

// The data (or unified) cache of CPU 0 at the highest level up to
// `max_level`, from sysfs; 0 if sysfs does not say.
std::size_t read_sysfs_cache_size(int max_level) noexcept {
  try {
    int best_level = 0;
    std::size_t best = 0;
    // Linux numbers a CPU's caches index0, index1, ... without gaps.
    for (int i = 0; i < 16; ++i) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
      const std::string level = first_line(dir + "level");
      if (level.empty()) break;
      if (first_line(dir + "type").rfind("Instruction", 0) == 0) continue;
      const int l = std::atoi(level.c_str());
      const std::size_t size = parse_size(first_line(dir + "size"));
      if (size != 0 && l >= best_level && l <= max_level) {
        best_level = l;
        best = size;
      }
    }
    return best;
  } catch (...) {
    // std::string could not allocate: as if sysfs did not say.
    return 0;
  }
}

std::size_t read_last_level_cache_size() noexcept {
  if (std::size_t best = read_sysfs_cache_size(1 << 30); best != 0) return best;
  for (int name : {_SC_LEVEL4_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
    const long v = ::sysconf(name);
    if (v > 0) return static_cast<std::size_t>(v);
  }
  return 0;
}

}  // namespace

std::size_t last_level_cache_size() noexcept {
  static const std::size_t size = read_last_level_cache_size();
  return size;
}

std::size_t core_cache_size() noexcept {
  static const std::size_t size = [] {
    if (std::size_t l2 = read_sysfs_cache_size(2); l2 != 0) return l2;
    const long v = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{0};
  }();
  return size;
}

}  // namespace fbuf::detail

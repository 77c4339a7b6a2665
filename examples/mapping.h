// Where an address lies in this process: the /proc/self/maps line that
// holds it, so the typed examples can show that what they read is the
// sender's pool, mapped here (a shared, read-only mapping of its memfd),
// and not a copy.
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

namespace fbuf_examples {

// "r--s /memfd:fbuf:meta (deleted)" for an address in a received buffer;
// "" if no mapping holds `p`.
inline std::string mapping_of(const void* p) {
  std::ifstream maps("/proc/self/maps");
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char perms[8] = {};
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %7s %*s %*s %*s %n", &lo, &hi, perms, &name_at) >= 3 &&
        a >= lo && a < hi)
      return std::string(perms) + " " + (name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "");
  }
  return "";
}

}  // namespace fbuf_examples

// Where a test can make a file that O_DIRECT opens: /tmp is a tmpfs on many
// machines (and in the bare Debian root of .ci/run), which refuses
// O_DIRECT. Probes $FBUF_TEST_DIRECT_DIR, /var/tmp, /tmp and the working
// directory with a real O_DIRECT open and returns the first that takes it,
// or "" when none does (the test then skips what needs it, saying why).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace fbuf::testing {

inline std::string direct_io_dir() {
  static const std::string dir = [] {
    const char* env = std::getenv("FBUF_TEST_DIRECT_DIR");
    for (std::string d : {std::string(env != nullptr ? env : ""), std::string("/var/tmp"), std::string("/tmp"),
                          std::string(".")}) {
      if (d.empty()) continue;
      std::string probe = d + "/fbuf-direct-probe-" + std::to_string(::getpid());
      const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::close(fd);
        ::unlink(probe.c_str());
        return d;
      }
      ::unlink(probe.c_str());
    }
    return std::string();
  }();
  return dir;
}

}  // namespace fbuf::testing

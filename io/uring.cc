#include "io/uring.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "io/faults.h"

namespace fbuf::detail {

std::atomic<int> IoFaults::direct{0};
std::atomic<int> IoFaults::uring_init{0};

namespace {

// The sysctl's value as text, or "" when it cannot be read (kernels
// before 6.6 have none).
std::string io_uring_disabled_sysctl() {
  std::FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "re");
  if (f == nullptr) return "";
  char line[16] = {};
  const bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  if (!got) return "";
  std::string v(line);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  return v;
}

}  // namespace

Uring::~Uring() {
  if (ok_) io_uring_queue_exit(&ring_);
}

int Uring::init(unsigned entries, std::string& why) noexcept {
  // relaxed: see IoFaults.
  int err = IoFaults::uring_init.load(std::memory_order_relaxed);
  if (err == 0) {
    const int r = io_uring_queue_init(entries, &ring_, 0);
    err = r < 0 ? -r : 0;
  }
  if (err == 0) {
    ok_ = true;
    return 0;
  }
  try {
    why = std::string("io_uring_queue_init: ") + std::strerror(err);
    const std::string sysctl = io_uring_disabled_sysctl();
    if (!sysctl.empty()) why += " (kernel.io_uring_disabled=" + sysctl + ")";
  } catch (...) {
    // Out of memory for the reason: the error code still says enough.
  }
  return err;
}

void note_fallback(std::string& all, const char* who, const std::string& reason, bool log) {
  if (!all.empty()) all += "; ";
  all += reason;
  if (log) std::fprintf(stderr, "fbuf %s: %s\n", who, reason.c_str());
}

}  // namespace fbuf::detail

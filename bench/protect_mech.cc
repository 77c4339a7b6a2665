// protect_mech: the kernel primitives a protection policy could be built
// on, measured bare on one memfd (no pool, no receiver), so that a policy's
// mechanism is chosen on numbers (docs/results.md, "Cheap safety"). Per
// buffer: the producer writes one byte per cache line, then the mechanism
// ends and gives back its write access; the fill alone is subtracted.
//
//   protect_mech [--reps=N]
//
// Mechanisms, per send of one buffer:
//   mprotect            mprotect(PROT_READ), mprotect(PROT_READ|PROT_WRITE)
//   mprotect+populate   the same, then MADV_POPULATE_WRITE
//   uffd-wp             UFFDIO_WRITEPROTECT on, off (the range registered
//                       with UFFDIO_REGISTER_MODE_WP once)
//   uffd-wp+populate    the same, then MADV_POPULATE_WRITE
//   private-remap       copy_on_write before: mmap(MAP_PRIVATE|MAP_FIXED),
//                       then mremap from a master mapping + populate
//   mprotect, run of 16 one protect per buffer, one restore per 16 buffers
//                       (the pool's batched restore)
//   memcpy              one copy of the buffer, for scale
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_sys.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBuffers = 16;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void fill(std::byte* p, std::size_t n, int v) {
  for (std::size_t i = 0; i < n; i += 64) reinterpret_cast<volatile std::byte*>(p)[i] = std::byte(v);
}

enum Mech { kFill, kMprotect, kMprotectPopulate, kUffd, kUffdPopulate, kPrivateRemap, kRun16, kMemcpy, kMechs };
const char* const kNames[kMechs] = {"fill",     "mprotect",      "mprotect+populate", "uffd-wp", "uffd-wp+populate",
                                     "private-remap", "mprotect, run of 16", "memcpy"};

int g_uffd = -1;

void uffd_wp(std::byte* p, std::size_t n, bool on) {
  uffdio_writeprotect w{};
  w.range.start = reinterpret_cast<std::uintptr_t>(p);
  w.range.len = n;
  w.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (::ioctl(g_uffd, UFFDIO_WRITEPROTECT, &w) != 0) die("UFFDIO_WRITEPROTECT");
}

// Microseconds per buffer for one mechanism at one size.
double run(Mech m, std::size_t size) {
  const std::size_t total = size * kBuffers;
  int fd = ::memfd_create("protect_mech", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(total)) != 0) die("memfd");
  auto* base = static_cast<std::byte*>(::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  auto* master = static_cast<std::byte*>(::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (base == MAP_FAILED || master == MAP_FAILED) die("mmap");
  std::vector<std::byte> dst(size);
  if (m == kUffd || m == kUffdPopulate) {
    uffdio_register r{};
    r.range.start = reinterpret_cast<std::uintptr_t>(base);
    r.range.len = total;
    r.mode = UFFDIO_REGISTER_MODE_WP;
    if (::ioctl(g_uffd, UFFDIO_REGISTER, &r) != 0) die("UFFDIO_REGISTER");
  }
  fill(base, total, 1);
  const int iters = static_cast<int>(std::clamp<std::size_t>((std::size_t{128} << 20) / size, 64, 8192));
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) {
    const std::size_t k = static_cast<std::size_t>(i % kBuffers);
    std::byte* b = base + k * size;
    fill(b, size, i);
    switch (m) {
      case kFill:
      case kMechs:
        break;
      case kMprotect:
      case kMprotectPopulate:
        ::mprotect(b, size, PROT_READ);
        ::mprotect(b, size, PROT_READ | PROT_WRITE);
        if (m == kMprotectPopulate) ::madvise(b, size, MADV_POPULATE_WRITE);
        break;
      case kUffd:
      case kUffdPopulate:
        uffd_wp(b, size, true);
        uffd_wp(b, size, false);
        if (m == kUffdPopulate) ::madvise(b, size, MADV_POPULATE_WRITE);
        break;
      case kPrivateRemap:
        if (::mmap(b, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, static_cast<off_t>(k * size)) ==
            MAP_FAILED)
          die("mmap private");
        if (::mremap(master + k * size, 0, size, MREMAP_MAYMOVE | MREMAP_FIXED, b) == MAP_FAILED) die("mremap");
        ::madvise(b, size, MADV_POPULATE_WRITE);
        break;
      case kRun16:
        ::mprotect(b, size, PROT_READ);
        if (k == kBuffers - 1) ::mprotect(base, total, PROT_READ | PROT_WRITE);
        break;
      case kMemcpy:
        std::memcpy(dst.data(), b, size);
        break;
    }
  }
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / iters;
  if (m == kUffd || m == kUffdPopulate) {
    uffdio_range r{reinterpret_cast<std::uintptr_t>(base), total};
    ::ioctl(g_uffd, UFFDIO_UNREGISTER, &r);
  }
  ::munmap(base, total);
  ::munmap(master, total);
  ::close(fd);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::max(1, std::atoi(argv[i] + 7));
    } else {
      std::fprintf(stderr, "usage: protect_mech [--reps=N]\n");
      return 2;
    }
  }
  // UFFD_USER_MODE_ONLY: needs no privilege (vm.unprivileged_userfaultfd
  // is 0 by default) and only user-mode faults are handled, as a policy
  // would want.
  g_uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
  if (g_uffd < 0) die("userfaultfd");
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
  if (::ioctl(g_uffd, UFFDIO_API, &api) != 0) die("UFFDIO_API (shmem write-protect)");

  std::printf("# protect_mech: microseconds per buffer beyond the fill, median of %d interleaved runs\n\n", reps);
  for (const std::string& line : fbuf::bench::describe_machine()) std::printf("- %s\n", line.c_str());
  const std::size_t sizes[] = {4096, 65536, std::size_t{1} << 20, std::size_t{16} << 20};
  std::printf("\n| mechanism |");
  for (std::size_t s : sizes) std::printf(" %s |", fbuf::bench::size_label(s).c_str());
  std::printf("\n|---|");
  for (std::size_t i = 0; i < std::size(sizes); ++i) std::printf("---:|");
  std::printf("\n");
  double result[kMechs][std::size(sizes)] = {};
  for (std::size_t si = 0; si < std::size(sizes); ++si) {
    std::vector<double> samples[kMechs];
    for (int r = 0; r < reps; ++r)
      for (int m = 0; m < kMechs; ++m) samples[m].push_back(run(static_cast<Mech>(m), sizes[si]));
    for (int m = 0; m < kMechs; ++m) {
      std::sort(samples[m].begin(), samples[m].end());
      result[m][si] = samples[m][samples[m].size() / 2];
    }
  }
  for (int m = 0; m < kMechs; ++m) {
    std::printf("| %s |", kNames[m]);
    for (std::size_t si = 0; si < std::size(sizes); ++si)
      std::printf(" %.2f |", m == kFill ? result[m][si] : result[m][si] - result[kFill][si]);
    std::printf("\n");
  }
  std::printf("\nThe fill row is the fill itself; every other row is that mechanism's time minus the fill.\n");
  return 0;
}

#include "bench_sys.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <system_error>

namespace fbuf::bench {

void Fd::reset() noexcept {
  if (fd_ >= 0) {
    // close() is not retried on EINTR: on Linux the descriptor is gone anyway.
    ::close(fd_);
    fd_ = -1;
  }
}

void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

namespace {

// Waits until `fd` is ready for `events`. False on an error other than EINTR.
bool wait_ready(int fd, short events) noexcept {
  pollfd pfd{fd, events, 0};
  for (;;) {
    if (::poll(&pfd, 1, -1) >= 0) return true;
    if (errno != EINTR) return false;
  }
}

}  // namespace

bool write_full(int fd, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const std::byte*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && wait_ready(fd, POLLOUT)) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl(O_NONBLOCK)");
}

bool read_full_timed(int fd, void* data, std::size_t n, std::chrono::milliseconds timeout) noexcept {
  auto* p = static_cast<std::byte*>(data);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (rc == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    if (r == 0) {
      errno = 0;
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void make_pipe(Fd& read_end, Fd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  read_end = Fd(fds[0]);
  write_end = Fd(fds[1]);
}

void make_socketpair(int type, Fd& a, Fd& b) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  a = Fd(fds[0]);
  b = Fd(fds[1]);
}

std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    if (::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
    start = end + 1;
  }
  return {};
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) throw_errno("sched_getaffinity");
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

void pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    throw_errno("sched_setaffinity(cpu " + std::to_string(cpu) + ")");
  }
}

namespace {

// The first line of `path`, or "" if it cannot be read.
std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The value of the first "key : value" line in /proc/cpuinfo with this key.
std::string cpuinfo_value(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  }
  return {};
}

}  // namespace

std::vector<std::string> describe_machine() {
  std::vector<std::string> lines;
  std::string model = cpuinfo_value("model name");
  lines.push_back("CPU: " + (model.empty() ? std::string("unknown") : model));

  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<int> cpus = allowed_cpus();
  std::string allowed;
  for (int cpu : cpus) {
    if (!allowed.empty()) allowed += ',';
    allowed += std::to_string(cpu);
  }
  lines.push_back("CPUs: " + std::to_string(online) + " online (nproc), usable by this process: " +
                  allowed);

  // SMT siblings tell whether two "CPUs" are really two cores.
  std::set<std::string> sibling_sets;
  for (int cpu : cpus) {
    std::string s = first_line("/sys/devices/system/cpu/cpu" + std::to_string(cpu) +
                               "/topology/thread_siblings_list");
    if (!s.empty()) sibling_sets.insert(s);
  }
  std::string siblings;
  for (const auto& s : sibling_sets) {
    if (!siblings.empty()) siblings += " | ";
    siblings += s;
  }
  lines.push_back("SMT sibling groups (as the guest sees them): " +
                  (siblings.empty() ? std::string("unknown") : siblings));

  utsname u{};
  if (::uname(&u) == 0) {
    lines.push_back(std::string("Kernel: ") + u.sysname + " " + u.release + " " + u.machine);
  }
  lines.push_back(std::string("Compiler: ") +
#if defined(__clang__)
                  "clang "
#elif defined(__GNUC__)
                  "g++ "
#endif
                  + __VERSION__ +
#ifdef NDEBUG
                  " (NDEBUG)"
#else
                  " (assertions on: not a release build)"
#endif
  );
  lines.push_back("Load average at start: " + first_line("/proc/loadavg"));
  return lines;
}

double system_busy_seconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  // user nice system idle iowait irq softirq steal
  unsigned long long v[8] = {};
  in >> cpu;
  for (auto& x : v) in >> x;
  if (!in || cpu != "cpu") return -1;
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return static_cast<double>(busy) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  rusage self{}, children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  return seconds(self.ru_utime) + seconds(self.ru_stime) + seconds(children.ru_utime) +
         seconds(children.ru_stime);
}

std::optional<std::size_t> parse_size(std::string_view s) {
  std::size_t i = 0, n = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) n = n * 10 + static_cast<std::size_t>(s[i] - '0');
  const std::string_view unit = s.substr(i);
  if (i == 0) return std::nullopt;
  if (unit.empty() || unit == "B") return n;
  if (unit == "K" || unit == "k" || unit == "KiB") return n << 10;
  if (unit == "M" || unit == "m" || unit == "MiB") return n << 20;
  return std::nullopt;
}

std::string size_label(std::size_t size) {
  if (size >= (1u << 20) && size % (1u << 20) == 0) return std::to_string(size >> 20) + " MiB";
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size >> 10) + " KiB";
  return std::to_string(size) + " B";
}

PageBuffer::PageBuffer(std::size_t size) : size_(size) {
  auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  mapped_ = (size + page - 1) / page * page;
  if (mapped_ == 0) mapped_ = page;
  void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("mmap(" + std::to_string(mapped_) + " bytes)");
  data_ = static_cast<std::byte*>(p);
  // Touching every page now keeps first-touch faults out of the measurement.
  std::memset(data_, 0, mapped_);
}

PageBuffer::~PageBuffer() {
  if (data_ != nullptr) ::munmap(data_, mapped_);
}

}  // namespace fbuf::bench

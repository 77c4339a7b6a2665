// bridge_bench: the ends of the bridge benchmark (bench/bridge_bench.sh runs
// them across two network namespaces joined by a veth pair, docs/results.md).
//
//   bridge_bench produce SERVICE SIZE COUNT   fbuf producer: COUNT messages of SIZE bytes
//   bridge_bench consume SERVICE COUNT        fbuf consumer (behind fbuf-bridge import)
//   bridge_bench tcp-send HOST PORT SIZE COUNT   the plain TCP sender: write() from a buffer
//   bridge_bench tcp-recv PORT SIZE COUNT     the plain TCP receiver: read() into a buffer
//
// Every message starts with its sequence number and the sender's
// CLOCK_MONOTONIC time (shared by network namespaces); the receiving ends
// print throughput, one-way latency p50/p99 and their own CPU seconds
// (getrusage) as key=value words.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Stamp {
  std::uint64_t seq;
  std::int64_t sent_ns;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void report(const char* what, std::size_t size, std::uint64_t count, double seconds, std::vector<double>& lat_us) {
  std::sort(lat_us.begin(), lat_us.end());
  const double p50 = lat_us.empty() ? 0 : lat_us[lat_us.size() / 2];
  const double p99 = lat_us.empty() ? 0 : lat_us[std::min(lat_us.size() - 1, lat_us.size() * 99 / 100)];
  const double gib = static_cast<double>(size) * static_cast<double>(count) / (1024.0 * 1024 * 1024);
  std::printf("%s size=%zu count=%llu seconds=%.3f gbps=%.3f p50_us=%.1f p99_us=%.1f cpu_s=%.3f cpu_s_per_gib=%.3f\n",
              what, size, static_cast<unsigned long long>(count), seconds,
              static_cast<double>(size) * static_cast<double>(count) / seconds / 1e9, p50, p99, cpu_seconds(),
              cpu_seconds() / gib);
}

bool write_all(int fd, const void* p, std::size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

int produce(const std::string& service, std::size_t size, std::uint64_t count) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "bench", .classes = {{size, 8}}});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 60s)) return 1;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto b = tx.allocate(size, fbuf::kForever);
    if (!b) return 1;
    Stamp s{i, now_ns()};
    std::memcpy(b->data(), &s, sizeof s);
    if (tx.send(std::move(*b), size, fbuf::kForever)) return 1;
  }
  std::printf("produce cpu_s=%.3f\n", cpu_seconds());
  return 0;
}

int consume(const std::string& service, std::uint64_t count) {
  fbuf::Receiver rx;
  for (int i = 0; i < 600 && !rx; ++i) {
    try {
      rx = fbuf::Receiver::connect(service, {.connect_timeout = 100ms});
    } catch (const fbuf::Error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  if (!rx) return 1;
  std::vector<double> lat;
  lat.reserve(count);
  std::size_t size = 0;
  Clock::time_point start;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto v = rx.receive(60s);
    if (!v) return 1;
    if (i == 0) start = Clock::now();
    Stamp s;
    std::memcpy(&s, v->data(), sizeof s);
    if (s.seq != i) return 1;
    lat.push_back(static_cast<double>(now_ns() - s.sent_ns) / 1e3);
    size = v->size();
  }
  report("fbuf-bridge", size, count - 1, std::chrono::duration<double>(Clock::now() - start).count(), lat);
  return 0;
}

int tcp_send(const std::string& host, int port, std::size_t size, std::uint64_t count) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &sa.sin_addr);
  for (int i = 0; i < 600; ++i) {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::vector<char> buf(size, 'x');
  for (std::uint64_t i = 0; i < count; ++i) {
    Stamp s{i, now_ns()};
    std::memcpy(buf.data(), &s, sizeof s);
    if (!write_all(fd, buf.data(), size)) return 1;
  }
  std::printf("tcp-send cpu_s=%.3f\n", cpu_seconds());
  ::close(fd);
  return 0;
}

int tcp_recv(int port, std::size_t size, std::uint64_t count) {
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(ls, 1) != 0) return 1;
  std::printf("listening\n");
  std::fflush(stdout);
  int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  std::vector<char> buf(size);
  std::vector<double> lat;
  lat.reserve(count);
  Clock::time_point start;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (!read_all(fd, buf.data(), size)) return 1;
    if (i == 0) start = Clock::now();
    Stamp s;
    std::memcpy(&s, buf.data(), sizeof s);
    if (s.seq != i) return 1;
    lat.push_back(static_cast<double>(now_ns() - s.sent_ns) / 1e3);
  }
  report("tcp", size, count - 1, std::chrono::duration<double>(Clock::now() - start).count(), lat);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  auto num = [&](std::size_t i) { return std::strtoull(a.at(i).c_str(), nullptr, 10); };
  try {
    if (a.size() == 4 && a[0] == "produce") return produce(a[1], num(2), num(3));
    if (a.size() == 3 && a[0] == "consume") return consume(a[1], num(2));
    if (a.size() == 5 && a[0] == "tcp-send") return tcp_send(a[1], static_cast<int>(num(2)), num(3), num(4));
    if (a.size() == 4 && a[0] == "tcp-recv") return tcp_recv(static_cast<int>(num(1)), num(2), num(3));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bridge_bench: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "usage: see bench/bridge_bench.cc\n");
  return 2;
}

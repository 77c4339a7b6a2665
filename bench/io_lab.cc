// io_lab: the zero-copy lab (docs/results.md, "Kernel I/O: the zero-copy
// lab"). Serves one file to a TCP client through each classic Linux method
// and through the fbuf path, and prints one CSV row per cell: throughput,
// CPU seconds (user + sys) at each end, syscalls the server's own code
// issued, context switches and page faults, the CPU copies that the
// server's CPU time implies (its CPU seconds per GiB over a memcpy's), and
// for the zero-copy sends how many notifications said "sent in place" and
// how many "copied" (the deferred copy of loopback and veth).
//
//   io_lab --file F [--methods a,b,..] [--chunks 65536,1048576] [--cache hot,cold]
//          [--transport NAME] [--host 127.0.0.1] [--client-netns NS] [--header]
//
// Every cell runs in fresh processes: a server (two for the fbuf path: the
// I/O stage and the network writer) and a client, which enters network
// namespace NS first when asked (the veth half of the lab). The parent
// only forks, times and collects each child's rusage with wait4().
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/io.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Config {
  std::string file;
  std::vector<std::string> methods{"read_write", "mmap_write", "sendfile", "splice",  "uring_rw",
                                   "send_zc",    "msg_zerocopy", "odirect_send", "fbuf"};
  std::vector<std::size_t> chunks{64 * 1024, 1024 * 1024};
  std::vector<std::string> caches{"hot", "cold"};
  std::string transport = "loopback";
  std::string host = "127.0.0.1";
  std::string client_netns;
  bool header = false;
};

// Written by the server processes (shared anonymous memory made before
// the fork); the parent reads it after wait4().
struct Shared {
  std::atomic<std::uint64_t> syscalls{0};
  std::atomic<int> failed{0};
  // Zero-copy notifications: pages sent in place, and deferred copies.
  std::atomic<std::uint64_t> zc_sent{0};
  std::atomic<std::uint64_t> zc_copied{0};
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::_Exit(1);
}

double seconds(const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; }

// --- the methods: each sends the whole file to `sock` ---

void full_send(int sock, const std::byte* p, std::size_t n, Shared& sh) {
  while (n > 0) {
    const ssize_t w = ::send(sock, p, n, MSG_NOSIGNAL);
    ++sh.syscalls;
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("send");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_write(int file, int sock, std::size_t chunk, Shared& sh) {
  std::vector<std::byte> buf(chunk);
  for (;;) {
    const ssize_t n = ::read(file, buf.data(), chunk);
    ++sh.syscalls;
    if (n < 0) die("read");
    if (n == 0) return;
    full_send(sock, buf.data(), static_cast<std::size_t>(n), sh);
  }
}

void mmap_write(int file, int sock, std::size_t chunk, Shared& sh) {
  struct stat st {};
  ::fstat(file, &st);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, file, 0);
  ++sh.syscalls;
  if (m == MAP_FAILED) die("mmap");
  const auto* p = static_cast<const std::byte*>(m);
  for (std::size_t off = 0; off < size; off += chunk) full_send(sock, p + off, std::min(chunk, size - off), sh);
  ::munmap(m, size);
}

void send_file(int file, int sock, std::size_t chunk, Shared& sh) {
  off_t off = 0;
  for (;;) {
    const ssize_t n = ::sendfile(sock, file, &off, chunk);
    ++sh.syscalls;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("sendfile");
    if (n == 0) return;
  }
}

void splice_pipe(int file, int sock, std::size_t chunk, Shared& sh) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) die("pipe2");
  ::fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(chunk));
  sh.syscalls += 2;
  for (;;) {
    const ssize_t n = ::splice(file, nullptr, p[1], nullptr, chunk, SPLICE_F_MOVE);
    ++sh.syscalls;
    if (n < 0) die("splice in");
    if (n == 0) return;
    for (ssize_t left = n; left > 0;) {
      const ssize_t m = ::splice(p[0], nullptr, sock, nullptr, static_cast<std::size_t>(left), SPLICE_F_MOVE);
      ++sh.syscalls;
      if (m <= 0) die("splice out");
      left -= m;
    }
  }
}

// io_uring read then send, linked, one pair in flight per buffer, two buffers.
void uring_rw(int file, int sock, std::size_t chunk, Shared& sh) {
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) die("io_uring_queue_init");
  std::vector<std::byte> buf(chunk);
  std::uint64_t off = 0;
  for (;;) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, file, buf.data(), static_cast<unsigned>(chunk), off);
    io_uring_submit_and_wait(&ring, 1);
    ++sh.syscalls;
    io_uring_cqe* cqe = nullptr;
    io_uring_wait_cqe(&ring, &cqe);
    const int n = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    if (n < 0) die("io_uring read");
    if (n == 0) break;
    for (int done = 0; done < n;) {
      sqe = io_uring_get_sqe(&ring);
      io_uring_prep_send(sqe, sock, buf.data() + done, static_cast<std::size_t>(n - done), MSG_NOSIGNAL | MSG_WAITALL);
      io_uring_submit_and_wait(&ring, 1);
      ++sh.syscalls;
      io_uring_wait_cqe(&ring, &cqe);
      const int m = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      if (m <= 0) die("io_uring send");
      done += m;
    }
    off += static_cast<std::uint64_t>(n);
  }
  io_uring_queue_exit(&ring);
}

// pread into a pool buffer (one copy, or none with O_DIRECT), then the
// IoWriter's zero-copy send, holding the buffer until its notification.
void pool_send(int file, int sock, std::size_t chunk, Shared& sh, bool uring, bool direct) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "io-lab", .classes = {{chunk, 8}}});
  fbuf::IoWriter w = fbuf::IoWriter::adopt_socket(::dup(sock), fbuf::IoWriterOptions{.use_io_uring = uring});
  if (direct) {
    const int fl = ::fcntl(file, F_GETFL);
    if (::fcntl(file, F_SETFL, fl | O_DIRECT) != 0) die("O_DIRECT");
  }
  std::uint64_t off = 0;
  for (;;) {
    auto b = pool.try_allocate(chunk);
    while (!b) {
      w.wait();
      b = pool.try_allocate(chunk);
    }
    std::size_t got = 0;
    while (got < chunk) {
      const ssize_t n = ::pread(file, b->data() + got, chunk - got, static_cast<off_t>(off + got));
      ++sh.syscalls;
      if (n < 0) die("pread");
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got == 0) break;
    if (auto ec = w.send(std::move(*b), got)) {
      std::fprintf(stderr, "send: %s\n", ec.message().c_str());
      std::_Exit(1);
    }
    off += got;
    if (got < chunk) break;
  }
  (void)w.flush();
  // The IoWriter's own calls: one io_uring_enter or send per send, plus
  // the waits; counted from its stats as sends (a lower bound).
  sh.syscalls += w.stats().sends;
  sh.zc_sent += w.stats().zc_sent;
  sh.zc_copied += w.stats().zc_copied;
}

void odirect_send(int file, int sock, std::size_t chunk, Shared& sh) {
  const int fl = ::fcntl(file, F_GETFL);
  if (::fcntl(file, F_SETFL, fl | O_DIRECT) != 0) die("O_DIRECT");
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, chunk) != 0) die("posix_memalign");
  auto* buf = static_cast<std::byte*>(mem);
  for (std::uint64_t off = 0;;) {
    const ssize_t n = ::pread(file, buf, chunk, static_cast<off_t>(off));
    ++sh.syscalls;
    if (n < 0) die("pread O_DIRECT");
    if (n == 0) break;
    full_send(sock, buf, static_cast<std::size_t>(n), sh);
    off += static_cast<std::uint64_t>(n);
  }
  std::free(mem);
}

// --- cells ---

struct Usage {
  double cpu = 0;
  long nvcsw = 0, nivcsw = 0, minflt = 0, majflt = 0;
  void add(const rusage& r) {
    cpu += seconds(r.ru_utime) + seconds(r.ru_stime);
    nvcsw += r.ru_nvcsw;
    nivcsw += r.ru_nivcsw;
    minflt += r.ru_minflt;
    majflt += r.ru_majflt;
  }
};

Usage reap(pid_t pid, Shared* sh) {
  int status = 0;
  rusage ru{};
  if (::wait4(pid, &status, 0, &ru) != pid) die("wait4");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) sh->failed = 1;
  Usage u;
  u.add(ru);
  return u;
}

void drop_cache(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void warm_cache(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  std::vector<char> b(1 << 20);
  while (::read(fd, b.data(), b.size()) > 0) {
  }
  ::close(fd);
}

int listen_on(const std::string& host, std::uint16_t& port) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  socklen_t al = sizeof a;
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &al) != 0)
    die("listen");
  port = ntohs(a.sin_port);
  return l;
}

// The client: enters the namespace, connects, reads everything.
[[noreturn]] void client(const Config& c, std::uint16_t port, std::uint64_t expect) {
  if (!c.client_netns.empty()) {
    const int ns = ::open(("/run/netns/" + c.client_netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) die("setns");
  }
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, c.host.c_str(), &a.sin_addr);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  std::vector<char> b(1 << 20);
  std::uint64_t got = 0;
  for (;;) {
    const ssize_t n = ::read(s, b.data(), b.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  std::_Exit(got == expect ? 0 : 3);
}

// The fbuf path's network writer: receives views and sends them with SEND_ZC.
void fbuf_writer(int sock, const std::string& service, Shared& sh) {
  fbuf::Receiver rx;
  for (int i = 0; i < 1000 && !rx; ++i) {
    try {
      rx = fbuf::Receiver::connect(service);
    } catch (const fbuf::Error&) {
      std::this_thread::sleep_for(5ms);
    }
  }
  if (!rx) die("connect to the I/O stage");
  fbuf::IoWriter w = fbuf::IoWriter::adopt_socket(::dup(sock));
  for (;;) {
    auto v = rx.try_receive();
    if (!v && v.error() == fbuf::Errc::kWouldBlock) {
      if (w.poll() > 0) {
        w.wait();
        continue;
      }
      v = rx.receive(fbuf::kForever);
    }
    if (!v) break;
    if (w.send(std::move(*v))) die("SEND_ZC");
  }
  (void)w.flush();
  sh.syscalls += w.stats().sends;
  sh.zc_sent += w.stats().zc_sent;
  sh.zc_copied += w.stats().zc_copied;
}

void fbuf_reader(const std::string& file, std::size_t chunk, const std::string& service, Shared& sh) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "io-lab", .classes = {{chunk, 16}}});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 10s)) die("no writer");
  fbuf::IoReader r = fbuf::IoReader::open_file(tx, file, fbuf::IoReaderOptions{.chunk = chunk});
  if (!r.run()) die("I/O stage");
  sh.syscalls += r.stats().reads;
}

struct Row {
  double seconds = 0;
  Usage server, client;
  std::uint64_t syscalls = 0;
  std::uint64_t zc_sent = 0, zc_copied = 0;
  bool ok = true;
};

Row run_cell(const Config& c, const std::string& method, std::size_t chunk, std::uint64_t size) {
  auto* sh = static_cast<Shared*>(
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (sh) Shared;
  std::uint16_t port = 0;
  const int l = listen_on(c.host, port);
  std::fflush(stdout);
  const auto t0 = Clock::now();
  const pid_t cl = ::fork();
  if (cl == 0) client(c, port, size);
  const int sock = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  if (sock < 0) die("accept");
  ::close(l);
  const std::string service = "io-lab/" + std::to_string(::getpid()) + "/" + std::to_string(port);
  std::vector<pid_t> servers;
  auto spawn = [&](const std::function<void()>& f) {
    const pid_t p = ::fork();
    if (p == 0) {
      f();
      std::_Exit(0);
    }
    servers.push_back(p);
  };
  if (method == "fbuf") {
    spawn([&] { fbuf_reader(c.file, chunk, service, *sh); });
    spawn([&] { fbuf_writer(sock, service, *sh); });
  } else {
    spawn([&] {
      const int f = ::open(c.file.c_str(), O_RDONLY | O_CLOEXEC);
      if (f < 0) die("open");
      if (method == "read_write") read_write(f, sock, chunk, *sh);
      else if (method == "mmap_write") mmap_write(f, sock, chunk, *sh);
      else if (method == "sendfile") send_file(f, sock, chunk, *sh);
      else if (method == "splice") splice_pipe(f, sock, chunk, *sh);
      else if (method == "uring_rw") uring_rw(f, sock, chunk, *sh);
      else if (method == "send_zc") pool_send(f, sock, chunk, *sh, true, false);
      else if (method == "msg_zerocopy") pool_send(f, sock, chunk, *sh, false, false);
      else if (method == "odirect_send") odirect_send(f, sock, chunk, *sh);
      else die("unknown method");
    });
  }
  ::close(sock);  // the servers hold their copies; the client sees EOF when they finish
  Row row;
  for (pid_t p : servers) {
    Usage u = reap(p, sh);
    row.server.cpu += u.cpu;
    row.server.nvcsw += u.nvcsw;
    row.server.nivcsw += u.nivcsw;
    row.server.minflt += u.minflt;
    row.server.majflt += u.majflt;
  }
  row.client = reap(cl, sh);
  row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  row.syscalls = sh->syscalls.load();
  row.zc_sent = sh->zc_sent.load();
  row.zc_copied = sh->zc_copied.load();
  row.ok = sh->failed.load() == 0;
  ::munmap(sh, sizeof(Shared));
  return row;
}

// CPU seconds a memcpy takes per GiB on this machine, now.
double memcpy_seconds_per_gib() {
  const std::size_t n = 64u << 20;
  std::vector<char> a(n, 1), b(n, 2);
  rusage r0{}, r1{};
  ::getrusage(RUSAGE_SELF, &r0);
  for (int i = 0; i < 16; ++i) {
    std::memcpy(b.data(), a.data(), n);
    a[static_cast<std::size_t>(i)] = b[n - 1 - static_cast<std::size_t>(i)];
  }
  ::getrusage(RUSAGE_SELF, &r1);
  const double cpu = seconds(r1.ru_utime) + seconds(r1.ru_stime) - seconds(r0.ru_utime) - seconds(r0.ru_stime);
  return cpu / (16.0 * static_cast<double>(n) / (1u << 30));
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--file") c.file = next();
    else if (a == "--methods") c.methods = split(next());
    else if (a == "--chunks") {
      c.chunks.clear();
      for (auto& s : split(next())) c.chunks.push_back(std::stoul(s));
    } else if (a == "--cache") c.caches = split(next());
    else if (a == "--transport") c.transport = next();
    else if (a == "--host") c.host = next();
    else if (a == "--client-netns") c.client_netns = next();
    else if (a == "--header") c.header = true;
    else {
      std::fprintf(stderr, "io_lab: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (c.file.empty()) {
    std::fprintf(stderr, "io_lab: --file is required\n");
    return 2;
  }
  struct stat st {};
  if (::stat(c.file.c_str(), &st) != 0) die("stat");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const double gib = static_cast<double>(size) / (1u << 30);
  const double memcpy_s = memcpy_seconds_per_gib();
  if (c.header)
    std::printf("transport,method,cache,chunk,bytes,seconds,gib_per_s,server_cpu_s_per_gib,client_cpu_s_per_gib,"
                "server_syscalls_per_gib,server_vcsw,server_ivcsw,server_minflt,server_majflt,client_vcsw,"
                "client_ivcsw,memcpy_cpu_s_per_gib,copies_implied,ok,zc_sent,zc_copied\n");
  for (const auto& cache : c.caches)
    for (std::size_t chunk : c.chunks)
      for (const auto& m : c.methods) {
        if (cache == "cold") drop_cache(c.file);
        else warm_cache(c.file);
        const Row r = run_cell(c, m, chunk, size);
        std::printf("%s,%s,%s,%zu,%llu,%.4f,%.3f,%.3f,%.3f,%.0f,%ld,%ld,%ld,%ld,%ld,%ld,%.3f,%.2f,%s,%llu,%llu\n",
                    c.transport.c_str(), m.c_str(), cache.c_str(), chunk, static_cast<unsigned long long>(size),
                    r.seconds, gib / r.seconds, r.server.cpu / gib, r.client.cpu / gib,
                    static_cast<double>(r.syscalls) / gib, r.server.nvcsw, r.server.nivcsw, r.server.minflt,
                    r.server.majflt, r.client.nvcsw, r.client.nivcsw, memcpy_s, r.server.cpu / gib / memcpy_s,
                    r.ok ? "yes" : "FAILED", static_cast<unsigned long long>(r.zc_sent),
                    static_cast<unsigned long long>(r.zc_copied));
        std::fflush(stdout);
      }
  return 0;
}

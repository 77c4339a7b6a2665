// A file-serving pipeline across processes, zero-copy end to end on the
// sending side:
//
//   reader   the I/O stage: O_DIRECT reads through io_uring straight into
//            the pool (registered as fixed buffers), each buffer published
//   relay    receives the views, checksums them (the transform stage), and
//            sends each view to a TCP client with SEND_ZC, giving it back
//            to the reader's pool once the kernel's notification says so
//   client   reads the stream and compares every byte with the file
//
//   fbuf_file_server demo [--size BYTES] [--file PATH]
//       runs all three as processes (a file of BYTES made up when no PATH)
//       and prints one line per stage; exits 0 when the client saw every
//       byte in order and the checksums agree.
//   fbuf_file_server reader SERVICE FILE
//   fbuf_file_server relay SERVICE LISTEN_FD
//   fbuf_file_server client PORT FILE
//
// The relay forwards views it received; it does not copy them into a pool
// of its own, so the transform and the network writer share a process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/io.h"

namespace {

using namespace std::chrono_literals;

std::uint64_t fnv1a(std::uint64_t h, const std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 0x100000001b3ull;
  return h;
}
constexpr std::uint64_t kFnvSeed = 0xcbf29ce484222325ull;

int run_reader(const char* service, const char* path) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "file-server", .classes = {{256 * 1024, 16}}});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 10s)) {
    std::fprintf(stderr, "reader: no relay connected\n");
    return 1;
  }
  fbuf::IoReader reader = fbuf::IoReader::open_file(tx, path);
  auto r = reader.run();
  if (!r) {
    std::fprintf(stderr, "reader: %s\n", r.error().message().c_str());
    return 1;
  }
  const auto s = reader.stats();
  std::printf("reader: %" PRIu64 " bytes in %" PRIu64 " buffers, %s%s%s%s\n", *r, s.buffers,
              fbuf::to_string(reader.path()), reader.direct() ? ", O_DIRECT" : ", page cache",
              reader.fallback_reason().empty() ? "" : "; fallback: ", reader.fallback_reason().c_str());
  std::fflush(stdout);
  return 0;  // the Sender drains what it sent before it goes (end of stream)
}

int run_relay(const char* service, int listen_fd) {
  fbuf::Receiver rx;
  for (int i = 0; i < 1000 && !rx; ++i) {
    try {
      rx = fbuf::Receiver::connect(service);
    } catch (const fbuf::Error&) {
      std::this_thread::sleep_for(10ms);  // the reader is not listening yet
    }
  }
  if (!rx) {
    std::fprintf(stderr, "relay: cannot connect to %s\n", service);
    return 1;
  }
  const int sock = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (sock < 0) {
    std::perror("relay: accept");
    return 1;
  }
  ::close(listen_fd);
  fbuf::IoWriter w = fbuf::IoWriter::adopt_socket(sock);
  std::uint64_t sum = kFnvSeed, bytes = 0;
  for (;;) {
    // The writer gives views back only when it sees their notifications:
    // while it holds some, wait for those rather than for the reader (who
    // may be waiting for exactly those buffers).
    auto v = rx.try_receive();
    if (!v && v.error() == fbuf::Errc::kWouldBlock) {
      if (w.poll() > 0) {
        w.wait();
        continue;
      }
      v = rx.receive(fbuf::kForever);
    }
    if (!v) {
      if (v.error() == fbuf::Errc::kPeerGone) break;
      std::fprintf(stderr, "relay: receive: %s\n", v.error().message().c_str());
      return 1;
    }
    sum = fnv1a(sum, v->data(), v->size());
    bytes += v->size();
    if (auto ec = w.send(std::move(*v))) {
      std::fprintf(stderr, "relay: send: %s\n", ec.message().c_str());
      return 1;
    }
  }
  if (auto ec = w.flush()) {
    std::fprintf(stderr, "relay: flush: %s\n", ec.message().c_str());
    return 1;
  }
  const auto s = w.stats();
  std::printf("relay: %" PRIu64 " bytes, checksum %016" PRIx64 ", %s, %" PRIu64 " notifications (%" PRIu64
              " sent in place, %" PRIu64 " deferred copies)\n",
              bytes, sum, fbuf::to_string(w.path()), s.notifications, s.zc_sent, s.zc_copied);
  std::fflush(stdout);
  return 0;
}

int run_client(int port, const char* path) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror("client: open");
    return 1;
  }
  const int sock = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(sock, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("client: connect");
    return 1;
  }
  std::vector<std::byte> net(1 << 20), file(1 << 20);
  std::uint64_t got = 0, sum = kFnvSeed;
  for (;;) {
    const ssize_t n = ::read(sock, net.data(), net.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::perror("client: read");
      return 1;
    }
    if (n == 0) break;
    std::size_t have = 0;
    while (have < static_cast<std::size_t>(n)) {
      const ssize_t m = ::pread(fd, file.data() + have, static_cast<std::size_t>(n) - have,
                                static_cast<off_t>(got + have));
      if (m <= 0) {
        std::fprintf(stderr, "client: FAILED: more bytes than the file has (at %" PRIu64 ")\n", got + have);
        return 1;
      }
      have += static_cast<std::size_t>(m);
    }
    if (std::memcmp(net.data(), file.data(), static_cast<std::size_t>(n)) != 0) {
      std::fprintf(stderr, "client: FAILED: bytes differ from the file near offset %" PRIu64 "\n", got);
      return 1;
    }
    sum = fnv1a(sum, net.data(), static_cast<std::size_t>(n));
    got += static_cast<std::uint64_t>(n);
  }
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (static_cast<std::uint64_t>(size) != got) {
    std::fprintf(stderr, "client: FAILED: %" PRIu64 " bytes of %lld\n", got, static_cast<long long>(size));
    return 1;
  }
  std::printf("client: %" PRIu64 " bytes, every one as in the file, checksum %016" PRIx64 "\n", got, sum);
  std::fflush(stdout);
  return 0;
}

int run_demo(std::uint64_t size, std::string path, const char* self) {
  bool made = false;
  if (path.empty()) {
    path = "/tmp/fbuf-file-server-" + std::to_string(::getpid());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      std::perror("demo: create");
      return 1;
    }
    std::vector<std::uint64_t> block(1 << 16);
    std::uint64_t x = 0x243F6A8885A308D3ull;
    for (std::uint64_t done = 0; done < size;) {
      for (auto& w : block) w = x = x * 6364136223846793005ull + 1442695040888963407ull;
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size - done, block.size() * 8));
      if (::write(fd, block.data(), n) != static_cast<ssize_t>(n)) return 1;
      done += n;
    }
    ::close(fd);
    made = true;
  }
  // The relay's listening socket, made here so the client knows its port.
  const int l = ::socket(AF_INET, SOCK_STREAM, 0);  // inherited by the relay
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &al) != 0) {
    std::perror("demo: listen");
    return 1;
  }
  const std::string service = "file-server/" + std::to_string(::getpid());
  const std::string lfd = std::to_string(l), port = std::to_string(ntohs(a.sin_port));
  std::fflush(stdout);
  auto start = [&](std::vector<std::string> args) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(self));
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv(self, argv.data());
      std::perror("demo: exec");
      ::_exit(127);
    }
    return pid;
  };
  const pid_t reader = start({"reader", service, path});
  const pid_t relay = start({"relay", service, lfd});
  ::close(l);
  const pid_t client = start({"client", port, path});
  bool ok = true;
  for (pid_t pid : {client, relay, reader}) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ok = false;
  }
  if (made) ::unlink(path.c_str());
  std::printf(ok ? "file_server: OK\n" : "file_server: FAILED\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "demo";
  try {
    if (mode == "reader" && argc == 4) return run_reader(argv[2], argv[3]);
    if (mode == "relay" && argc == 4) return run_relay(argv[2], std::atoi(argv[3]));
    if (mode == "client" && argc == 4) return run_client(std::atoi(argv[2]), argv[3]);
    if (mode == "demo") {
      std::uint64_t size = 64ull << 20;
      std::string path;
      for (int i = 2; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--size") == 0) size = std::strtoull(argv[i + 1], nullptr, 10);
        else if (std::strcmp(argv[i], "--file") == 0) path = argv[i + 1];
      }
      return run_demo(size, path, "/proc/self/exe");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", mode.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: fbuf_file_server demo [--size BYTES] [--file PATH]\n");
  return 2;
}

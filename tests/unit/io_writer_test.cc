// Egress without a CPU copy (fbuf::IoWriter): buffers and received views to
// a TCP socket by io_uring SEND_ZC, MSG_ZEROCOPY or a plain send, and to a
// file with O_DIRECT; byte-exact, never released before the kernel's
// notification, and nothing held after a client dies mid-transfer.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fbuf/fbuf.h"
#include "fbuf/io.h"
#include "fbuf/uf_io.h"
#include "io/faults.h"
#include "tests/support/direct_io_dir.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::byte pattern(std::uint64_t offset, std::uint64_t salt = 0) {
  std::uint64_t x = (offset + salt * 0x1000193) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return static_cast<std::byte>(x & 0xff);
}

// A TCP connection over loopback: the writer's end and the client's end.
struct TcpPair {
  int server = -1;
  int client = -1;
};

TcpPair tcp_pair(int client_rcvbuf = 0) {
  TcpPair p;
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(l, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(l, 1), 0);
  socklen_t al = sizeof a;
  EXPECT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &al), 0);
  p.client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client_rcvbuf > 0) ::setsockopt(p.client, SOL_SOCKET, SO_RCVBUF, &client_rcvbuf, sizeof client_rcvbuf);
  EXPECT_EQ(::connect(p.client, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  p.server = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_GE(p.server, 0);
  ::close(l);
  return p;
}

// Reads everything until end of stream in another thread, checking each
// byte against what the test sent; `slow` sleeps between small reads so the
// sender's queue stays full (the kernel then holds the sent pages longest).
class Client {
 public:
  Client(int fd, std::vector<std::byte> const* expected, bool slow = false)
      : thread_([this, fd, expected, slow] { run(fd, *expected, slow); }) {}
  ~Client() {
    if (thread_.joinable()) thread_.join();
  }
  std::pair<std::uint64_t, std::uint64_t> result() {
    thread_.join();
    return {got_, bad_};
  }

 private:
  void run(int fd, const std::vector<std::byte>& expected, bool slow) {
    std::vector<std::byte> buf(slow ? 4096 : 1 << 20);
    for (int k = 0;; ++k) {
      if (slow && k % 16 == 0) std::this_thread::sleep_for(200us);
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        const std::uint64_t at = got_ + static_cast<std::uint64_t>(i);
        if ((at >= expected.size() || buf[i] != expected[at]) && bad_ == ~0ull) bad_ = at;
      }
      got_ += static_cast<std::uint64_t>(n);
    }
    ::close(fd);
  }

  std::uint64_t got_ = 0;
  std::uint64_t bad_ = ~0ull;
  std::thread thread_;
};

Pool make_pool(std::uint32_t count, std::size_t size = 64 * 1024) {
  return Pool(PoolOptions{.name = "io-writer-test", .classes = {{size, count}}});
}

// A buffer from `pool`, waiting for `w` to give held ones back.
Buffer take(Pool& pool, IoWriter& w, std::size_t size) {
  for (;;) {
    if (auto b = pool.try_allocate(size)) return std::move(*b);
    if (w.wait() == 0 && !pool.try_allocate(size)) ADD_FAILURE() << "nothing held and the pool is empty";
  }
}

IoWriterOptions quiet(bool uring = true, bool zerocopy = true) {
  return IoWriterOptions{.use_io_uring = uring, .use_msg_zerocopy = zerocopy, .log_fallbacks = false};
}

// The producer rewrites every buffer the moment the pool hands it out, from
// a pool of two: if the writer gave a buffer back while the kernel still
// had to read it, the client would see the next buffer's bytes.
void stream_buffers(IoWriterOptions options, WritePath want, bool slow_client) {
  auto [server, client] = tcp_pair(slow_client ? 16 * 1024 : 0);
  const std::size_t chunk = 64 * 1024 - 100;  // not page-sized: the ends move
  const int count = slow_client ? 300 : 600;
  std::vector<std::byte> expected(chunk * count);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i);
  Pool pool = make_pool(2);
  Client c(client, &expected, slow_client);
  {
    IoWriter w = IoWriter::adopt_socket(server, options);
    EXPECT_EQ(w.path(), want) << w.fallback_reason();
    for (int k = 0; k < count; ++k) {
      Buffer b = take(pool, w, chunk);
      std::memcpy(b.data(), expected.data() + static_cast<std::size_t>(k) * chunk, chunk);
      ASSERT_FALSE(w.send(std::move(b), chunk));
      // While the writer holds both buffers, the pool has none to give.
      if (w.stats().held == 2) {
        EXPECT_FALSE(pool.try_allocate(chunk));
      }
    }
    ASSERT_FALSE(w.flush());
    const IoWriterStats s = w.stats();
    EXPECT_EQ(s.bytes, expected.size());
    EXPECT_EQ(s.held, 0u);
    if (want == WritePath::kUringSendZc || want == WritePath::kMsgZerocopy) {
      EXPECT_GT(s.notifications, 0u);
      // Loopback delivers locally: the kernel copies at the receiver.
      EXPECT_GT(s.zc_copied, 0u) << "loopback should report deferred copies";
      EXPECT_EQ(s.zc_copied + s.zc_sent, s.notifications);
    }
    EXPECT_EQ(pool.stats().free, 2u);
  }
  auto [got, bad] = c.result();
  EXPECT_EQ(got, expected.size());
  EXPECT_EQ(bad, ~0ull) << "first wrong byte: a buffer came back before the kernel was done with it";
}

TEST(IoWriter, SendZcIsByteExactWhenTheProducerRewritesAtOnce) {
  stream_buffers(quiet(), WritePath::kUringSendZc, false);
}

TEST(IoWriter, SendZcHoldsBuffersWhileASlowClientLeavesThemQueued) {
  stream_buffers(quiet(), WritePath::kUringSendZc, true);
}

TEST(IoWriter, MsgZerocopyIsByteExactWhenTheProducerRewritesAtOnce) {
  stream_buffers(quiet(false), WritePath::kMsgZerocopy, false);
}

TEST(IoWriter, MsgZerocopyHoldsBuffersWhileASlowClientLeavesThemQueued) {
  stream_buffers(quiet(false), WritePath::kMsgZerocopy, true);
}

// An event loop waits on fd() instead of wait(): it becomes ready when a
// notification comes, and poll() then releases what it covers.
TEST(IoWriter, AnEventLoopWaitsOnFdForNotifications) {
  for (bool uring : {true, false}) {
    auto [server, client] = tcp_pair();
    const std::size_t chunk = 64 * 1024;
    std::vector<std::byte> expected(chunk * 64);
    for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i, 5);
    Client c(client, &expected);
    Pool pool = make_pool(2);
    {
      IoWriter w = IoWriter::adopt_socket(server, quiet(uring));
      ASSERT_GE(w.fd(), 0);
      for (int k = 0; k < 64; ++k) {
        auto b = pool.try_allocate(chunk);
        while (!b) {
          pollfd p{w.fd(), POLLIN, 0};
          ASSERT_GE(::poll(&p, 1, 10000), 1) << "no notification within 10 s";
          w.poll();
          b = pool.try_allocate(chunk);
        }
        std::memcpy(b->data(), expected.data() + static_cast<std::size_t>(k) * chunk, chunk);
        ASSERT_FALSE(w.send(std::move(*b), chunk));
      }
      ASSERT_FALSE(w.flush());
    }
    auto [got, bad] = c.result();
    EXPECT_EQ(got, expected.size());
    EXPECT_EQ(bad, ~0ull);
  }
}

// An aggregate goes out as one stream, slices in order (ranges of Buffers
// and a received View), and is held, every slice's buffer with it, until
// the kernel is done; the producer rewrites each buffer the moment it is
// free again.
TEST(IoWriter, SendsAMessageSliceBySliceAndHoldsItUntilTheKernelIsDone) {
  for (bool uring : {true, false}) {
    auto [server, client] = tcp_pair(16 * 1024);
    const int rounds = 60;
    const std::size_t a = 40000, b = 30000, c_len = 20000;  // per round: two Buffer ranges, one View
    std::vector<std::byte> expected((a + b + c_len) * rounds);
    for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i, 13);
    Client cl(client, &expected, true);
    Pool pool = make_pool(3);
    {
      Sender tx(pool);
      Receiver rx = tx.connect_local();
      IoWriter w = IoWriter::adopt_socket(server, quiet(uring));
      std::size_t at = 0;
      for (int k = 0; k < rounds; ++k) {
        Message m;
        // The View first travels through the channel.
        Buffer vb = take(pool, w, c_len);
        Buffer b1 = take(pool, w, a + 100);
        Buffer b2 = take(pool, w, b);
        std::memcpy(b1.data() + 100, expected.data() + at, a);  // a range at offset 100
        std::memcpy(b2.data(), expected.data() + at + a, b);
        std::memcpy(vb.data(), expected.data() + at + a + b, c_len);
        ASSERT_FALSE(tx.send(std::move(vb), c_len, 10s));
        auto v = rx.receive(10s);
        ASSERT_TRUE(v);
        ASSERT_FALSE(m.append(std::move(b1), 100, a));
        ASSERT_FALSE(m.append(std::move(b2), b));
        ASSERT_FALSE(m.append(std::move(*v)));
        ASSERT_FALSE(w.send(std::move(m)));
        EXPECT_TRUE(m.empty());
        if (w.stats().held > 0) {
          // Held: the three buffers of the message are not free.
          EXPECT_LT(pool.stats().free, 3u);
        }
        at += a + b + c_len;
      }
      ASSERT_FALSE(w.flush());
      EXPECT_EQ(pool.stats().free, 3u);
    }
    auto [got, bad] = cl.result();
    EXPECT_EQ(got, expected.size());
    EXPECT_EQ(bad, ~0ull) << (uring ? "SEND_ZC" : "MSG_ZEROCOPY");
  }
}

// vmsplice has no completion: a pipe is refused with a reason, never used
// with a guess about when its pages are free.
TEST(IoWriter, RefusesAPipe) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  try {
    (void)IoWriter::adopt_socket(p[1], quiet());
    ADD_FAILURE() << "a pipe was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("vmsplice has no completion"), std::string::npos) << e.what();
  }
  ::close(p[0]);
}

// A Unix stream socket takes neither SEND_ZC nor SO_ZEROCOPY: the first
// send finds out, falls back twice with the reasons, and loses no byte.
TEST(IoWriter, FallsBackToCopyingOnASocketWithoutZeroCopy) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::vector<std::byte> expected(3 * 50000);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i, 11);
  Client c(sv[1], &expected);
  Pool pool = make_pool(2);
  {
    IoWriter w = IoWriter::adopt_socket(sv[0], quiet());
    EXPECT_EQ(w.path(), WritePath::kUringSendZc);  // until the first send says otherwise
    for (int k = 0; k < 3; ++k) {
      Buffer b = take(pool, w, 50000);
      std::memcpy(b.data(), expected.data() + static_cast<std::size_t>(k) * 50000, 50000);
      const std::error_code ec = w.send(std::move(b), 50000);
      ASSERT_FALSE(ec) << ec.message() << "; " << w.fallback_reason();
    }
    EXPECT_EQ(w.path(), WritePath::kCopy);
    EXPECT_NE(w.fallback_reason().find("SEND_ZC refused"), std::string::npos) << w.fallback_reason();
    EXPECT_NE(w.fallback_reason().find("SO_ZEROCOPY refused"), std::string::npos) << w.fallback_reason();
    ASSERT_FALSE(w.flush());
    EXPECT_EQ(pool.stats().free, 2u);
  }
  auto [got, bad] = c.result();
  EXPECT_EQ(got, expected.size());
  EXPECT_EQ(bad, ~0ull);
}

TEST(IoWriter, PlainSendCopiesAndSaysWhy) {
  auto [server, client] = tcp_pair();
  std::vector<std::byte> expected(100000);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i);
  Client c(client, &expected);
  Pool pool = make_pool(2, 128 * 1024);
  {
    IoWriter w = IoWriter::adopt_socket(server, quiet(false, false));
    EXPECT_EQ(w.path(), WritePath::kCopy);
    EXPECT_NE(w.fallback_reason().find("MSG_ZEROCOPY off by options"), std::string::npos) << w.fallback_reason();
    auto b = pool.allocate(expected.size(), 1s);
    ASSERT_TRUE(b);
    std::memcpy(b->data(), expected.data(), expected.size());
    ASSERT_FALSE(w.send(std::move(*b), expected.size()));
    EXPECT_EQ(w.stats().held, 0u);  // copied: released at once
    EXPECT_EQ(pool.stats().free, 2u);
  }
  auto [got, bad] = c.result();
  EXPECT_EQ(got, expected.size());
  EXPECT_EQ(bad, ~0ull);
}

TEST(IoWriter, SendsReceivedViewsAndGivesThemBackAfterTheNotification) {
  auto [server, client] = tcp_pair();
  const std::size_t chunk = 32 * 1024;
  const int count = 200;
  std::vector<std::byte> expected(chunk * count);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i, 7);
  Client c(client, &expected);
  Pool pool = make_pool(4, chunk);
  {
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    IoWriter w = IoWriter::adopt_socket(server, quiet());
    for (int k = 0; k < count; ++k) {
      Buffer b = take(pool, w, chunk);
      std::memcpy(b.data(), expected.data() + static_cast<std::size_t>(k) * chunk, chunk);
      ASSERT_FALSE(tx.send(std::move(b), chunk, 10s));
      auto v = rx.receive(10s);
      ASSERT_TRUE(v);
      ASSERT_FALSE(w.send(std::move(*v)));
      EXPECT_FALSE(*v);  // consumed
    }
    ASSERT_FALSE(w.flush());
    EXPECT_EQ(pool.stats().free, 4u);
  }
  auto [got, bad] = c.result();
  EXPECT_EQ(got, expected.size());
  EXPECT_EQ(bad, ~0ull);
}

TEST(IoWriter, AFailedSendLeavesTheBufferWithTheCaller) {
  auto [server, client] = tcp_pair();
  ::close(client);
  ::shutdown(server, SHUT_WR);  // any send now fails with EPIPE
  Pool pool = make_pool(1);
  IoWriter w = IoWriter::adopt_socket(server, quiet());
  auto b = pool.allocate(1000, 1s);
  ASSERT_TRUE(b);
  const std::error_code ec = w.send(std::move(*b), 1000);
  EXPECT_EQ(ec, std::errc::broken_pipe) << ec.message();
  EXPECT_TRUE(*b) << "the caller still holds the buffer";
  b->reset();
  EXPECT_EQ(pool.stats().free, 1u);
}

// A client process that reads some and dies: the writer reports the
// failure, gives everything back once the kernel drops the pages, and a
// second connection works as before.
TEST(IoWriter, AClientDyingMidTransferLeavesThePoolFree) {
  for (bool uring : {true, false}) {
    auto [server, client] = tcp_pair();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(server);
      std::vector<char> buf(65536);
      std::size_t got = 0;
      while (got < 1024 * 1024) {
        const ssize_t n = ::read(client, buf.data(), buf.size());
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      ::_exit(0);  // with unread data queued: the connection is reset
    }
    ::close(client);
    Pool pool = make_pool(4);
    std::error_code failed;
    {
      IoWriter w = IoWriter::adopt_socket(server, quiet(uring));
      for (int k = 0; k < 100000 && !failed; ++k) {
        Buffer b = take(pool, w, 64 * 1024);
        std::memset(b.data(), k & 0xff, 64 * 1024);
        failed = w.send(std::move(b), 64 * 1024);
        b.reset();  // still the caller's if nothing was sent
      }
      (void)w.flush();
      EXPECT_EQ(w.stats().held, 0u);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(failed) << "the send after the client died should fail";
    EXPECT_EQ(pool.stats().free, 4u);
  }
}

std::vector<std::byte> read_file(const std::string& path) {
  std::vector<std::byte> out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  std::byte buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

void write_file_exactly(WritePath want, const char* want_reason) {
  const std::string dir = fbuf::testing::direct_io_dir();
  if (want == WritePath::kDirectFile && dir.empty())
    GTEST_SKIP() << "no directory here takes O_DIRECT (set FBUF_TEST_DIRECT_DIR)";
  const std::string path = (dir.empty() ? std::string("/tmp") : dir) + "/fbuf-io-writer-" + std::to_string(::getpid());
  Pool pool = make_pool(2);
  std::vector<std::byte> expected;
  {
    IoWriter w = IoWriter::create_file(path, quiet());
    EXPECT_EQ(w.path(), want) << w.fallback_reason();
    // Whole blocks, then a tail that is not.
    for (std::size_t len : {std::size_t{65536}, std::size_t{65536}, std::size_t{8192}, std::size_t{1234}}) {
      auto b = pool.allocate(len, 1s);
      ASSERT_TRUE(b);
      for (std::size_t i = 0; i < len; ++i) b->data()[i] = pattern(expected.size() + i, 3);
      expected.insert(expected.end(), b->data(), b->data() + len);
      ASSERT_FALSE(w.send(std::move(*b), len));
    }
    ASSERT_FALSE(w.flush());
    if (want_reason != nullptr) {
      EXPECT_NE(w.fallback_reason().find(want_reason), std::string::npos) << w.fallback_reason();
    }
    EXPECT_EQ(pool.stats().free, 2u);
  }
  EXPECT_EQ(read_file(path), expected);
  ::unlink(path.c_str());
}

TEST(IoWriter, WritesAFileWithODirectByteExact) { write_file_exactly(WritePath::kDirectFile, "unaligned write"); }

TEST(IoWriter, WritesThroughThePageCacheWhenODirectIsRefused) {
  detail::IoFaults::set_direct(EINVAL);
  write_file_exactly(WritePath::kFile, "O_DIRECT refused");
  detail::IoFaults::set_direct(0);
}

TEST(IoWriter, TheCApiSendsAndCountsDeferredCopies) {
  auto [server, client] = tcp_pair();
  std::vector<std::byte> expected(300 * 1000);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = pattern(i, 9);
  Client c(client, &expected);
  uf_size_class cls{512 * 1024, 1};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("io-c-writer", &cls, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_io_writer* w = nullptr;
  ASSERT_EQ(uf_io_writer_socket(server, UF_IO_QUIET, &w), UF_OK);
  EXPECT_EQ(uf_io_writer_path(w), UF_WRITE_URING_SEND_ZC);
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(pool, expected.size(), 1'000'000'000, &b), UF_OK);
  std::memcpy(uf_data(b), expected.data(), expected.size());
  ASSERT_EQ(uf_io_send(w, b, expected.size()), UF_OK);
  uf_buf* again = nullptr;
  if (uf_io_poll(w) > 0) {
    // Still held for the kernel: the pool's one buffer is not free.
    EXPECT_EQ(uf_allocate(pool, 1, 0, &again), UF_EAGAIN);
  }
  while (uf_io_wait(w) > 0) {
  }
  ASSERT_EQ(uf_allocate(pool, 1, 0, &again), UF_OK);
  uf_deallocate(again);
  ASSERT_EQ(uf_io_flush(w), UF_OK);
  std::uint64_t bytes = 0, zc_sent = 0, zc_copied = 0;
  std::uint32_t held = 9;
  uf_io_writer_counts(w, &bytes, &zc_sent, &zc_copied, &held);
  EXPECT_EQ(bytes, expected.size());
  EXPECT_EQ(held, 0u);
  EXPECT_GT(zc_copied + zc_sent, 0u);
  uint32_t free_count = 0;
  uf_pool_counts(pool, &free_count, nullptr);
  EXPECT_EQ(free_count, 1u);
  uf_io_writer_destroy(w);
  uf_pool_destroy(pool);
  auto [got, bad] = c.result();
  EXPECT_EQ(got, expected.size());
  EXPECT_EQ(bad, ~0ull);
}

}  // namespace
}  // namespace fbuf

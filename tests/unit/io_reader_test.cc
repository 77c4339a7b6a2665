// The I/O stage (fbuf::IoReader): files and sockets into pool buffers,
// byte-exact and in order, by every path, each fallback taken with its
// reason, and nothing held after a receiver goes away.
#include <fcntl.h>
#include <signal.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>
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

// The byte at `offset` of every test stream: not periodic in any chunk size
// used here, so a buffer out of place or a stale one shows.
std::byte pattern(std::uint64_t offset) {
  std::uint64_t x = offset * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return static_cast<std::byte>(x & 0xff);
}

// A file where O_DIRECT works (fbuf::testing::direct_io_dir(); /tmp is a tmpfs on
// many machines), removed at the end.
class TempFile {
 public:
  explicit TempFile(std::size_t size) {
    const std::string dir = fbuf::testing::direct_io_dir();
    path_ = (dir.empty() ? std::string("/tmp") : dir) + "/fbuf-io-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter_++);
    std::vector<std::byte> data(size);
    for (std::size_t i = 0; i < size; ++i) data[i] = pattern(i);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, data.data(), size), static_cast<ssize_t>(size));
    ::close(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

// Receives `expected` bytes on `rx` in another thread and checks each one.
class Checker {
 public:
  Checker(Receiver rx, std::uint64_t expected, std::uint64_t start = 0)
      : start_(start), thread_([this, r = std::move(rx), expected]() mutable { run(r, expected); }) {}
  ~Checker() {
    if (thread_.joinable()) thread_.join();
  }
  // Joins; the number of bytes received and the first wrong offset (or ~0).
  std::pair<std::uint64_t, std::uint64_t> result() {
    thread_.join();
    return {got_, bad_};
  }

 private:
  void run(Receiver& rx, std::uint64_t expected) {
    while (got_ < expected) {
      auto v = rx.receive(10s);
      if (!v) return;
      const auto* p = v->data();
      for (std::size_t i = 0; i < v->size(); ++i)
        if (p[i] != pattern(start_ + got_ + i) && bad_ == ~0ull) bad_ = got_ + i;
      got_ += v->size();
    }
  }

  std::uint64_t start_;
  std::uint64_t got_ = 0;
  std::uint64_t bad_ = ~0ull;
  std::thread thread_;
};

Pool make_pool(Policy policy = Policy::kVolatile, std::uint32_t count = 8, std::size_t size = 64 * 1024) {
  return Pool(PoolOptions{.name = "io-reader-test", .classes = {{size, count}}, .policy = policy});
}

struct FaultsOff {
  ~FaultsOff() {
    detail::IoFaults::set_direct(0);
    detail::IoFaults::set_uring_init(0);
  }
};

// Reads `size` bytes of a fresh file through `options` and checks them.
void read_file_exactly(Pool pool, std::size_t size, IoReaderOptions options, ReadPath want_path, bool want_direct,
                       const char* want_reason) {
  if (want_direct && fbuf::testing::direct_io_dir().empty())
    GTEST_SKIP() << "no directory here takes O_DIRECT (set FBUF_TEST_DIRECT_DIR)";
  TempFile file(size);
  Sender tx(pool);
  Checker check(tx.connect_local(), size);
  options.log_fallbacks = false;
  IoReader reader = IoReader::open_file(tx, file.path(), options);
  EXPECT_EQ(reader.path(), want_path) << reader.fallback_reason();
  EXPECT_EQ(reader.direct(), want_direct) << reader.fallback_reason();
  if (want_reason == nullptr) {
    EXPECT_EQ(reader.fallback_reason(), "");
  } else {
    EXPECT_NE(reader.fallback_reason().find(want_reason), std::string::npos) << reader.fallback_reason();
  }
  auto r = reader.run();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, size);
  auto [got, bad] = check.result();
  EXPECT_EQ(got, size);
  EXPECT_EQ(bad, ~0ull) << "first wrong byte";
  EXPECT_EQ(reader.stats().bytes, size);
  // Again: at the end, run() publishes nothing more.
  auto again = reader.run();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
}

TEST(IoReader, ReadsAFileWithODirectIntoRegisteredBuffersByteExact) {
  // Not a multiple of the chunk nor of a block: the last read is short.
  read_file_exactly(make_pool(), 3 * 1024 * 1024 + 1234, {}, ReadPath::kUringFixed, true, nullptr);
}

TEST(IoReader, ReadsAFileOfExactlyWholeChunks) {
  read_file_exactly(make_pool(), 16 * 64 * 1024, {}, ReadPath::kUringFixed, true, nullptr);
}

TEST(IoReader, ReadsAnEmptyFile) { read_file_exactly(make_pool(), 0, {}, ReadPath::kUringFixed, true, nullptr); }

TEST(IoReader, ReadsWithMoreReadsInFlightThanThePoolHasBuffers) {
  read_file_exactly(make_pool(Policy::kVolatile, 3), 1024 * 1024 + 7, IoReaderOptions{.queue_depth = 16},
                    ReadPath::kUringFixed, true, nullptr);
}

TEST(IoReader, UnregisteredBuffersWhenAskedWithTheReason) {
  read_file_exactly(make_pool(), 512 * 1024 + 5, IoReaderOptions{.register_buffers = false}, ReadPath::kUring, true,
                    "fixed buffers off by options");
}

TEST(IoReader, PageCacheWhenAskedWithNoReason) {
  read_file_exactly(make_pool(), 512 * 1024 + 5, IoReaderOptions{.direct = false}, ReadPath::kUringFixed, false,
                    nullptr);
}

TEST(IoReader, PlainPreadWhenIoUringIsOffByOptions) {
  read_file_exactly(make_pool(), 512 * 1024 + 5, IoReaderOptions{.use_io_uring = false}, ReadPath::kPlain, true,
                    "io_uring off by options");
}

TEST(IoReader, FallsBackToThePageCacheWhenTheFileSystemRefusesODirect) {
  FaultsOff off;
  detail::IoFaults::set_direct(EINVAL);  // what tmpfs before Linux 6.6 answers
  read_file_exactly(make_pool(), 300 * 1000, {}, ReadPath::kUringFixed, false, "O_DIRECT refused by the file system");
}

TEST(IoReader, FallsBackToPreadWhenIoUringIsDisabled) {
  FaultsOff off;
  detail::IoFaults::set_uring_init(EPERM);  // kernel.io_uring_disabled=2
  read_file_exactly(make_pool(), 300 * 1000, {}, ReadPath::kPlain, true, "io_uring_queue_init");
}

TEST(IoReader, FallsBackToThePageCacheWhenTheChunkIsNotAligned) {
  // 4196 bytes: a multiple of no block size.
  read_file_exactly(make_pool(), 100 * 1000, IoReaderOptions{.chunk = 4196}, ReadPath::kUringFixed, false,
                    "O_DIRECT alignment does not fit");
}

TEST(IoReader, CopyOnWritePoolsAreNotRegistered) {
  read_file_exactly(make_pool(Policy::kCopyOnWrite), 300 * 1000, {}, ReadPath::kUring, true, "copy_on_write");
}

TEST(IoReader, ReadOnlyPoolsAreRegistered) {
  read_file_exactly(make_pool(Policy::kReadOnly), 300 * 1000, {}, ReadPath::kUringFixed, true, nullptr);
}

// Drops CAP_IPC_LOCK from this process's effective set, so RLIMIT_MEMLOCK
// applies to it as to an ordinary user.
bool drop_ipc_lock() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return false;
  data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
  return ::syscall(SYS_capset, &hdr, data) == 0;
}

TEST(IoReader, FallsBackToUnregisteredBuffersWhenRlimitMemlockRefuses) {
  // In a child: the limit and the capability are the process's.
  TempFile file(2 * 1024 * 1024 + 99);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    if (!drop_ipc_lock()) ::_exit(10);
    rlimit lim{64 * 1024, 64 * 1024};  // below the pool's 1 MiB
    if (::setrlimit(RLIMIT_MEMLOCK, &lim) != 0) ::_exit(11);
    Pool pool = make_pool(Policy::kVolatile, 16);
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    std::uint64_t got = 0;
    bool bad = false;
    std::thread t([&] {
      while (got < 2 * 1024 * 1024 + 99) {
        auto v = rx.receive(10s);
        if (!v) return;
        for (std::size_t i = 0; i < v->size(); ++i) bad |= v->data()[i] != pattern(got + i);
        got += v->size();
      }
    });
    IoReader reader = IoReader::open_file(tx, file.path(), IoReaderOptions{.log_fallbacks = false});
    if (reader.path() != ReadPath::kUring) code = 12;
    if (reader.fallback_reason().find("RLIMIT_MEMLOCK") == std::string::npos) code = 13;
    auto r = reader.run();
    t.join();
    if (!r || *r != 2 * 1024 * 1024 + 99 || got != *r || bad) code = 14;
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: capset, 11: setrlimit, 12: path, 13: reason, 14: data";
}

TEST(IoReader, ReceivesFromAStreamSocketByteExact) {
  for (bool uring : {true, false}) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const std::size_t size = 5 * 1024 * 1024 + 17;
    std::thread writer([fd = sv[1], size] {
      std::vector<std::byte> data(size);
      for (std::size_t i = 0; i < size; ++i) data[i] = pattern(i);
      std::size_t done = 0;
      while (done < size) {
        // Uneven pieces, so receives end at odd places.
        const std::size_t n = std::min<std::size_t>(size - done, 1000 + done % 77777);
        const ssize_t w = ::write(fd, data.data() + done, n);
        if (w <= 0) break;
        done += static_cast<std::size_t>(w);
      }
      ::close(fd);
    });
    Pool pool = make_pool();
    Sender tx(pool);
    Checker check(tx.connect_local(), size);
    IoReader reader = IoReader::adopt_fd(tx, sv[0], IoReaderOptions{.use_io_uring = uring, .log_fallbacks = false});
    EXPECT_EQ(reader.path(), uring ? ReadPath::kUring : ReadPath::kPlain);
    auto r = reader.run();
    writer.join();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, size);
    auto [got, bad] = check.result();
    EXPECT_EQ(got, size);
    EXPECT_EQ(bad, ~0ull);
  }
}

TEST(IoReader, AReceiverGoneMidFileLosesTheStreamOnlyAndLeavesThePoolFree) {
  TempFile file(4 * 1024 * 1024);
  Pool pool = make_pool(Policy::kVolatile, 8);
  {
    Sender tx(pool);
    std::optional<Receiver> rx = tx.connect_local();
    IoReader reader = IoReader::open_file(tx, file.path(), IoReaderOptions{.log_fallbacks = false});
    auto first = reader.pump(3);
    ASSERT_TRUE(first);
    EXPECT_EQ(*first, 3u * 64 * 1024);
    // The receiver goes with buffers queued to it and reads in flight.
    rx.reset();
    auto r = reader.pump(1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kNoReceivers);
    // The buffer that could not be published is still held: a receiver
    // that comes now gets the stream from there, in order.
    const std::uint64_t rest = 4 * 1024 * 1024 - 3 * 64 * 1024;
    Checker check(tx.connect_local(), rest, 3 * 64 * 1024);
    auto r2 = reader.run();
    ASSERT_TRUE(r2) << r2.error().message();
    EXPECT_EQ(*r2, rest);
    auto [got, bad] = check.result();
    EXPECT_EQ(got, rest);
    EXPECT_EQ(bad, ~0ull);
  }
  EXPECT_EQ(pool.stats().free, pool.stats().total);
}

// A receiver process killed mid-file while the I/O stage streams to it and
// to a receiver in this process: the other receiver still gets every byte,
// and once the stream is over every buffer is back in the pool.
TEST(IoReader, AReceiverProcessKilledMidFileLosesNothingForTheOthers) {
  const std::size_t size = 24 * 1024 * 1024 + 4321;
  TempFile file(size);
  const std::string service = "unit/io-reader-kill/" + std::to_string(::getpid());
  // The child is forked before this process starts any thread.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Receiver rx;
    for (int i = 0; i < 1000 && !rx; ++i) {
      try {
        rx = Receiver::connect(service);
      } catch (const Error&) {
        ::usleep(5000);
      }
    }
    if (!rx) ::_exit(20);
    std::vector<View> held;
    for (int i = 0; i < 20; ++i) {
      auto v = rx.receive(10s);
      if (!v) ::_exit(21);
      if (i % 4 == 0) held.push_back(std::move(*v));  // dies holding some
    }
    ::kill(::getpid(), SIGKILL);
  }
  Pool pool = make_pool(Policy::kVolatile, 16);
  {
    Sender tx(pool, service);
    ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
    Checker check(tx.connect_local(), size);
    IoReader reader = IoReader::open_file(tx, file.path(), IoReaderOptions{.log_fallbacks = false});
    auto r = reader.run();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, size);
    auto [got, bad] = check.result();
    EXPECT_EQ(got, size);
    EXPECT_EQ(bad, ~0ull);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
    EXPECT_GE(tx.stats().receivers_lost, 1u);
  }
  EXPECT_EQ(pool.stats().free, pool.stats().total);
}

TEST(IoReader, TheCApiReadsAFileAndSaysItsPath) {
  TempFile file(700 * 1000);
  uf_size_class cls{64 * 1024, 8};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("io-c", &cls, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_channel* tx = nullptr;
  ASSERT_EQ(uf_channel_listen(pool, nullptr, &tx), UF_OK);
  uf_channel* rx = nullptr;
  ASSERT_EQ(uf_channel_connect_local(tx, &rx), UF_OK);
  std::uint64_t got = 0;
  bool bad = false;
  std::thread t([&] {
    while (got < 700 * 1000) {
      uf_buf* b = nullptr;
      if (uf_get(rx, 10'000'000'000, &b) != UF_OK) return;
      const auto* p = static_cast<const std::byte*>(uf_cdata(b));
      for (std::size_t i = 0; i < uf_size(b); ++i) bad |= p[i] != pattern(got + i);
      got += uf_size(b);
      uf_deallocate(b);
    }
  });
  uf_io_reader_options o{};
  o.size = sizeof o;
  o.flags = UF_IO_QUIET;
  uf_io_reader* reader = nullptr;
  ASSERT_EQ(uf_io_reader_open(tx, file.path().c_str(), &o, &reader), UF_OK);
  EXPECT_EQ(uf_io_reader_path(reader), UF_READ_URING_FIXED);
  EXPECT_EQ(uf_io_reader_direct(reader), 1);
  EXPECT_STREQ(uf_io_reader_fallback(reader), "");
  std::uint64_t bytes = 0;
  EXPECT_EQ(uf_io_reader_run(reader, &bytes), UF_OK);
  EXPECT_EQ(bytes, 700u * 1000);
  t.join();
  EXPECT_EQ(got, 700u * 1000);
  EXPECT_FALSE(bad);
  uf_io_reader_destroy(reader);
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
}

}  // namespace
}  // namespace fbuf

// Aggregates between processes: a 64-byte header and a 1 MiB frame, each
// from its own size class, sent as one message to another process, read
// there slice by slice in place (checksummed) and written with writev()
// from the message's iovecs into a pipe, byte-exact. And, over the socket
// path, all or nothing under a full ring. The receiving process is this
// binary re-executed with --receiver (see main() below).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "test_frame.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::string g_self;  // this binary, for re-exec

constexpr std::size_t kHeader = 64;
constexpr std::size_t kFrame = 1 << 20;
constexpr int kMessages = 12;

struct Header {
  std::uint64_t magic;
  std::uint64_t sequence;
  std::uint64_t frame_size;
  std::uint64_t frame_checksum;
};
static_assert(sizeof(Header) <= kHeader);

std::uint64_t checksum(std::uint64_t h, std::span<const std::byte> bytes) {
  return tf_checksum(h, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

void fill_frame(std::span<std::byte> frame, std::uint64_t sequence) {
  for (std::size_t i = 0; i < frame.size(); i += 8) {
    const std::uint64_t v = tf_mix(sequence * 0x10001 + i);
    std::memcpy(frame.data() + i, &v, std::min<std::size_t>(8, frame.size() - i));
  }
}

// Every byte written into the pipe's other end, checksummed as it comes.
class PipeSink {
 public:
  PipeSink() {
    if (pipe2(fds_, O_CLOEXEC) != 0) std::abort();
    reader_ = std::thread([this] {
      std::vector<unsigned char> chunk(65536);
      for (;;) {
        const ssize_t n = read(fds_[0], chunk.data(), chunk.size());
        if (n <= 0) break;
        sum_ = tf_checksum(sum_, chunk.data(), static_cast<std::size_t>(n));
        bytes_ += static_cast<std::size_t>(n);
      }
    });
  }
  int fd() const { return fds_[1]; }
  // Closes the write end and waits for the reader.
  void finish() {
    close(fds_[1]);
    reader_.join();
    close(fds_[0]);
  }
  std::uint64_t sum() const { return sum_; }
  std::size_t bytes() const { return bytes_; }

 private:
  int fds_[2] = {-1, -1};
  std::thread reader_;
  std::uint64_t sum_ = TF_FNV_OFFSET;
  std::size_t bytes_ = 0;
};

// Writes all of `m` with writev, resuming after short writes.
bool write_all(int fd, const Message& m) {
  iovec iov[Message::kMaxSlices];
  std::size_t n = m.iovecs(iov, Message::kMaxSlices);
  iovec* at = iov;
  while (n != 0) {
    ssize_t w = writev(fd, at, static_cast<int>(n));
    if (w < 0) return false;
    auto left = static_cast<std::size_t>(w);
    while (n != 0 && left >= at->iov_len) {
      left -= at->iov_len;
      ++at;
      --n;
    }
    if (n != 0) {
      at->iov_base = static_cast<char*>(at->iov_base) + left;
      at->iov_len -= left;
    }
  }
  return true;
}

// The receiving process: checks each message slice by slice and through
// writev, prints one line per message, then its counters.
int run_receiver(const char* service) {
  try {
    Receiver rx = Receiver::connect(service);
    PipeSink sink;
    std::uint64_t in_place = TF_FNV_OFFSET;
    for (int i = 0; i < kMessages; ++i) {
      Result<Message> m = rx.receive_message(20s);
      if (!m) {
        std::printf("error receive %s\n", m.error().message().c_str());
        return 2;
      }
      if (m->slice_count() != 2 || m->slice(0).size() != kHeader || m->slice(1).size() != kFrame) {
        std::printf("error shape slices=%zu\n", m->slice_count());
        return 3;
      }
      Header h;
      std::memcpy(&h, m->slice(0).data(), sizeof h);
      const std::uint64_t frame_sum = checksum(TF_FNV_OFFSET, m->slice(1));
      const bool ok = h.magic == TF_MAGIC && h.sequence == static_cast<std::uint64_t>(i) &&
                      h.frame_size == kFrame && h.frame_checksum == frame_sum;
      for (std::size_t s = 0; s < m->slice_count(); ++s) in_place = checksum(in_place, m->slice(s));
      if (!write_all(sink.fd(), *m)) return 4;
      std::printf("message %d %s %s\n", i, ok ? "ok" : "bad", testing::hex(frame_sum).c_str());
      std::fflush(stdout);
    }
    sink.finish();
    const ReceiverStats st = rx.stats();
    std::printf("done pipe=%s bytes=%zu in_place=%s received=%llu rejected=%llu\n",
                sink.sum() == in_place ? "exact" : "differs", sink.bytes(), testing::hex(in_place).c_str(),
                static_cast<unsigned long long>(st.received),
                static_cast<unsigned long long>(st.rejected_messages + st.rejected_descriptors));
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::printf("error %s\n", e.what());
    return 1;
  }
}

Pool frame_pool(const char* name) {
  return Pool(PoolOptions{.name = name, .classes = {{4096, 8}, {kFrame, 4}}});
}

TEST(MessageProcess, AHeaderAndAFrameArriveWholeInAnotherProcess) {
  Pool pool = frame_pool("msg-process");
  const std::string service = testing::unique_service("message");
  Sender tx(pool, service);
  testing::Child child(g_self, {"--receiver", service});
  ASSERT_TRUE(tx.wait_for_receivers(1, 10s)) << child.output();
  std::uint64_t expected_stream = TF_FNV_OFFSET;
  std::vector<std::uint64_t> frame_sums;
  for (int i = 0; i < kMessages; ++i) {
    Result<Buffer> header = tx.allocate(kHeader, 10s);
    Result<Buffer> frame = tx.allocate(kFrame, 10s);
    ASSERT_TRUE(header && frame);
    fill_frame(frame->bytes().first(kFrame), static_cast<std::uint64_t>(i));
    const std::uint64_t frame_sum = checksum(TF_FNV_OFFSET, frame->bytes().first(kFrame));
    Header h{TF_MAGIC, static_cast<std::uint64_t>(i), kFrame, frame_sum};
    std::memset(header->data(), 0, kHeader);
    std::memcpy(header->data(), &h, sizeof h);
    expected_stream = checksum(expected_stream, header->bytes().first(kHeader));
    expected_stream = checksum(expected_stream, frame->bytes().first(kFrame));
    frame_sums.push_back(frame_sum);
    // Built back to front: the frame first, then its header in front.
    Message m;
    ASSERT_FALSE(m.append(std::move(*frame), kFrame));
    ASSERT_FALSE(m.prepend(std::move(*header), kHeader));
    ASSERT_FALSE(tx.send(std::move(m), 10s));
  }
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(child.line(), "message " + std::to_string(i) + " ok " + testing::hex(frame_sums[i]));
  }
  const std::string done = child.line();
  EXPECT_EQ(testing::field(done, "pipe"), "exact") << done;
  EXPECT_EQ(testing::field(done, "bytes"), std::to_string(kMessages * (kHeader + kFrame))) << done;
  EXPECT_EQ(testing::field(done, "in_place"), testing::hex(expected_stream)) << done;
  EXPECT_EQ(testing::field(done, "received"), std::to_string(2 * kMessages)) << done;
  EXPECT_EQ(testing::field(done, "rejected"), "0") << done;
  EXPECT_TRUE(child.wait(20s).exited_with(0)) << child.output();
  EXPECT_EQ(tx.stats().sent, 2u * kMessages);
  // Every slice came back to the pool.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().free != pool.stats().total && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(pool.stats().free, pool.stats().total);
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

// Over the socket path (a receiver that maps the pool like another
// process does): a message that does not fit the ring is not published in
// part, and every slice is still the caller's, writable, and sendable later.
TEST(MessageProcess, AFullRingOfARemoteReceiverFailsTheWholeMessage) {
  Pool pool = frame_pool("msg-process-full");
  const std::string service = testing::unique_service("message-full");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 4});
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  for (int i = 0; i < 3; ++i) {
    Result<Buffer> b = tx.try_allocate(16);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.try_send(std::move(*b), 16));
  }
  Message m;
  for (int i = 0; i < 2; ++i) {
    Result<Buffer> b = tx.try_allocate(16);
    ASSERT_TRUE(b);
    std::memset(b->data(), 'a' + i, 16);
    ASSERT_FALSE(m.append(std::move(*b), 16));
  }
  EXPECT_EQ(tx.try_send(std::move(m)), Errc::kWouldBlock);
  EXPECT_EQ(tx.send(std::move(m), 5ms), Errc::kTimedOut);
  ASSERT_EQ(m.slice_count(), 2u);
  m.writable_slice(1)[0] = std::byte{'z'};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(rx.receive(1s));
  EXPECT_EQ(rx.try_receive().error(), Errc::kWouldBlock);  // nothing of the message leaked
  ASSERT_FALSE(tx.send(std::move(m), 1s));
  Result<Message> got = rx.receive_message(1s);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->slice_count(), 2u);
  EXPECT_EQ(got->slice(0)[0], std::byte{'a'});
  EXPECT_EQ(got->slice(1)[0], std::byte{'z'});
}

// A message that receive() met and left for receive_message() holds Views
// whose owner is the receiver itself: closing the receiver must give them
// back, not keep the receiver (and the buffers) alive.
TEST(MessageProcess, AMessageLeftByReceiveGoesBackWhenTheRemoteReceiverCloses) {
  Pool pool = frame_pool("msg-process-stash");
  const std::string service = testing::unique_service("message-stash");
  Sender tx(pool, service);
  {
    Receiver rx = Receiver::connect(service);
    ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
    Message m;
    for (int i = 0; i < 3; ++i) {
      Result<Buffer> b = tx.try_allocate(16);
      ASSERT_TRUE(b);
      ASSERT_FALSE(m.append(std::move(*b), 16));
    }
    ASSERT_FALSE(tx.send(std::move(m), 1s));
    EXPECT_EQ(rx.receive(1s).error(), Errc::kMessage);
  }
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().free != pool.stats().total && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(pool.stats().free, pool.stats().total);
  EXPECT_EQ(pool.stats().rejected_returns, 0u);
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  fbuf::g_self = "/proc/self/exe";
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) fbuf::g_self.assign(exe, static_cast<std::size_t>(n));
  if (argc == 3 && std::strcmp(argv[1], "--receiver") == 0) return fbuf::run_receiver(argv[2]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

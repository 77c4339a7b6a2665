// The copying baselines: a pipe and a Unix domain socket. The producer
// produces into its own buffer and write()s all `size` bytes; the consumer
// read()s them into its own buffer and consumes them there. The kernel
// copies every byte twice (into the pipe or socket buffer, and out).

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>

#include "bench_sys.h"
#include "ends.h"

namespace fbuf::bench::peers {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const char* what) {
  return std::string(what) + ": " +
         (errno == 0 ? std::string("end of file") : std::system_category().message(errno));
}

// Reads exactly `n` bytes. With a `spin`, while nothing is there it
// retries non-blocking reads for `spin` (counted from the last byte that
// arrived), then sleeps in poll(): a socket is read with MSG_DONTWAIT (its
// descriptor stays blocking for the writer sharing it); a pipe's read end
// is O_NONBLOCK. Without one it blocks in read() at once.
bool read_exact(int fd, std::byte* p, std::size_t n, std::chrono::nanoseconds spin, bool socket,
                std::string& error) {
  auto last_progress = Clock::now();
  const int flags = spin.count() > 0 ? MSG_DONTWAIT : 0;
  while (n > 0) {
    ssize_t r = socket ? ::recv(fd, p, n, flags) : ::read(fd, p, n);
    if (r > 0) {
      p += r;
      n -= static_cast<std::size_t>(r);
      if (spin.count() > 0 && n > 0) last_progress = Clock::now();
      continue;
    }
    if (r == 0) {
      errno = 0;
      error = errno_text("read");
      return false;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      error = errno_text("read");
      return false;
    }
    if (spin.count() > 0 && Clock::now() - last_progress < spin) {
      cpu_relax();
      continue;
    }
    pollfd pfd{fd, POLLIN, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(std::chrono::milliseconds(kOpTimeout).count()));
    if (rc == 0) {
      error = "read: timed out";
      return false;
    }
    if (rc < 0 && errno != EINTR) {
      error = errno_text("poll");
      return false;
    }
  }
  return true;
}

// Produces into a private buffer and write()s it whole.
class StreamOutlet final : public Outlet {
 public:
  StreamOutlet(int fd, std::size_t size, Mode mode) : fd_(fd), size_(size), mode_(mode), buffer_(size) {}

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    produce(buffer_.data(), size_, seq, flags, mode_);
    if (write_full(fd_, buffer_.data(), size_)) return true;
    error_ = errno_text("write");
    return false;
  }

 private:
  int fd_;
  std::size_t size_;
  Mode mode_;
  PageBuffer buffer_;
};

// read()s a whole message into a private buffer and consumes it there.
class StreamInlet final : public Inlet {
 public:
  StreamInlet(int fd, std::size_t size, Mode mode, std::chrono::nanoseconds spin, bool socket)
      : fd_(fd), size_(size), mode_(mode), spin_(spin), socket_(socket), buffer_(size) {
    if (!socket_ && spin_.count() > 0) set_nonblocking(fd_);
  }

  bool next(Consumed& out) override {
    if (!read_exact(fd_, buffer_.data(), size_, spin_, socket_, error_)) return false;
    out = consume(buffer_.data(), size_, mode_);
    return true;
  }

 private:
  int fd_;
  std::size_t size_;
  Mode mode_;
  std::chrono::nanoseconds spin_;
  bool socket_;
  PageBuffer buffer_;
};

}  // namespace

// The descriptors are the child's fixed ones; they close when it exits.
std::unique_ptr<ProducerEnd> make_stream_producer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket) {
  return std::make_unique<ProducerEnd>(std::make_unique<StreamOutlet>(data_fd, c.size, c.mode),
                                       std::make_unique<StreamInlet>(reply_fd, kReplySize, Mode::kTransport,
                                                                     c.spin, socket));
}

std::unique_ptr<ConsumerEnd> make_stream_consumer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket) {
  return std::make_unique<ConsumerEnd>(std::make_unique<StreamInlet>(data_fd, c.size, c.mode, c.spin, socket),
                                       std::make_unique<StreamOutlet>(reply_fd, kReplySize, Mode::kTransport));
}

}  // namespace fbuf::bench::peers

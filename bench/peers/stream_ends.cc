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

// Adopts `data_fd` and `reply_fd` (one socket, or two pipe ends).
struct Fds {
  Fd data;
  Fd reply;  // empty for a socket: replies share `data`
  int data_fd() const { return data.get(); }
  int reply_fd() const { return reply ? reply.get() : data.get(); }
};

Fds adopt(int data_fd, int reply_fd) {
  Fds f;
  f.data = Fd(data_fd);
  if (reply_fd != data_fd) f.reply = Fd(reply_fd);
  return f;
}

class StreamProducer final : public ProducerEnd {
 public:
  StreamProducer(const EndConfig& c, int data_fd, int reply_fd, bool socket)
      : c_(c), fds_(adopt(data_fd, reply_fd)), socket_(socket), buffer_(c.size) {
    if (!socket_ && c.spin.count() > 0) set_nonblocking(fds_.reply_fd());
  }

  bool send(std::uint64_t seq, std::uint64_t flags) override {
    produce(buffer_.data(), c_.size, seq, flags, c_.mode);
    if (!write_full(fds_.data_fd(), buffer_.data(), c_.size)) {
      error_ = errno_text("write");
      return false;
    }
    return true;
  }

  bool wait_reply(std::uint64_t seq) override {
    std::byte r[kReplySize];
    if (!read_exact(fds_.reply_fd(), r, sizeof(r), c_.spin, socket_, error_)) return false;
    Header h{};
    std::memcpy(&h, r, sizeof(h));
    if (h.seq != seq) {
      error_ = "reply to " + std::to_string(h.seq) + ", expected " + std::to_string(seq);
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Fds fds_;
  bool socket_;
  PageBuffer buffer_;
};

class StreamConsumer final : public ConsumerEnd {
 public:
  StreamConsumer(const EndConfig& c, int data_fd, int reply_fd, bool socket)
      : c_(c), fds_(adopt(data_fd, reply_fd)), socket_(socket), buffer_(c.size) {
    if (!socket_ && c.spin.count() > 0) set_nonblocking(fds_.data_fd());
  }

  bool next(Consumed& out) override {
    if (!read_exact(fds_.data_fd(), buffer_.data(), c_.size, c_.spin, socket_, error_)) return false;
    out = consume(buffer_.data(), c_.size, c_.mode);
    return true;
  }

  bool reply(std::uint64_t seq) override {
    std::byte r[kReplySize] = {};
    const Header h{seq, 0};
    std::memcpy(r, &h, sizeof(h));
    if (!write_full(fds_.reply_fd(), r, sizeof(r))) {
      error_ = errno_text("write(reply)");
      return false;
    }
    return true;
  }

 private:
  EndConfig c_;
  Fds fds_;
  bool socket_;
  PageBuffer buffer_;
};

}  // namespace

std::unique_ptr<ProducerEnd> make_stream_producer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket) {
  return std::make_unique<StreamProducer>(c, data_fd, reply_fd, socket);
}

std::unique_ptr<ConsumerEnd> make_stream_consumer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket) {
  return std::make_unique<StreamConsumer>(c, data_fd, reply_fd, socket);
}

}  // namespace fbuf::bench::peers

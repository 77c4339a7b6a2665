#include "transports.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace fbuf::bench {

const char* to_string(Transport t) noexcept {
  switch (t) {
    case Transport::kFbuf: return "fbuf";
    case Transport::kPipe: return "pipe";
    case Transport::kUnix: return "unix";
    case Transport::kPipeSpin: return "pipe-spin";
    case Transport::kUnixSpin: return "unix-spin";
  }
  return "?";
}

std::optional<Transport> parse_transport(std::string_view s) noexcept {
  if (s == "fbuf") return Transport::kFbuf;
  if (s == "pipe") return Transport::kPipe;
  if (s == "unix") return Transport::kUnix;
  if (s == "pipe-spin") return Transport::kPipeSpin;
  if (s == "unix-spin") return Transport::kUnixSpin;
  return std::nullopt;
}

namespace {

// The byte the producer fills message `seq` with.
unsigned char fill_byte(std::uint64_t seq) noexcept {
  return static_cast<unsigned char>((seq * 0x9Du + 0x5Bu) & 0xFFu);
}

// The consumer adds into this so that the compiler keeps every read.
volatile std::uint64_t g_sink = 0;

std::string errno_text(const char* what) {
  return std::string(what) + ": " + (errno == 0 ? std::string("end of file")
                                                : std::system_category().message(errno));
}

}  // namespace

void produce_payload(std::byte* p, std::size_t size, std::uint64_t seq,
                     std::uint64_t flags) noexcept {
  std::memset(p, fill_byte(seq), size);
  MessageHeader h{seq, flags};
  std::memcpy(p, &h, sizeof(h));
}

Consumed consume_payload(const std::byte* p, std::size_t size,
                         std::size_t expected_size) noexcept {
  Consumed c{};
  if (size < sizeof(MessageHeader)) {
    c.data_ok = false;
    return c;
  }
  std::uint64_t sum = 0;
  for (std::size_t off = 0; off < size; off += kCacheLine) {
    std::uint64_t word;
    std::memcpy(&word, p + off, sizeof(word));
    sum += word;
  }
  g_sink = g_sink + sum;
  std::memcpy(&c.header, p, sizeof(c.header));
  c.data_ok = size == expected_size &&
              static_cast<unsigned char>(p[size - 1]) == fill_byte(c.header.seq);
  return c;
}

// --- fbuf ------------------------------------------------------------------

namespace {

Pool make_pool(const std::string& name, std::size_t size, std::uint32_t buffers, Policy policy) {
  PoolOptions options;
  options.name = name;
  options.classes = {SizeClass{size, buffers}};
  options.policy = policy;
  return Pool(std::move(options));
}

// The reply channel carries one header per round trip.
constexpr std::size_t kReplySize = kCacheLine;
constexpr std::uint32_t kReplyBuffers = 16;

}  // namespace

FbufProducer::FbufProducer(const std::string& service, std::size_t size, std::uint32_t buffers,
                           Policy policy)
    : size_(size), sender_(make_pool("bench-" + service, size, buffers, policy), service) {}

void FbufProducer::wait_for_consumer() {
  if (!sender_.wait_for_receivers(1, kOpTimeout)) {
    throw std::runtime_error("fbuf: no receiver connected to '" + sender_.service() +
                             "' within " + std::to_string(kOpTimeout.count()) + " s");
  }
}

void FbufProducer::connect_reply(const std::string& reply_service) {
  reply_receiver_ = Receiver::connect(reply_service);
}

bool FbufProducer::send(std::uint64_t seq, std::uint64_t flags) {
  Result<Buffer> b = sender_.allocate(size_, kOpTimeout);
  if (!b) {
    error_ = "fbuf allocate: " + b.error().message();
    return false;
  }
  produce_payload(b->data(), size_, seq, flags);
  std::error_code ec = sender_.send(std::move(*b), size_, kOpTimeout);
  if (ec) {
    error_ = "fbuf send: " + ec.message();
    return false;
  }
  ++sent_;
  return true;
}

std::string FbufProducer::audit() const {
  SenderStats st = sender_.stats();
  if (st.sent != sent_ || st.delivered != sent_ || st.rejected_returns != 0 ||
      st.rejected_handshakes != 0) {
    return "fbuf Sender stats disagree: sent " + std::to_string(st.sent) + ", delivered " +
           std::to_string(st.delivered) + " (expected " + std::to_string(sent_) +
           "), rejected returns " + std::to_string(st.rejected_returns) +
           ", rejected handshakes " + std::to_string(st.rejected_handshakes);
  }
  return {};
}

bool FbufProducer::wait_reply(std::uint64_t seq) {
  MessageHeader h{};
  if (reply_pipe_) {
    if (!read_full(reply_pipe_.get(), &h, sizeof(h))) {
      error_ = errno_text("reply pipe read");
      return false;
    }
  } else {
    Result<View> v = reply_receiver_.receive(kOpTimeout);
    if (!v) {
      error_ = "fbuf reply receive: " + v.error().message();
      return false;
    }
    if (v->size() < sizeof(h)) {
      error_ = "fbuf reply: short view of " + std::to_string(v->size()) + " bytes";
      return false;
    }
    std::memcpy(&h, v->data(), sizeof(h));
  }
  if (h.seq != seq) {
    error_ = "reply to " + std::to_string(h.seq) + " while waiting for " + std::to_string(seq);
    return false;
  }
  return true;
}

FbufConsumer::FbufConsumer(const std::string& service, std::size_t size)
    : size_(size), receiver_(Receiver::connect(service)) {}

void FbufConsumer::publish_reply(const std::string& reply_service) {
  reply_sender_.emplace(make_pool("bench-" + reply_service, kReplySize, kReplyBuffers,
                                  Policy::kVolatile),
                        reply_service);
}

void FbufConsumer::wait_for_reply_receiver() {
  if (reply_sender_ && !reply_sender_->wait_for_receivers(1, kOpTimeout)) {
    throw std::runtime_error("fbuf: the producer did not connect to the reply channel");
  }
}

bool FbufConsumer::next(Consumed& out) {
  Result<View> v = receiver_.receive(kOpTimeout);
  if (!v) {
    error_ = "fbuf receive: " + v.error().message();
    return false;
  }
  out = consume_payload(v->data(), v->size(), size_);
  // The View is dropped on return: the buffer goes back to the producer.
  return true;
}

bool FbufConsumer::reply(std::uint64_t seq) {
  MessageHeader h{seq, 0};
  if (reply_pipe_) {
    if (!write_full(reply_pipe_.get(), &h, sizeof(h))) {
      error_ = errno_text("reply pipe write");
      return false;
    }
    return true;
  }
  if (!reply_sender_) {
    error_ = "fbuf: no reply path";
    return false;
  }
  Result<Buffer> b = reply_sender_->allocate(kReplySize, kOpTimeout);
  if (!b) {
    error_ = "fbuf reply allocate: " + b.error().message();
    return false;
  }
  std::memcpy(b->data(), &h, sizeof(h));
  std::error_code ec = reply_sender_->send(std::move(*b), sizeof(h), kOpTimeout);
  if (ec) {
    error_ = "fbuf reply send: " + ec.message();
    return false;
  }
  return true;
}

// --- pipe and unix -----------------------------------------------------------

StreamProducer::StreamProducer(Fd data, Fd reply, std::size_t size, std::chrono::nanoseconds spin)
    : data_(std::move(data)), reply_(std::move(reply)), size_(size), spin_(spin), buffer_(size) {
  if (spin_.count() > 0) {
    set_nonblocking(data_.get());
    if (reply_) set_nonblocking(reply_.get());
  }
}

bool StreamProducer::send(std::uint64_t seq, std::uint64_t flags) {
  produce_payload(buffer_.data(), size_, seq, flags);
  if (!write_full(data_.get(), buffer_.data(), size_)) {
    error_ = errno_text("write");
    return false;
  }
  return true;
}

bool StreamProducer::wait_reply(std::uint64_t seq) {
  MessageHeader h{};
  int fd = reply_ ? reply_.get() : data_.get();
  if (!read_full(fd, &h, sizeof(h), spin_)) {
    error_ = errno_text("reply read");
    return false;
  }
  if (h.seq != seq) {
    error_ = "reply to " + std::to_string(h.seq) + " while waiting for " + std::to_string(seq);
    return false;
  }
  return true;
}

StreamConsumer::StreamConsumer(int data_fd, int reply_fd, std::size_t size,
                               std::chrono::nanoseconds spin)
    : data_fd_(data_fd), reply_fd_(reply_fd), size_(size), spin_(spin), buffer_(size) {
  if (spin_.count() > 0) set_nonblocking(data_fd_);
}

bool StreamConsumer::next(Consumed& out) {
  if (!read_full(data_fd_, buffer_.data(), size_, spin_)) {
    error_ = errno_text("read");
    return false;
  }
  out = consume_payload(buffer_.data(), size_, size_);
  return true;
}

bool StreamConsumer::reply(std::uint64_t seq) {
  MessageHeader h{seq, 0};
  if (!write_full(reply_fd_, &h, sizeof(h))) {
    error_ = errno_text("reply write");
    return false;
  }
  return true;
}

}  // namespace fbuf::bench

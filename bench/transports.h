// The three transports that transport_bench compares, each as a producer end
// (in the benchmark's main process) and a consumer end (in the consumer
// process it starts):
//  - fbuf: the producer writes the payload into a pool buffer and sends its
//    descriptor; the consumer reads the sender's memory through a View.
//  - pipe: the producer writes the payload into its own buffer and write()s
//    it; the consumer read()s it into its own buffer.
//  - unix: as pipe, over a SOCK_STREAM Unix socketpair.
//  - pipe-spin, unix-spin: as pipe and unix, with spinning readers.
// Every message costs the same work at the ends on every transport: the
// producer writes every byte of the payload (and a header), the consumer
// reads every cache line of it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bench_sys.h"
#include "fbuf/fbuf.h"

namespace fbuf::bench {

// kPipeSpin and kUnixSpin are kPipe and kUnix with readers that poll a
// non-blocking descriptor for a while before they block, as fbuf's
// receive() spins before it sleeps: they separate the cost of moving the
// bytes from the cost of a wake-up.
enum class Transport { kFbuf, kPipe, kUnix, kPipeSpin, kUnixSpin };
const char* to_string(Transport t) noexcept;
std::optional<Transport> parse_transport(std::string_view s) noexcept;
inline bool is_pipe(Transport t) noexcept {
  return t == Transport::kPipe || t == Transport::kPipeSpin;
}
inline bool spins(Transport t) noexcept {
  return t == Transport::kPipeSpin || t == Transport::kUnixSpin;
}

// The first bytes of every payload.
struct MessageHeader {
  std::uint64_t seq;
  std::uint64_t flags;
};
// After consuming this message the consumer sends an Ack report.
inline constexpr std::uint64_t kFlagAck = 1;
// After consuming this message the consumer replies through the reply path.
inline constexpr std::uint64_t kFlagReply = 2;
// The last message: the consumer sends its Final report and exits.
inline constexpr std::uint64_t kFlagStop = 4;

// The smallest payload: one cache line, which holds the header.
inline constexpr std::size_t kCacheLine = 64;

// How long a blocking fbuf call may wait before the benchmark calls it a
// failure (a healthy run never waits anywhere near this long).
inline constexpr std::chrono::seconds kOpTimeout{10};

// The producer's work for message `seq`: writes every byte of the `size`
// bytes at `p` (a fill byte derived from `seq`), then the header.
void produce_payload(std::byte* p, std::size_t size, std::uint64_t seq,
                     std::uint64_t flags) noexcept;

struct Consumed {
  MessageHeader header;
  bool data_ok;  // the size and the last byte match what the producer wrote
};
// The consumer's work: reads every cache line (64-byte stride) of the
// payload and adds one word of each to a volatile sink, then checks it.
Consumed consume_payload(const std::byte* p, std::size_t size,
                         std::size_t expected_size) noexcept;

// The producer's end of one transport. Not thread-safe.
class ProducerEnd {
 public:
  virtual ~ProducerEnd() = default;
  // Produces message `seq` and sends it. False on failure (see error()).
  virtual bool send(std::uint64_t seq, std::uint64_t flags) = 0;
  // Waits for the consumer's reply to message `seq` (ping-pong).
  virtual bool wait_reply(std::uint64_t seq) = 0;
  // After the run: what the transport's own accounting says is wrong, or
  // "" (for fbuf: the Sender's counters against what was sent).
  virtual std::string audit() const { return {}; }
  const std::string& error() const noexcept { return error_; }

 protected:
  std::string error_;
};

// The consumer's end of one transport. Not thread-safe.
class ConsumerEnd {
 public:
  virtual ~ConsumerEnd() = default;
  // Receives the next message, consumes it (consume_payload) and gives the
  // memory back. False on failure (see error()).
  virtual bool next(Consumed& out) = 0;
  // Replies to message `seq` through the reply path.
  virtual bool reply(std::uint64_t seq) = 0;
  const std::string& error() const noexcept { return error_; }

 protected:
  std::string error_;
};

// fbuf producer: owns a pool with one size class and a Sender listening
// under `service`. Replies come back either through an fbuf channel the
// consumer publishes (connect_reply) or through a pipe (set_reply_pipe).
class FbufProducer final : public ProducerEnd {
 public:
  FbufProducer(const std::string& service, std::size_t size, std::uint32_t buffers,
               Policy policy);
  // Waits until the consumer process has connected. Throws on timeout.
  void wait_for_consumer();
  void connect_reply(const std::string& reply_service);
  void set_reply_pipe(Fd reply_read) { reply_pipe_ = std::move(reply_read); }

  bool send(std::uint64_t seq, std::uint64_t flags) override;
  bool wait_reply(std::uint64_t seq) override;
  std::string audit() const override;

 private:
  std::size_t size_;
  std::uint64_t sent_ = 0;
  Sender sender_;
  Receiver reply_receiver_;
  Fd reply_pipe_;
};

// fbuf consumer: a Receiver connected to `service`; for ping-pong either a
// reply channel of its own under `reply_service` or a reply pipe.
class FbufConsumer final : public ConsumerEnd {
 public:
  FbufConsumer(const std::string& service, std::size_t size);
  // Publishes the reply channel; the producer connects after the Ready
  // report. Call wait_for_reply_receiver() after sending that report.
  void publish_reply(const std::string& reply_service);
  void wait_for_reply_receiver();
  void set_reply_pipe(Fd reply_write) { reply_pipe_ = std::move(reply_write); }

  bool next(Consumed& out) override;
  bool reply(std::uint64_t seq) override;

 private:
  std::size_t size_;
  Receiver receiver_;
  std::optional<Sender> reply_sender_;
  Fd reply_pipe_;
};

// pipe and unix producer: writes each payload from its own buffer with
// write(). `data` is the pipe's write end or the producer's socket;
// replies come from `reply` (a pipe's read end, or the same socket).
// With a non-zero `spin` the descriptors are made O_NONBLOCK and a reply
// is polled for up to `spin` before the producer blocks (as fbuf's
// receive() spins before it sleeps).
class StreamProducer final : public ProducerEnd {
 public:
  StreamProducer(Fd data, Fd reply, std::size_t size, std::chrono::nanoseconds spin);
  bool send(std::uint64_t seq, std::uint64_t flags) override;
  bool wait_reply(std::uint64_t seq) override;

 private:
  Fd data_;
  Fd reply_;  // empty when replies travel over data_ (a socket)
  std::size_t size_;
  std::chrono::nanoseconds spin_;
  PageBuffer buffer_;
};

// pipe and unix consumer: read()s each payload into its own buffer.
class StreamConsumer final : public ConsumerEnd {
 public:
  // `reply_fd` may equal `data_fd` (a socket); the descriptors are not
  // owned (they are the fixed descriptors the consumer process inherited).
  // `spin` as for StreamProducer, for each message.
  StreamConsumer(int data_fd, int reply_fd, std::size_t size, std::chrono::nanoseconds spin);
  bool next(Consumed& out) override;
  bool reply(std::uint64_t seq) override;

 private:
  int data_fd_;
  int reply_fd_;
  std::size_t size_;
  std::chrono::nanoseconds spin_;
  PageBuffer buffer_;
};

}  // namespace fbuf::bench

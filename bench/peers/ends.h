// The two ends of every transport peer_bench measures, and the factories
// that build them.
//
// A ProducerEnd lives in the producer process (or thread), a ConsumerEnd in
// the consumer process (or thread). Each is two directions of its
// transport: the producer's data Outlet and reply Inlet, the consumer's
// data Inlet and reply Outlet (a reply is a kReplySize message). The
// session code (session.h) drives both the same way for every transport,
// so every transport does the same application work per message
// (message.h) and differs only in how the message travels and how a
// waiting side waits.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "message.h"

namespace fbuf::bench::peers {

// Where a child process of peer_bench finds the descriptors of its cell
// (the orchestrator puts them there): pipe ends, the socket, or the ring
// region's memfd.
inline constexpr int kDataFd = 4;
inline constexpr int kReplyFd = 5;

// How long one blocking operation may take before the benchmark calls the
// cell a failure (a healthy run never waits anywhere near this long).
inline constexpr std::chrono::seconds kOpTimeout{10};

// What both ends of one cell agree on.
struct EndConfig {
  std::size_t size = 0;  // payload bytes per message
  Mode mode = Mode::kTransport;
  // Messages that may be in flight: pool buffers (fbuf, ring floor),
  // queue slots (message_queue, iceoryx subscriber queue).
  std::uint32_t depth = 0;
  // How long a side that waits for a message (or a reply, or space) polls
  // before it blocks in the kernel. fbuf's receive() spins 20 us (a library
  // constant); the peers get the same by default.
  std::chrono::nanoseconds spin{std::chrono::microseconds(20)};
  // Ring floor only: take returned buffers back before every allocation
  // and reuse the most recently returned one first (true, as fbuf's pool
  // does), or only when the free list is empty, cycling through every
  // buffer (false: the cheapest per message).
  bool ring_eager_reuse = false;
};

// One direction of a transport, as its sending side. Not thread-safe.
class Outlet {
 public:
  virtual ~Outlet() = default;
  // Produces message `seq` (message.h) and sends it. False on failure.
  virtual bool send(std::uint64_t seq, std::uint64_t flags) = 0;
  const std::string& error() const noexcept { return error_; }

 protected:
  std::string error_;
};

// One direction of a transport, as its receiving side. Not thread-safe.
class Inlet {
 public:
  virtual ~Inlet() = default;
  // Receives the next message, consumes it (message.h) and gives the
  // memory back. False on failure.
  virtual bool next(Consumed& out) = 0;
  const std::string& error() const noexcept { return error_; }

 protected:
  std::string error_;
};

// The producer's end: sends messages, waits for replies.
class ProducerEnd {
 public:
  ProducerEnd(std::unique_ptr<Outlet> data, std::unique_ptr<Inlet> replies)
      : data_(std::move(data)), replies_(std::move(replies)) {}
  bool send(std::uint64_t seq, std::uint64_t flags);
  // Waits for the consumer's reply to message `seq` (ping-pong).
  bool wait_reply(std::uint64_t seq);
  const std::string& error() const noexcept { return error_; }

 private:
  std::unique_ptr<Outlet> data_;
  std::unique_ptr<Inlet> replies_;
  std::string error_;
};

// The consumer's end: receives messages, replies to some.
class ConsumerEnd {
 public:
  ConsumerEnd(std::unique_ptr<Inlet> data, std::unique_ptr<Outlet> replies)
      : data_(std::move(data)), replies_(std::move(replies)) {}
  bool next(Consumed& out);
  // Replies to message `seq` with a kReplySize message.
  bool reply(std::uint64_t seq);
  const std::string& error() const noexcept { return error_; }

 private:
  std::unique_ptr<Inlet> data_;
  std::unique_ptr<Outlet> replies_;
  std::string error_;
};

// The middle process of a path cell: takes each message from upstream and
// passes it on downstream (forwarded, or copied), without touching the
// payload. Not thread-safe.
class Relay {
 public:
  virtual ~Relay() = default;
  // Passes one message on; sets `last` after the message flagged
  // kFlagStop. False on failure.
  virtual bool pass(bool& last) = 0;
  const std::string& error() const noexcept { return error_; }

 protected:
  std::string error_;
};

// The service (fbuf) or instance (iceoryx) a path cell's relay sends on.
inline std::string relay_service(const std::string& name) { return name + "-2"; }

// The ends one process builds for a cell (one of them, or both for a thread
// handoff).
struct Ends {
  std::unique_ptr<ProducerEnd> producer;
  std::unique_ptr<ConsumerEnd> consumer;
};

// --- fbuf (fbuf_ends.cc) -------------------------------------------------

// Across processes. The producer owns a pool (one size class, `depth`
// buffers, `policy`) and a Sender listening under `service`; it connects
// to the consumer's reply channel `service`+"-r". The consumer owns the
// reply pool (64-byte class, same policy). policy: 0 volatile, 1 read_only,
// 2 copy_on_write (fbuf::Policy values; kept numeric so that this header
// needs no fbuf header).
std::unique_ptr<ProducerEnd> make_fbuf_producer(const EndConfig& c, const std::string& service,
                                                int policy);
// With `via_fd` the consumer waits for data in epoll_wait on the
// Receiver's readiness fd (after spinning for c.spin, as receive() does),
// the way an event loop would.
// `upstream`, if not empty, is the service the data comes from (a path
// cell's relay); the reply channel is `service`+"-r" either way.
std::unique_ptr<ConsumerEnd> make_fbuf_consumer(const EndConfig& c, const std::string& service,
                                                int policy, bool via_fd = false,
                                                const std::string& upstream = "");
// Receives from `upstream` and passes each View on to the Sender it
// creates under `downstream` (a pool of its own): with `forward`, the View
// itself (Sender::send(const View&): no copy, the sink reads the
// producer's pool); otherwise a copy into a buffer of its own pool.
std::unique_ptr<Relay> make_fbuf_relay(const EndConfig& c, const std::string& upstream,
                                       const std::string& downstream, bool forward);

// Thread handoff: both ends in this process, through Sender::connect_local()
// (volatile pools). The two ends share nothing but the channels.
Ends make_fbuf_local_pair(const EndConfig& c);

// --- pipe and Unix socket (stream_ends.cc) --------------------------------

// `socket`: data and replies travel over one SOCK_STREAM socket (`data_fd`
// == `reply_fd`); otherwise over two pipes. The descriptors stay open until
// the process exits. Readers poll non-blocking for `spin`, then poll(); with
// no spin they block in read().
std::unique_ptr<ProducerEnd> make_stream_producer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket);
std::unique_ptr<ConsumerEnd> make_stream_consumer(const EndConfig& c, int data_fd, int reply_fd,
                                                  bool socket);

// --- Boost.Interprocess message_queue (mq_ends.cc) ------------------------

// Creates the data queue (`depth` messages of `size` bytes) and the reply
// queue under `name`+"-d" / "-r", and removes them on destruction.
class MqQueues {
 public:
  MqQueues(const std::string& name, std::size_t size, std::uint32_t depth);
  ~MqQueues();
  MqQueues(const MqQueues&) = delete;
  MqQueues& operator=(const MqQueues&) = delete;

 private:
  std::string name_;
};
std::unique_ptr<ProducerEnd> make_mq_producer(const EndConfig& c, const std::string& name);
std::unique_ptr<ConsumerEnd> make_mq_consumer(const EndConfig& c, const std::string& name);

// --- Eclipse iceoryx (iox_ends.cc) ----------------------------------------

// False when peer_bench was built without iceoryx (CMake found no
// iceoryx_posh); the other calls then throw.
bool iceoryx_compiled() noexcept;
const char* iceoryx_version() noexcept;
// Registers this process with RouDi under `name` (unique per process).
void iceoryx_init_runtime(const std::string& name);
// Publish/subscribe on {"PeerBench", instance, "data"} and a reply topic.
std::unique_ptr<ProducerEnd> make_iox_producer(const EndConfig& c, const std::string& instance);
// `data_instance`, if not empty, is the instance the data comes from (a
// path cell's relay); the replies go to `instance`'s reply topic.
std::unique_ptr<ConsumerEnd> make_iox_consumer(const EndConfig& c, const std::string& instance,
                                               const std::string& data_instance = "");
// Takes each sample of `upstream`'s data topic, loans a chunk on
// `downstream`'s, copies the payload and publishes it (an iceoryx sample
// cannot be published again), then releases the one it took.
std::unique_ptr<Relay> make_iox_relay(const EndConfig& c, const std::string& upstream,
                                      const std::string& downstream);
// The bytes iceoryx puts in front of a user payload of `size` bytes in
// its chunk (the chunk header and alignment), for sizing the mempools.
std::size_t iceoryx_chunk_overhead(std::size_t size) noexcept;

// --- the bare descriptor ring floor (ring_ends.cc) -------------------------

// A memfd holding two channels (data, reply), each a send ring and a
// return ring of fbuf's detail::Descriptor plus its buffers. Created by the
// orchestrator; both ends map it.
int create_ring_region(const EndConfig& c);  // returns an owned fd
std::unique_ptr<ProducerEnd> make_ring_producer(const EndConfig& c, int region_fd);
std::unique_ptr<ConsumerEnd> make_ring_consumer(const EndConfig& c, int region_fd);

}  // namespace fbuf::bench::peers

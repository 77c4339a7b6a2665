#include "catalog.h"

#include <algorithm>
#include <stdexcept>

namespace fbuf::bench::peers {

const std::vector<PeerInfo>& catalog() {
  static const std::vector<PeerInfo> all = {
      {Peer::kFbufVolatile, Family::kFbuf, "fbuf-volatile", "fbuf volatile", 0, true, 0, false},
      {Peer::kFbufVolatileFd, Family::kFbuf, "fbuf-volatile-fd", "fbuf volatile, epoll on fd", 0, true, 0, false},
      {Peer::kFbufReadOnly, Family::kFbuf, "fbuf-read_only", "fbuf read_only", 0, true, 1, false},
      {Peer::kFbufCopyOnWrite, Family::kFbuf, "fbuf-copy_on_write", "fbuf copy_on_write", 0, true, 2, false},
      {Peer::kFbufThread, Family::kFbufThread, "fbuf-thread", "fbuf thread handoff", 0, false, -1, false},
      {Peer::kIceoryx, Family::kIceoryx, "iceoryx", "iceoryx", 0, true, -1, false},
      {Peer::kMessageQueue, Family::kMessageQueue, "mq", "message_queue", 2, true, -1, false},
      {Peer::kUnix, Family::kUnix, "unix", "unix socket", 2, true, -1, false},
      {Peer::kPipe, Family::kPipe, "pipe", "pipe", 2, true, -1, false},
      {Peer::kUnixBlock, Family::kUnix, "unix-block", "unix socket, blocking", 2, true, -1, true},
      {Peer::kPipeBlock, Family::kPipe, "pipe-block", "pipe, blocking", 2, true, -1, true},
      {Peer::kRing, Family::kRing, "ring", "ring floor", 0, true, -1, false},
      {Peer::kPathFbuf, Family::kPathFbuf, "path-fbuf", "path: fbuf, forwarded", 0, true, 0, false},
      {Peer::kPathFbufCopy, Family::kPathFbuf, "path-fbuf-copy", "path: fbuf, copied", 1, true, 0, false},
      {Peer::kPathIceoryx, Family::kPathIceoryx, "path-iceoryx", "path: iceoryx", 1, true, -1, false},
      {Peer::kMemcpy, Family::kMemcpy, "memcpy", "memcpy", 1, false, -1, false},
  };
  return all;
}

const PeerInfo& info(Peer p) { return catalog()[static_cast<std::size_t>(p)]; }

bool is_path(Peer p) noexcept {
  return p == Peer::kPathFbuf || p == Peer::kPathFbufCopy || p == Peer::kPathIceoryx;
}

std::optional<Peer> parse_peer(std::string_view key) {
  for (const PeerInfo& i : catalog()) {
    if (key == i.key) return i.peer;
  }
  // Short forms.
  if (key == "fbuf-ro" || key == "fbuf-read-only") return Peer::kFbufReadOnly;
  if (key == "fbuf-cow" || key == "fbuf-copy-on-write") return Peer::kFbufCopyOnWrite;
  if (key == "message_queue" || key == "boost") return Peer::kMessageQueue;
  if (key == "iox") return Peer::kIceoryx;
  return std::nullopt;
}

std::optional<std::vector<Peer>> parse_peers(std::string_view list) {
  std::vector<Peer> out;
  auto add = [&](Peer p) {
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  };
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    if (item == "fbuf") {
      add(Peer::kFbufVolatile);
      add(Peer::kFbufReadOnly);
      add(Peer::kFbufCopyOnWrite);
      add(Peer::kFbufThread);
    } else if (item == "streams") {
      for (Peer p : {Peer::kUnix, Peer::kPipe, Peer::kUnixBlock, Peer::kPipeBlock}) add(p);
    } else if (item == "path") {
      for (Peer p : {Peer::kFbufVolatile, Peer::kPathFbuf, Peer::kPathFbufCopy, Peer::kPathIceoryx}) add(p);
    } else if (item == "all") {
      for (const PeerInfo& i : catalog()) add(i.peer);
    } else if (auto p = parse_peer(item)) {
      add(*p);
    } else {
      return std::nullopt;
    }
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  // Run (and show) in catalog order, whatever order they were given in.
  std::sort(out.begin(), out.end());
  return out;
}

bool ProducerEnd::send(std::uint64_t seq, std::uint64_t flags) {
  if (data_->send(seq, flags)) return true;
  error_ = data_->error();
  return false;
}

bool ProducerEnd::wait_reply(std::uint64_t seq) {
  Consumed r;
  if (!replies_->next(r)) {
    error_ = "reply: " + replies_->error();
    return false;
  }
  if (r.header.seq == seq && r.data_ok) return true;
  error_ = "reply to " + std::to_string(r.header.seq) + ", expected " + std::to_string(seq);
  return false;
}

bool ConsumerEnd::next(Consumed& out) {
  if (data_->next(out)) return true;
  error_ = data_->error();
  return false;
}

bool ConsumerEnd::reply(std::uint64_t seq) {
  if (replies_->send(seq, 0)) return true;
  error_ = "reply: " + replies_->error();
  return false;
}

Ends make_ends(Peer p, Side side, EndConfig c, const std::string& name) {
  const PeerInfo& i = info(p);
  if (i.blocking) c.spin = std::chrono::nanoseconds(0);
  if ((side == Side::kBoth) != (i.family == Family::kFbufThread)) {
    throw std::logic_error(std::string(i.key) + ": no such end");
  }
  const bool producer = side == Side::kProducer;
  Ends e;
  switch (i.family) {
    case Family::kFbuf:
      if (producer) e.producer = make_fbuf_producer(c, name, i.fbuf_policy);
      else e.consumer = make_fbuf_consumer(c, name, i.fbuf_policy, p == Peer::kFbufVolatileFd);
      break;
    case Family::kFbufThread:
      e = make_fbuf_local_pair(c);
      break;
    case Family::kIceoryx:
      iceoryx_init_runtime(name + (producer ? "-p" : "-c"));
      if (producer) e.producer = make_iox_producer(c, name);
      else e.consumer = make_iox_consumer(c, name);
      break;
    case Family::kMessageQueue:
      if (producer) e.producer = make_mq_producer(c, name);
      else e.consumer = make_mq_consumer(c, name);
      break;
    case Family::kUnix:
    case Family::kPipe: {
      const bool socket = i.family == Family::kUnix;
      const int reply_fd = socket ? kDataFd : kReplyFd;
      if (producer) e.producer = make_stream_producer(c, kDataFd, reply_fd, socket);
      else e.consumer = make_stream_consumer(c, kDataFd, reply_fd, socket);
      break;
    }
    case Family::kRing:
      if (producer) e.producer = make_ring_producer(c, kDataFd);
      else e.consumer = make_ring_consumer(c, kDataFd);
      break;
    case Family::kPathFbuf:
      // The producer is fbuf-volatile's; the consumer takes from the
      // relay's service and replies to the producer directly.
      if (producer) e.producer = make_fbuf_producer(c, name, i.fbuf_policy);
      else e.consumer = make_fbuf_consumer(c, name, i.fbuf_policy, false, relay_service(name));
      break;
    case Family::kPathIceoryx:
      iceoryx_init_runtime(name + (producer ? "-p" : "-c"));
      if (producer) e.producer = make_iox_producer(c, name);
      else e.consumer = make_iox_consumer(c, name, relay_service(name));
      break;
    case Family::kMemcpy:
      throw std::logic_error("memcpy has no ends");
  }
  return e;
}

std::unique_ptr<Relay> make_relay(Peer p, const EndConfig& c, const std::string& name) {
  switch (p) {
    case Peer::kPathFbuf: return make_fbuf_relay(c, name, relay_service(name), true);
    case Peer::kPathFbufCopy: return make_fbuf_relay(c, name, relay_service(name), false);
    case Peer::kPathIceoryx:
      iceoryx_init_runtime(name + "-m");
      return make_iox_relay(c, name, relay_service(name));
    default: throw std::logic_error(std::string(info(p).key) + " has no relay");
  }
}

}  // namespace fbuf::bench::peers

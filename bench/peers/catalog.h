// The transports peer_bench measures: their names on the command line and
// in the output, what each does to a message, and the factory that builds
// their ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ends.h"

namespace fbuf::bench::peers {

enum class Peer : std::uint8_t {
  kFbufVolatile,
  // fbuf volatile whose consumer waits in epoll on the Receiver's
  // readiness fd (fd(), arm()) instead of in receive(): the cost of the fd.
  kFbufVolatileFd,
  kFbufReadOnly,
  kFbufCopyOnWrite,
  kFbufThread,
  kIceoryx,
  kMessageQueue,
  kUnix,
  kPipe,
  kUnixBlock,
  kPipeBlock,
  kRing,
  // Three processes in a line: producer -> relay -> consumer. The relay
  // forwards each received View without a copy (path-fbuf), copies it
  // into a buffer of its own pool (path-fbuf-copy), or takes an iceoryx
  // sample and publishes a copy (path-iceoryx: a sample cannot be
  // re-published). Replies go straight back to the producer.
  kPathFbuf,
  kPathFbufCopy,
  kPathIceoryx,
  kMemcpy,
};

// What builds a transport's ends; the variants of one family differ only in
// their settings.
enum class Family : std::uint8_t {
  kFbuf, kFbufThread, kIceoryx, kMessageQueue, kUnix, kPipe, kRing, kPathFbuf, kPathIceoryx, kMemcpy
};

struct PeerInfo {
  Peer peer;
  Family family;
  const char* key;    // --only and CSV name
  const char* label;  // table and plot name
  // Copies of the payload the transport itself makes per message (0 for
  // zero-copy; a pipe copies into the kernel and out again).
  int copies;
  // Producer and consumer in two processes (else: threads of one process,
  // or one thread for memcpy).
  bool cross_process;
  // The fbuf::Policy value for the fbuf process transports, else -1.
  int fbuf_policy;
  // Readers block in read() at once instead of polling for --spin-us first
  // (pipe-block, unix-block: a plain pipe and socket).
  bool blocking;
};

// Every transport, in the order of the tables (and of the run).
const std::vector<PeerInfo>& catalog();
const PeerInfo& info(Peer p);

// "fbuf" (all four fbuf transports), "streams" (pipe and unix socket, polling
// and blocking), "path" (the three path cells and fbuf-volatile, the
// two-process line they are compared with), "fbuf-volatile", "pipe", ...
// separated by commas. nullopt on an unknown name.
std::optional<std::vector<Peer>> parse_peers(std::string_view list);
std::optional<Peer> parse_peer(std::string_view key);

// Messages in flight per transport, the same at every size (so that a
// comparison across sizes changes nothing but the size): pool buffers for
// fbuf and the ring floor, queue slots for message_queue and the iceoryx
// subscriber. 16 x 16 MiB = 256 MiB per pool at the largest size.
inline constexpr std::uint32_t kDefaultDepth = 16;

// True for the three-process path cells, whose middle process is a relay.
bool is_path(Peer p) noexcept;

// Which ends of a transport one process builds: the producer's, the
// consumer's, or both (the thread handoff, whose ends are two threads).
enum class Side : std::uint8_t { kProducer, kConsumer, kBoth };
// Builds the `side` end(s) of `p` for one cell. `name` is unique to the cell
// (fbuf service, queue names, iceoryx instance); pipe, socket and ring
// descriptors are at kDataFd and kReplyFd. Throws on failure.
Ends make_ends(Peer p, Side side, EndConfig c, const std::string& name);
// The middle process of a path cell `p`: takes from the producer's `name`
// and passes on to the consumer's.
std::unique_ptr<Relay> make_relay(Peer p, const EndConfig& c, const std::string& name);

}  // namespace fbuf::bench::peers

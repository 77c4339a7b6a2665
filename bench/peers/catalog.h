// The transports peer_bench measures: their names on the command line and
// in the output, and what each does to a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace fbuf::bench::peers {

enum class Peer : std::uint8_t {
  kFbufVolatile,
  kFbufReadOnly,
  kFbufCopyOnWrite,
  kFbufThread,
  kIceoryx,
  kMessageQueue,
  kUnix,
  kPipe,
  kRing,
  kMemcpy,
};

struct PeerInfo {
  Peer peer;
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
};

// Every transport, in the order of the tables (and of the run).
const std::vector<PeerInfo>& catalog();
const PeerInfo& info(Peer p);

// "fbuf" (all four fbuf transports), "fbuf-volatile", "pipe", ... separated
// by commas. nullopt on an unknown name.
std::optional<std::vector<Peer>> parse_peers(std::string_view list);
std::optional<Peer> parse_peer(std::string_view key);

// Messages in flight per transport, the same at every size (so that a
// comparison across sizes changes nothing but the size): pool buffers for
// fbuf and the ring floor, queue slots for message_queue and the iceoryx
// subscriber. 16 x 16 MiB = 256 MiB per pool at the largest size.
inline constexpr std::uint32_t kDefaultDepth = 16;
std::uint32_t depth_for(std::size_t size) noexcept;

}  // namespace fbuf::bench::peers

#include "catalog.h"

#include <algorithm>

namespace fbuf::bench::peers {

const std::vector<PeerInfo>& catalog() {
  static const std::vector<PeerInfo> all = {
      {Peer::kFbufVolatile, "fbuf-volatile", "fbuf volatile", 0, true, 0},
      {Peer::kFbufReadOnly, "fbuf-read_only", "fbuf read_only", 0, true, 1},
      {Peer::kFbufCopyOnWrite, "fbuf-copy_on_write", "fbuf copy_on_write", 0, true, 2},
      {Peer::kFbufThread, "fbuf-thread", "fbuf thread handoff", 0, false, -1},
      {Peer::kIceoryx, "iceoryx", "iceoryx", 0, true, -1},
      {Peer::kMessageQueue, "mq", "message_queue", 2, true, -1},
      {Peer::kUnix, "unix", "unix socket", 2, true, -1},
      {Peer::kPipe, "pipe", "pipe", 2, true, -1},
      {Peer::kRing, "ring", "ring floor", 0, true, -1},
      {Peer::kMemcpy, "memcpy", "memcpy", 1, false, -1},
  };
  return all;
}

const PeerInfo& info(Peer p) { return catalog()[static_cast<std::size_t>(p)]; }

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

std::uint32_t depth_for(std::size_t) noexcept { return kDefaultDepth; }

}  // namespace fbuf::bench::peers

// The C API's counters: what SenderStats, ReceiverStats and PoolStats
// report, in structs that callers size for forward compatibility.
#include "fbuf/uf.h"

#include <cstddef>
#include <cstring>

#include "capi/errors.h"
#include "capi/handles.h"

using namespace fbuf::capi;

namespace {

// Fills as much of the caller's struct as it has room for (its `size`),
// zeroes what this version does not know, and keeps `size`.
template <class S>
uf_error copy_out(const S& full, S* out, std::size_t min_size) noexcept {
  const std::size_t size = out->size;
  if (size < min_size) return UF_EINVAL;
  const std::size_t n = size < sizeof(S) ? size : sizeof(S);
  std::memcpy(reinterpret_cast<unsigned char*>(out) + sizeof(std::size_t),
              reinterpret_cast<const unsigned char*>(&full) + sizeof(std::size_t), n - sizeof(std::size_t));
  if (size > sizeof(S)) std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(S), 0, size - sizeof(S));
  return UF_OK;
}

// The sizes of the first versions of the stats structs: callers compiled
// against them must keep working when fields are appended.
// uf_pool_stats grew the sealed copies' counters.
constexpr std::size_t kPoolStatsV1 = offsetof(struct uf_pool_stats, sealed_copies);
constexpr std::size_t kSenderStatsV1 = sizeof(struct uf_sender_stats);
// uf_receiver_stats grew rejected_messages (aggregates).
constexpr std::size_t kReceiverStatsV1 = offsetof(struct uf_receiver_stats, rejected_messages);

// One line per field SenderStats has. SenderStats does not count dropped
// buffers or cut-off receivers (yet): those read 0 until it does.
void fill_sender_stats(const fbuf::SenderStats& s, struct uf_sender_stats& out) noexcept {
  out.sent = s.sent;
  out.delivered = s.delivered;
  out.returned = s.returned;
  out.rejected_returns = s.rejected_returns;
  out.rejected_handshakes = s.rejected_handshakes;
  out.receivers_connected = s.receivers_connected;
  out.receivers_lost = s.receivers_lost;
  out.dropped = s.dropped;
  out.receivers_cut_off = s.receivers_cut_off;
}

void fill_receiver_stats(const fbuf::ReceiverStats& s, struct uf_receiver_stats& out) noexcept {
  out.received = s.received;
  out.returned = s.returned;
  out.rejected_descriptors = s.rejected_descriptors;
  out.dropped = s.dropped;
  out.rejected_messages = s.rejected_messages;
}

}  // namespace

extern "C" {

uf_error uf_pool_stats(const uf_pool* pool, struct uf_pool_stats* out) {
  if (live(pool) == nullptr || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    const fbuf::PoolStats s = pool->pool->stats();
    struct uf_pool_stats full{};
    full.total = s.total;
    full.free = s.free;
    full.allocated = s.allocated;
    full.in_flight = s.in_flight;
    full.rejected_returns = s.rejected_returns;
    full.sealed_copies = s.sealed_copies;
    full.sealed_fallbacks = s.sealed_fallbacks;
    full.sealed_total = s.sealed_total;
    full.sealed_free = s.sealed_free;
    full.sealed_in_flight = s.sealed_in_flight;
    return copy_out(full, out, kPoolStatsV1);
  });
}

uf_error uf_sender_stats(const uf_channel* sender, struct uf_sender_stats* out) {
  if (live(sender) == nullptr || !sender->sender || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    struct uf_sender_stats full{};
    fill_sender_stats(sender->sender->stats(), full);
    return copy_out(full, out, kSenderStatsV1);
  });
}

uf_error uf_receiver_stats(const uf_channel* receiver, struct uf_receiver_stats* out) {
  if (live(receiver) == nullptr || !receiver->receiver || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    struct uf_receiver_stats full{};
    fill_receiver_stats(receiver->receiver.stats(), full);
    return copy_out(full, out, kReceiverStatsV1);
  });
}

}  // extern "C"

// fbuf::bridge: carries one fbuf service between hosts over UCX (library
// fbuf_bridge; docs/design.md, "The bridge"). An Exporter on the producing
// host receives from a local service and sends each View straight from the
// pool's read-only mapping; an Importer on the consuming host allocates each
// arriving buffer from a pool of its own, lets UCX place the bytes there, and
// publishes it as a local service. Each runs one thread that drives UCX.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fbuf/pool.h"

namespace fbuf::bridge {

// What an exporter does when its importer has no credit left.
enum class Overflow : std::uint8_t {
  kBackPressure = 0,  // take nothing more from the local service (it sees a slow consumer)
  kDropOldest = 1,    // keep taking; hold at most `drop_queue` views, dropping the oldest (counted)
};

struct ExporterOptions {
  std::string service;                  // the local service to forward
  std::string listen_address = "127.0.0.1";
  std::uint16_t port = 0;               // 0: any; port() tells which
  Overflow overflow = Overflow::kBackPressure;
  std::uint32_t drop_queue = 64;        // kDropOldest: views held while out of credit
  // How long to wait for the local service between tries.
  std::chrono::milliseconds retry = std::chrono::milliseconds(200);
};

struct ExporterStats {
  std::uint64_t sent = 0;              // buffers whose send completed
  std::uint64_t bytes = 0;
  std::uint64_t send_failed = 0;       // sends that failed with the link (not delivered)
  std::uint64_t dropped_oldest = 0;    // kDropOldest
  std::uint64_t too_large = 0;         // views larger than the importer's buffers (dropped, counted)
  std::uint64_t connections = 0;       // importers accepted
  std::uint64_t rejected = 0;          // importers cut off for bad input or refused
  std::uint64_t links_lost = 0;        // importers gone (link error, peer died)
  std::uint64_t in_flight = 0;         // views held until UCX completes their send
  bool registered = false;             // the pool's mapping is registered with UCX
};

class Exporter {
 public:
  // Starts listening and the bridge thread. Throws Error when UCX or the
  // listener cannot be set up.
  explicit Exporter(ExporterOptions options);
  ~Exporter();  // stops the thread; every view held is released
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Stops the bridge thread and releases every view held (the destructor
  // does it too); stats() are final afterwards. Idempotent.
  void stop() noexcept;

  std::uint16_t port() const noexcept;
  ExporterStats stats() const noexcept;
  // The last reason an importer was cut off ("" if none).
  std::string last_error() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct ImporterOptions {
  std::string service;          // the remote service (the exporter's local one)
  std::string local_service;    // published here; "" means `service`
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  // The importer's own pool: one class, so every credit fits any message.
  std::size_t buffer_size = 1 << 20;
  std::uint32_t buffers = 64;
  Policy policy = Policy::kVolatile;
  // Grant credits only once this many local consumers are connected.
  std::uint32_t wait_consumers = 0;
  // Reconnection backoff after a lost link: doubles from min to max.
  std::chrono::milliseconds backoff_min = std::chrono::milliseconds(100);
  std::chrono::milliseconds backoff_max = std::chrono::milliseconds(3000);
};

struct ImporterStats {
  std::uint64_t received = 0;          // buffers published
  std::uint64_t bytes = 0;
  std::uint64_t eager = 0;             // of them, copied from UCX's eager payload
  std::uint64_t rendezvous = 0;        // of them, received by UCX straight into the pool
  std::uint64_t no_consumer = 0;       // received with no local consumer (counted, dropped)
  std::uint64_t receive_failed = 0;    // rendezvous receives the link broke
  std::uint64_t rejected = 0;          // exporters cut off for bad input
  std::uint64_t links_lost = 0;        // gaps: the stream resumes after a reconnect
  std::uint64_t connections = 0;       // successful Hellos sent
  bool ended = false;                  // the exporter said its stream ended
};

class Importer {
 public:
  // Creates the pool and the local service, starts the bridge thread,
  // which connects (and reconnects) to the exporter. Throws Error.
  explicit Importer(ImporterOptions options);
  ~Importer();  // ends the local stream
  Importer(const Importer&) = delete;
  Importer& operator=(const Importer&) = delete;

  // Stops the bridge thread, gives back every buffer in flight and ends
  // the local stream (the destructor does it too); stats() are final
  // afterwards. Idempotent.
  void stop() noexcept;

  ImporterStats stats() const noexcept;
  std::string last_error() const;
  Pool pool() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fbuf::bridge

// fbuf-bridge: carries an fbuf service between hosts over UCX.
//
//   fbuf-bridge export SERVICE [--listen ADDR:PORT] [--drop-oldest N]
//   fbuf-bridge import SERVICE --connect HOST:PORT [--as LOCAL] [--buffer-size B]
//               [--buffers N] [--policy volatile|read-only|copy-on-write] [--wait-consumers K]
//
// Each prints one line when it is ready ("exporting ... on ADDR:PORT",
// "importing ... as LOCAL") and, on SIGINT/SIGTERM (or, for import, when
// the exporter's stream ended), its counters as key=value words. Exit
// status: 0 done, 1 a setup error, CLI11's codes (above 100) for bad usage.
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "fbuf/bridge.h"
#include "fbuf/error.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }  // relaxed: a flag polled alone

void split(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) throw CLI::ValidationError("ADDR:PORT", "expected ADDR:PORT, got " + text);
  host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long p = std::stoul(text.substr(colon + 1));
  if (p > 65535) throw CLI::ValidationError("ADDR:PORT", "port out of range: " + text);
  port = static_cast<std::uint16_t>(p);
}

// This process's CPU seconds (user + system), for the benchmark.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void print_export(const fbuf::bridge::ExporterStats& s) {
  fmt::print("sent={} bytes={} send_failed={} dropped_oldest={} too_large={} connections={} "
             "rejected={} links_lost={} in_flight={} registered={} cpu_s={:.3f}\n",
             s.sent, s.bytes, s.send_failed, s.dropped_oldest, s.too_large, s.connections, s.rejected,
             s.links_lost, s.in_flight, s.registered ? 1 : 0, cpu_seconds());
}

void print_import(const fbuf::bridge::ImporterStats& s, const fbuf::PoolStats& p) {
  fmt::print("received={} bytes={} eager={} rendezvous={} no_consumer={} receive_failed={} "
             "rejected={} links_lost={} connections={} ended={} pool_total={} pool_free={} pool_allocated={} pool_in_flight={} cpu_s={:.3f}\n",
             s.received, s.bytes, s.eager, s.rendezvous, s.no_consumer, s.receive_failed, s.rejected,
             s.links_lost, s.connections, s.ended ? 1 : 0, p.total, p.free, p.allocated, p.in_flight, cpu_seconds());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fbuf-bridge: carries an fbuf service between hosts over UCX"};
  app.require_subcommand(1);

  std::string ex_service, ex_listen = "127.0.0.1:0";
  std::uint32_t drop_oldest = 0;
  auto* ex = app.add_subcommand("export", "forward a local service to one importer");
  ex->add_option("SERVICE", ex_service, "the local service")->required();
  ex->add_option("--listen", ex_listen, "ADDR:PORT to listen on (default 127.0.0.1:0, any port)");
  ex->add_option("--drop-oldest", drop_oldest,
                 "out of credit: keep taking, hold at most N views, drop the oldest (default: back-pressure)")
      ->check(CLI::Range(1u, 1u << 20));

  std::string im_service, im_connect, im_as, im_policy = "volatile";
  std::size_t buffer_size = 1 << 20;
  std::uint32_t buffers = 64, wait_consumers = 0;
  auto* im = app.add_subcommand("import", "republish a remote service locally");
  im->add_option("SERVICE", im_service, "the service the exporter forwards")->required();
  im->add_option("--connect", im_connect, "HOST:PORT of the exporter")->required();
  im->add_option("--as", im_as, "the local service name (default SERVICE)");
  im->add_option("--buffer-size", buffer_size, "the importer's buffer size (largest message)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  im->add_option("--buffers", buffers, "buffers in the importer's pool (credits)")->check(CLI::Range(1u, 65536u));
  im->add_option("--policy", im_policy, "volatile | read-only | copy-on-write")
      ->check(CLI::IsMember({"volatile", "read-only", "copy-on-write"}));
  im->add_option("--wait-consumers", wait_consumers, "grant no credit before K local consumers")
      ->check(CLI::Range(0u, 64u));

  CLI11_PARSE(app, argc, argv);
  // A restarted exporter listens on its port again at once, while the
  // connections of the one it replaces linger in TIME_WAIT; the user's
  // environment may say otherwise. Set before UCX or any thread starts.
  ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  try {
    if (*ex) {
      fbuf::bridge::ExporterOptions o;
      o.service = ex_service;
      split(ex_listen, o.listen_address, o.port);
      if (drop_oldest > 0) {
        o.overflow = fbuf::bridge::Overflow::kDropOldest;
        o.drop_queue = drop_oldest;
      }
      fbuf::bridge::Exporter bridge(o);
      fmt::print("exporting {} on {}:{}\n", o.service, o.listen_address, bridge.port());
      std::fflush(stdout);
      while (!g_stop.load(std::memory_order_relaxed)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      bridge.stop();
      print_export(bridge.stats());
      return 0;
    }
    fbuf::bridge::ImporterOptions o;
    o.service = im_service;
    o.local_service = im_as;
    split(im_connect, o.host, o.port);
    o.buffer_size = buffer_size;
    o.buffers = buffers;
    o.policy = im_policy == "read-only"       ? fbuf::Policy::kReadOnly
               : im_policy == "copy-on-write" ? fbuf::Policy::kCopyOnWrite
                                              : fbuf::Policy::kVolatile;
    o.wait_consumers = wait_consumers;
    fbuf::bridge::Importer bridge(o);
    fmt::print("importing {} from {}:{} as {}\n", o.service, o.host, o.port,
               o.local_service.empty() ? o.service : o.local_service);
    std::fflush(stdout);
    while (!g_stop.load(std::memory_order_relaxed) && !bridge.stats().ended) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Stop the bridge (buffers in flight come back), then wait (bounded)
    // for local consumers to give every buffer back.
    bridge.stop();
    for (int i = 0; i < 250; ++i) {
      auto p = bridge.pool().stats();
      if (p.free == p.total) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    print_import(bridge.stats(), bridge.pool().stats());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fbuf-bridge: %s\n", e.what());
    return 1;
  }
}

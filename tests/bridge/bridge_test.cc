// The UCX bridge end to end over loopback: a producer process -> fbuf-bridge
// export -> fbuf-bridge import -> consumers, with real processes; kill -9 of
// either bridge; and a hostile UCX peer against the exporter.
//
// FBUF_BRIDGE_COUNT (default 3000) sets the frames of the stream test and
// FBUF_BRIDGE_ROUNDS (default 2) the kill rounds; the stress variants are
// these binaries run by hand with larger values (docs/testing.md).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <optional>
#include <thread>
#include <vector>

#include "bridge/wire.h"
#include "child_process.h"
#include "fbuf/bridge.h"
#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using fbuf::testing::Child;
using fbuf::testing::field;
using fbuf::testing::unique_service;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

// A port of its own for each test of each run (tests run in parallel).
std::uint16_t test_port(int which) {
  return static_cast<std::uint16_t>(30000 + (::getpid() % 3000) * 8 + which);
}

Child start_export(const std::string& service, std::uint16_t port) {
  Child c(FBUF_BRIDGE_PROGRAM, {"export", service, "--listen", "127.0.0.1:" + std::to_string(port)});
  EXPECT_TRUE(c.wait_for_output("exporting", 20s)) << c.output();
  return c;
}

Child start_import(const std::string& service, const std::string& local, std::uint16_t port,
                   int consumers) {
  Child c(FBUF_BRIDGE_PROGRAM, {"import", service, "--connect", "127.0.0.1:" + std::to_string(port), "--as",
                                local, "--buffers", "32", "--buffer-size", "1048576", "--wait-consumers",
                                std::to_string(consumers)});
  EXPECT_TRUE(c.wait_for_output("importing", 20s)) << c.output();
  return c;
}

TEST(BridgeLoopback, MixedSizesReachTwoConsumersIntactAndInOrder) {
  const std::uint64_t n = env_number("FBUF_BRIDGE_COUNT", 3000);
  const std::string src = unique_service("bridge-src");
  const std::string dst = unique_service("bridge-dst");
  const std::uint16_t port = test_port(0);
  Child ex = start_export(src, port);
  Child im = start_import(src, dst, port, 2);
  Child c1(FBUF_IT_PEER, {"consume", "--service", dst, "--count", std::to_string(n), "--end", "1"});
  Child c2(FBUF_IT_PEER, {"consume", "--service", dst, "--count", std::to_string(n), "--end", "1"});
  ASSERT_TRUE(c1.wait_for_output("connected", 20s)) << c1.output();
  ASSERT_TRUE(c2.wait_for_output("connected", 20s)) << c2.output();
  Child pr(FBUF_IT_PEER, {"produce", "--service", src, "--count", std::to_string(n), "--receivers", "1",
                          "--classes", "mixed", "--then", "check"});
  auto sp = pr.wait(300s);
  auto s1 = c1.wait(300s);
  auto s2 = c2.wait(300s);
  auto si = im.wait(60s);  // ends by itself once the exporter's stream ended
  ex.kill(SIGINT);
  auto se = ex.wait(30s);
  ASSERT_TRUE(sp.exited_with(0)) << pr.output();
  ASSERT_TRUE(s1.exited_with(0)) << c1.output();
  ASSERT_TRUE(s2.exited_with(0)) << c2.output();
  ASSERT_TRUE(si.exited_with(0)) << im.output();
  ASSERT_TRUE(se.exited_with(0)) << ex.output();
  // The same frames, in the same order, everywhere.
  EXPECT_EQ(field(pr.output(), "checksum"), field(c1.output(), "checksum"));
  EXPECT_EQ(field(pr.output(), "checksum"), field(c2.output(), "checksum"));
  const std::string io = im.output();
  EXPECT_EQ(field(io, "received"), std::to_string(n)) << io;
  EXPECT_EQ(field(io, "no_consumer"), "0") << io;
  EXPECT_EQ(field(io, "rejected"), "0") << io;
  EXPECT_EQ(field(io, "ended"), "1") << io;
  EXPECT_EQ(field(io, "pool_free"), field(io, "pool_total")) << io;
  const std::string eo = ex.output();
  EXPECT_EQ(field(eo, "in_flight"), "0") << eo;
  EXPECT_EQ(field(eo, "registered"), "1") << eo;
  std::printf("importer: %s\n", io.c_str());
}

// Reads the frames of `fbuf_it_peer stream` from `rx`: the sequence number
// must grow (gaps allowed: a killed bridge loses what it held), every byte
// must be intact. Returns how many were good; `bad` describes a failure.
std::uint64_t drain(Receiver& rx, std::uint64_t& last, bool& any, std::string& bad,
                    std::chrono::milliseconds for_how_long) {
  std::uint64_t good = 0;
  const auto end = std::chrono::steady_clock::now() + for_how_long;
  while (std::chrono::steady_clock::now() < end) {
    auto v = rx.receive(50ms);
    if (!v) {
      if (v.error() == Errc::kTimedOut) continue;
      return good;  // kPeerGone: the importer went away; the caller reconnects
    }
    const auto* p = reinterpret_cast<const unsigned char*>(v->data());
    if (v->size() < 12 || std::memcmp(p, "FBUF", 4) != 0) {
      bad = "not a stream frame";
      return good;
    }
    std::uint64_t seq = 0;
    for (int i = 0; i < 8; ++i) seq |= std::uint64_t{p[4 + i]} << (8 * i);
    for (std::size_t i = 12; i < v->size(); ++i) {
      if (p[i] != static_cast<unsigned char>(i & 0xff)) {
        bad = "corrupt byte " + std::to_string(i) + " of frame " + std::to_string(seq);
        return good;
      }
    }
    if (any && seq <= last) {
      bad = "frame " + std::to_string(seq) + " after " + std::to_string(last);
      return good;
    }
    any = true;
    last = seq;
    ++good;
  }
  return good;
}

Receiver connect_retrying(const std::string& service) {
  for (int i = 0; i < 200; ++i) {
    try {
      return Receiver::connect(service, {.connect_timeout = 100ms});
    } catch (const Error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  return Receiver();
}

TEST(BridgeFailures, KilledBridgesResumeInOrderAndFreeEveryBuffer) {
  const std::uint64_t rounds = env_number("FBUF_BRIDGE_ROUNDS", 2);
  const std::string src = unique_service("bridge-ksrc");
  const std::string dst = unique_service("bridge-kdst");
  const std::uint16_t port = test_port(1);
  Child pr(FBUF_IT_PEER, {"stream", "--service", src, "--size", "70000", "--buffers", "16", "--hz", "0"});
  ASSERT_TRUE(pr.wait_for_output("listening", 20s)) << pr.output();
  std::optional<Child> ex(start_export(src, port));
  std::optional<Child> im(start_import(src, dst, port, 1));
  Receiver rx = connect_retrying(dst);
  ASSERT_TRUE(rx);
  std::uint64_t last = 0;
  bool any = false;
  std::string bad;
  std::uint64_t total = drain(rx, last, any, bad, 1000ms);
  ASSERT_EQ(bad, "");
  ASSERT_GT(total, 0u) << im->output() << ex->output();
  for (std::uint64_t r = 0; r < rounds; ++r) {
    // kill -9 of the exporter: the importer keeps its service and reconnects.
    ex->kill(SIGKILL);
    ex->wait(10s);
    ex.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + 37 * r));
    ex.emplace(start_export(src, port));
    std::uint64_t got = drain(rx, last, any, bad, 1500ms);
    ASSERT_EQ(bad, "") << "round " << r;
    ASSERT_GT(got, 0u) << "round " << r << ": nothing after the exporter restarted\n" << im->output();
    total += got;
    // kill -9 of the importer: its consumers see the end of the stream and
    // reconnect to the next one.
    im->kill(SIGKILL);
    im->wait(10s);
    im.reset();
    total += drain(rx, last, any, bad, 200ms);
    ASSERT_EQ(bad, "");
    im.emplace(start_import(src, dst, port, 1));
    rx = connect_retrying(dst);
    ASSERT_TRUE(rx);
    got = drain(rx, last, any, bad, 1500ms);
    ASSERT_EQ(bad, "") << "round " << r;
    ASSERT_GT(got, 0u) << "round " << r << ": nothing after the importer restarted\n" << im->output()
                       << ex->output();
    total += got;
  }
  rx = Receiver();
  // The exporter first, so that nothing more arrives while the importer
  // ends and shows its pool.
  ex->kill(SIGINT);
  auto se = ex->wait(30s);
  im->kill(SIGINT);
  auto si = im->wait(30s);
  EXPECT_TRUE(si.exited_with(0)) << im->output();
  EXPECT_EQ(field(im->output(), "pool_free"), field(im->output(), "pool_total")) << im->output();
  EXPECT_NE(field(im->output(), "links_lost"), std::nullopt);
  EXPECT_TRUE(se.exited_with(0)) << ex->output();
  EXPECT_EQ(field(ex->output(), "in_flight"), "0") << ex->output();
  std::printf("rounds=%llu frames=%llu\n", static_cast<unsigned long long>(rounds),
              static_cast<unsigned long long>(total));
}

// A raw UCX client that connects to an exporter and sends one message.
class RawClient {
 public:
  explicit RawClient(std::uint16_t port) {
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM;
    EXPECT_EQ(ucp_init(&params, nullptr, &context_), UCS_OK);
    ucp_worker_params_t wp{};
    EXPECT_EQ(ucp_worker_create(context_, &wp, &worker_), UCS_OK);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                   UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
    p.sockaddr.addrlen = sizeof sa;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    EXPECT_EQ(ucp_ep_create(worker_, &p, &ep_), UCS_OK);
  }
  ~RawClient() {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &p);
    if (UCS_PTR_IS_PTR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(req);
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  void send(const void* header, std::size_t header_length, const void* data, std::size_t length) {
    ucp_request_param_t p{};
    ucs_status_ptr_t req = ucp_am_send_nbx(ep_, bridge::kToExporter, header, header_length, data, length, &p);
    if (UCS_PTR_IS_PTR(req)) {
      const auto end = std::chrono::steady_clock::now() + 5s;
      while (ucp_request_check_status(req) == UCS_INPROGRESS && std::chrono::steady_clock::now() < end) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(req);
    }
  }
  void progress_for(std::chrono::milliseconds d) {
    const auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) ucp_worker_progress(worker_);
  }

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
};

bool wait_rejected(const bridge::Exporter& ex, std::uint64_t n, RawClient& c) {
  for (int i = 0; i < 400; ++i) {
    if (ex.stats().rejected >= n) return true;
    c.progress_for(10ms);
  }
  return false;
}

TEST(BridgeHostile, MalformedHeadersFromAnImporterAreRejectedAndCounted) {
  const std::string src = unique_service("bridge-hsrc");
  Pool pool(PoolOptions{.name = "hostile", .classes = {{4096, 8}}});
  Sender tx(pool, src);
  bridge::Exporter ex({.service = src, .port = 0});
  ASSERT_NE(ex.port(), 0);

  bridge::Header good;
  good.kind = static_cast<std::uint16_t>(bridge::Kind::kHello);
  good.length = 4096;
  good.credits = 4;
  struct Case {
    const char* what;
    bridge::Header header;
    std::size_t header_length;
    std::string data;
  };
  std::vector<Case> cases;
  cases.push_back({"short header", good, 16, src});
  auto h = good;
  h.magic = 0xdeadbeef;
  cases.push_back({"bad magic", h, bridge::kHeaderSize, src});
  h = good;
  h.version = 99;
  cases.push_back({"bad version", h, bridge::kHeaderSize, src});
  h = good;
  h.kind = static_cast<std::uint16_t>(bridge::Kind::kData);
  cases.push_back({"data sent to the exporter", h, bridge::kHeaderSize, src});
  h = good;
  h.kind = static_cast<std::uint16_t>(bridge::Kind::kCredit);
  cases.push_back({"credit before hello", h, bridge::kHeaderSize, ""});
  h = good;
  h.credits = bridge::kMaxCredits + 1;
  cases.push_back({"too many credits", h, bridge::kHeaderSize, src});
  h = good;
  cases.push_back({"another service", h, bridge::kHeaderSize, "not/" + src});
  h = good;
  h.flags = 1;
  cases.push_back({"unknown flags", h, bridge::kHeaderSize, src});
  h = good;
  cases.push_back({"hello without a name", h, bridge::kHeaderSize, ""});

  std::uint64_t n = 0;
  for (const Case& c : cases) {
    RawClient client(ex.port());
    client.send(&c.header, c.header_length, c.data.data(), c.data.size());
    ASSERT_TRUE(wait_rejected(ex, ++n, client)) << c.what << ": not rejected; " << ex.last_error();
  }
  EXPECT_EQ(ex.stats().rejected, cases.size());
  // A well-formed Hello after all that is served.
  RawClient client(ex.port());
  client.send(&good, bridge::kHeaderSize, src.data(), src.size());
  client.progress_for(200ms);
  EXPECT_EQ(ex.stats().rejected, cases.size()) << ex.last_error();
  EXPECT_EQ(pool.stats().free, pool.stats().total);
}

// A raw UCX listener playing a hostile exporter: it accepts each
// connection of an importer and sends it one message.
class RawServer {
 public:
  RawServer() {
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM;
    EXPECT_EQ(ucp_init(&params, nullptr, &context_), UCS_OK);
    ucp_worker_params_t wp{};
    EXPECT_EQ(ucp_worker_create(context_, &wp, &worker_), UCS_OK);
    // The importer's Hellos and Credits: taken and ignored.
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB;
    hp.id = bridge::kToExporter;
    hp.cb = [](void*, const void*, size_t, void*, size_t, const ucp_am_recv_param_t*) { return UCS_OK; };
    EXPECT_EQ(ucp_worker_set_am_recv_handler(worker_, &hp), UCS_OK);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
    lp.sockaddr.addrlen = sizeof sa;
    lp.conn_handler.cb = [](ucp_conn_request_h req, void* arg) { static_cast<RawServer*>(arg)->pending_ = req; };
    lp.conn_handler.arg = this;
    EXPECT_EQ(ucp_listener_create(worker_, &lp, &listener_), UCS_OK);
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    EXPECT_EQ(ucp_listener_query(listener_, &la), UCS_OK);
    port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);
  }
  ~RawServer() {
    close_ep();
    ucp_listener_destroy(listener_);
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  std::uint16_t port() const { return port_; }

  // Waits for the importer's next connection and sends it one message.
  bool accept_and_send(const void* header, std::size_t header_length, const void* data, std::size_t length) {
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (pending_ == nullptr && std::chrono::steady_clock::now() < end) ucp_worker_progress(worker_);
    if (pending_ == nullptr) return false;
    close_ep();
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.conn_request = pending_;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = [](void*, ucp_ep_h, ucs_status_t) {};
    pending_ = nullptr;
    if (ucp_ep_create(worker_, &p, &ep_) != UCS_OK) return false;
    ucp_request_param_t rp{};
    ucs_status_ptr_t req = ucp_am_send_nbx(ep_, bridge::kToImporter, header, header_length, data, length, &rp);
    if (UCS_PTR_IS_PTR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS && std::chrono::steady_clock::now() < end) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(req);
    }
    return true;
  }
  void progress_for(std::chrono::milliseconds d) {
    const auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) ucp_worker_progress(worker_);
  }

 private:
  void close_ep() {
    if (ep_ == nullptr) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &p);
    if (UCS_PTR_IS_PTR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(req);
    }
    ep_ = nullptr;
  }

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_listener_h listener_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  ucp_conn_request_h pending_ = nullptr;
  std::uint16_t port_ = 0;
};

TEST(BridgeHostile, MalformedDataFromAnExporterIsRejectedAndNothingIsPublished) {
  RawServer server;
  const std::string dst = unique_service("bridge-himp");
  bridge::Importer im({.service = "anything", .local_service = dst, .port = server.port(),
                       .buffer_size = 65536, .buffers = 4,
                       .backoff_min = 10ms, .backoff_max = 50ms});
  Receiver rx = Receiver::connect(dst);  // one consumer: the importer grants its 4 credits
  bridge::Header data;
  data.kind = static_cast<std::uint16_t>(bridge::Kind::kData);
  data.length = 100;
  std::vector<char> payload(200000, 'x');
  struct Case {
    const char* what;
    bridge::Header header;
    std::size_t header_length;
    std::size_t data_length;
  };
  std::vector<Case> cases;
  cases.push_back({"short header", data, 8, 100});
  auto h = data;
  h.sequence = 5;
  cases.push_back({"sequence out of order", h, bridge::kHeaderSize, 100});
  h = data;
  h.length = 101;
  cases.push_back({"length disagrees with the data", h, bridge::kHeaderSize, 100});
  h = data;
  h.length = 200000;
  cases.push_back({"larger than the importer's buffers", h, bridge::kHeaderSize, 200000});
  h = data;
  h.kind = static_cast<std::uint16_t>(bridge::Kind::kHello);
  cases.push_back({"a Hello sent to the importer", h, bridge::kHeaderSize, 100});
  h = data;
  h.magic = 0;
  cases.push_back({"bad magic", h, bridge::kHeaderSize, 100});
  h = data;
  h.credits = 7;
  cases.push_back({"credits in a data message", h, bridge::kHeaderSize, 100});
  std::uint64_t n = 0;
  for (const Case& c : cases) {
    ASSERT_TRUE(server.accept_and_send(&c.header, c.header_length, payload.data(), c.data_length)) << c.what;
    bool seen = false;
    for (int i = 0; i < 400 && !seen; ++i) {
      seen = im.stats().rejected > n;
      server.progress_for(10ms);
    }
    ASSERT_TRUE(seen) << c.what << ": not rejected; " << im.last_error();
    ++n;
  }
  EXPECT_EQ(im.stats().received, 0u);
  EXPECT_EQ(rx.try_receive().error(), Errc::kWouldBlock);
  // A well-formed message on the next connection is published.
  ASSERT_TRUE(server.accept_and_send(&data, bridge::kHeaderSize, payload.data(), 100));
  auto v = rx.receive(20s);
  ASSERT_TRUE(v) << v.error().message() << " " << im.last_error();
  EXPECT_EQ(v->size(), 100u);
  EXPECT_EQ(im.stats().rejected, cases.size());
  v->reset();
  auto p = im.pool().stats();
  EXPECT_EQ(p.free, p.total);
}

// Sends frames numbered from *seq until a send times out (back-pressure)
// or `limit` were sent; returns how many went.
std::uint64_t send_numbered(Sender& tx, std::uint64_t& seq, std::uint64_t limit) {
  std::uint64_t sent = 0;
  while (sent < limit) {
    auto b = tx.allocate(64, 200ms);
    if (!b) break;
    std::memcpy(b->data(), &seq, sizeof seq);
    if (tx.send(std::move(*b), 64, 200ms)) break;
    ++seq;
    ++sent;
  }
  return sent;
}

struct Chain {
  explicit Chain(bridge::Overflow overflow, int which)
      : src(unique_service(which == 0 ? "bridge-bp-src" : "bridge-do-src")),
        dst(unique_service(which == 0 ? "bridge-bp-dst" : "bridge-do-dst")),
        pool(PoolOptions{.name = "chain", .classes = {{4096, 1024}}}),
        tx(pool, src, {.ring_capacity = 64}),
        ex({.service = src, .port = 0, .overflow = overflow, .drop_queue = 4}),
        im({.service = src, .local_service = dst, .port = ex.port(), .buffer_size = 4096, .buffers = 4,
            .wait_consumers = 1}),
        rx(Receiver::connect(dst)) {}
  std::string src, dst;
  Pool pool;
  Sender tx;
  bridge::Exporter ex;
  bridge::Importer im;
  Receiver rx;
};

TEST(BridgeFlow, ASlowRemoteConsumerBackPressuresTheProducerWithBoundedMemory) {
  Chain c(bridge::Overflow::kBackPressure, 0);
  ASSERT_TRUE(c.tx.wait_for_receivers(1, 20s));
  // The consumer takes nothing: the producer must come to a stop once the
  // importer's 4 buffers, the exporter's credit and its 64-slot ring are full.
  std::uint64_t seq = 0;
  const std::uint64_t sent = send_numbered(c.tx, seq, 10000);
  EXPECT_LT(sent, 200u);
  EXPECT_LE(c.ex.stats().in_flight, 4u);
  auto p = c.im.pool().stats();
  EXPECT_EQ(p.free, 0u) << "the importer's pool is the consumer's to hold";
  // The consumer drains: everything arrives, in order, and the producer goes on.
  std::uint64_t next = 0;
  while (next < sent) {
    auto v = c.rx.receive(20s);
    ASSERT_TRUE(v) << v.error().message();
    std::uint64_t got = 0;
    std::memcpy(&got, v->data(), sizeof got);
    ASSERT_EQ(got, next);
    ++next;
  }
  EXPECT_EQ(c.ex.stats().dropped_oldest, 0u);
  EXPECT_EQ(c.im.stats().no_consumer, 0u);
}

TEST(BridgeFlow, DropOldestKeepsTheProducerGoingAndCountsWhatItDrops) {
  Chain c(bridge::Overflow::kDropOldest, 1);
  ASSERT_TRUE(c.tx.wait_for_receivers(1, 20s));
  std::uint64_t seq = 0;
  const std::uint64_t sent = send_numbered(c.tx, seq, 2000);
  EXPECT_EQ(sent, 2000u) << "the exporter keeps taking";
  // Let the exporter take the rest of its ring.
  for (int i = 0; i < 200 && c.ex.stats().dropped_oldest + 4 + 4 < sent; ++i) std::this_thread::sleep_for(10ms);
  const auto dropped = c.ex.stats().dropped_oldest;
  EXPECT_GT(dropped, 0u);
  // What arrives is in order, the newest included; every frame is either
  // received or counted as dropped (4 held at the exporter at most).
  std::uint64_t received = 0;
  std::uint64_t last = 0;
  bool any = false;
  for (;;) {
    auto v = c.rx.receive(any ? 1s : 20s);
    if (!v) break;
    std::uint64_t got = 0;
    std::memcpy(&got, v->data(), sizeof got);
    if (any) {
      ASSERT_GT(got, last);
    }
    last = got;
    any = true;
    ++received;
  }
  EXPECT_EQ(last, sent - 1);
  EXPECT_EQ(received + c.ex.stats().dropped_oldest, sent);
}

}  // namespace
}  // namespace fbuf

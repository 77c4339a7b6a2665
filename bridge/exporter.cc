// The exporting side of a bridge (docs/design.md, "The bridge").
//
// Threads: the constructor sets up UCX and the listener, then only the
// bridge thread touches UCX, the local Receiver and every member below
// "bridge thread only". stats() reads atomics (relaxed: each is a counter
// on its own, nothing is published through it); last_error_ is under a
// mutex.
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "bridge/ucx.h"
#include "bridge/wire.h"
#include "fbuf/base/assert.h"
#include "fbuf/base/fd.h"
#include "fbuf/bridge.h"
#include "fbuf/receiver.h"

namespace fbuf::bridge {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// The mapping of this process that contains `p` (from /proc/self/maps):
// the receiver's read-only mapping of the exporter's pool.
bool mapping_of(const void* p, std::uintptr_t& start, std::uintptr_t& end) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  auto addr = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::uintptr_t s = 0;
    std::uintptr_t e = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &s, &e) == 2 && s <= addr && addr < e) {
      start = s;
      end = e;
      return true;
    }
  }
  return false;
}

}  // namespace

struct Exporter::Impl {
  explicit Impl(ExporterOptions o) : options(std::move(o)) {}

  // One view lent to UCX until its send completes.
  struct Slot {
    Impl* impl = nullptr;
    View view;
    Header header;  // UCX may read the AM header until completion
    std::uint64_t connection = 0;
  };

  ExporterOptions options;
  ucp_listener_h listener = nullptr;
  std::uint16_t port = 0;
  detail::UniqueFd stop_fd;
  std::thread thread;

  std::atomic<std::uint64_t> sent{0}, bytes{0}, send_failed{0}, dropped_oldest{0}, too_large{0},
      connections{0}, rejected{0}, links_lost{0}, in_flight{0};
  std::atomic<bool> registered{false};
  mutable std::mutex error_mutex;
  std::string last_error;

  // --- bridge thread only ---
  Receiver rx;
  std::vector<ucp_conn_request_h> pending;
  ucp_ep_h ep = nullptr;
  std::uint64_t connection = 0;  // numbers connections, so a late error of an old one is ignored
  bool ep_failed = false;
  ExporterExpect expect;
  std::uint64_t max_length = 0;
  std::uint64_t sequence = 0;
  bool local_ended = false;  // the local stream ended; End sent or owed
  bool end_sent = false;
  std::deque<View> held;  // kDropOldest: views taken while out of credit
  std::vector<std::unique_ptr<Slot>> free_slots;
  ucp_mem_h memh = nullptr;
  std::uintptr_t reg_start = 0, reg_end = 0;
  bool reg_tried = false;

  void set_error(const std::string& e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    last_error = e;
  }

  static void on_conn_request(ucp_conn_request_h req, void* arg) {
    static_cast<Impl*>(arg)->pending.push_back(req);
  }
  static void on_ep_error(void* arg, ucp_ep_h failed, ucs_status_t) {
    auto* self = static_cast<Impl*>(arg);
    if (failed == self->ep) self->ep_failed = true;
  }
  static void on_send_done(void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    auto* slot = static_cast<Slot*>(user_data);
    slot->impl->finish(slot, status);
  }
  static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data,
                            size_t length, const ucp_am_recv_param_t* param) {
    static_cast<Impl*>(arg)->handle_am(header, header_length, data, length, param);
    return UCS_OK;  // the eager data is consumed (or refused) here
  }

  void finish(Slot* slot, ucs_status_t status) {
    if (status == UCS_OK) {
      sent.fetch_add(1, kRelaxed);
      bytes.fetch_add(slot->view.size(), kRelaxed);
    } else {
      send_failed.fetch_add(1, kRelaxed);
    }
    // Counted before the view goes back: a producer that sees the buffer
    // free and then asks for the counters must not find it in flight.
    in_flight.fetch_sub(1, kRelaxed);
    slot->view.reset();  // released only now: UCX is done reading it
    free_slots.emplace_back(slot);
  }

  void cut_off(const std::string& why) {
    rejected.fetch_add(1, kRelaxed);
    set_error(why);
    std::fprintf(stderr, "fbuf-bridge export: importer cut off: %s\n", why.c_str());
    drop_ep();
  }

  void drop_ep() {
    if (ep == nullptr) return;
    ucp_ep_h old = ep;
    ep = nullptr;
    worker.close(old);  // in-flight sends complete (with an error) inside
    expect = {};
    ep_failed = false;
  }

  void handle_am(const void* header, size_t header_length, void* data, size_t length,
                 const ucp_am_recv_param_t* param) {
    if (ep == nullptr) return;
    // A message from an endpoint other than the current importer (a
    // replaced one) is ignored; UCX names the sender only with a reply ep.
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0 && param->reply_ep != ep) return;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
      cut_off("importer sent a rendezvous message");
      return;
    }
    Header h;
    Reject r = decode_at_exporter({static_cast<const std::byte*>(header), header_length}, length,
                                  expect, h);
    if (r != Reject::kNone) {
      cut_off(std::string("bad header from importer: ") + to_string(r));
      return;
    }
    if (static_cast<Kind>(h.kind) == Kind::kHello) {
      std::string name(static_cast<const char*>(data), length);
      if (name != options.service) {
        cut_off("importer asked for service '" + name.substr(0, 96) + "', not the one exported");
        return;
      }
      expect.hello_seen = true;
      max_length = h.length;
      sequence = 0;
      end_sent = false;
    }
    expect.credits += h.credits;
  }

  void accept_pending() {
    std::vector<ucp_conn_request_h> reqs;
    reqs.swap(pending);
    for (ucp_conn_request_h req : reqs) {
      // The newest importer wins: a reconnecting importer whose old link
      // is not yet known to be dead replaces it.
      drop_ep();
      ucp_ep_params_t p{};
      p.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                     UCP_EP_PARAM_FIELD_ERR_HANDLER;
      p.conn_request = req;
      p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      p.err_handler.cb = &Impl::on_ep_error;
      p.err_handler.arg = this;
      ucs_status_t s = ucp_ep_create(worker.get(), &p, &ep);
      if (s != UCS_OK) {
        ep = nullptr;
        rejected.fetch_add(1, kRelaxed);
        set_error(std::string("ucp_ep_create: ") + ucs_status_string(s));
        continue;
      }
      ++connection;
      connections.fetch_add(1, kRelaxed);
    }
  }

  void register_pool(const View& v) {
    reg_tried = true;
    std::uintptr_t s = 0, e = 0;
    if (!mapping_of(v.data(), s, e)) return;
    ucp_mem_map_params_t p{};
    p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                   UCP_MEM_MAP_PARAM_FIELD_PROT;
    p.address = reinterpret_cast<void*>(s);
    p.length = e - s;
    p.prot = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_REMOTE_READ;
    ucs_status_t st = ucp_mem_map(worker.context(), &p, &memh);
    if (st != UCS_OK) {
      memh = nullptr;
      std::fprintf(stderr, "fbuf-bridge export: ucp_mem_map of the pool mapping failed (%s); "
                   "UCX registers per send instead\n", ucs_status_string(st));
      return;
    }
    reg_start = s;
    reg_end = e;
    registered.store(true, kRelaxed);
  }

  // Sends `v`; false if the link failed at once (the view is released).
  void send(View v) {
    if (v.size() > max_length) {
      too_large.fetch_add(1, kRelaxed);
      return;
    }
    if (!reg_tried && !std::getenv("FBUF_BRIDGE_NO_MEMH")) register_pool(v);
    std::unique_ptr<Slot> slot;
    if (!free_slots.empty()) {
      slot = std::move(free_slots.back());
      free_slots.pop_back();
    } else {
      slot = std::make_unique<Slot>();
      slot->impl = this;
    }
    slot->header = Header{};
    slot->header.kind = static_cast<std::uint16_t>(Kind::kData);
    slot->header.sequence = sequence++;
    slot->header.length = v.size();
    slot->connection = connection;
    const void* data = v.data();
    std::size_t size = v.size();
    slot->view = std::move(v);
    --expect.credits;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::on_send_done;
    p.user_data = slot.get();
    auto a = reinterpret_cast<std::uintptr_t>(data);
    if (memh != nullptr && a >= reg_start && a + size <= reg_end) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
    }
    in_flight.fetch_add(1, kRelaxed);
    Slot* raw = slot.release();
    ucs_status_ptr_t req = ucp_am_send_nbx(ep, kToImporter, &raw->header, kHeaderSize, data, size, &p);
    // A request is freed by its callback (ucp_request_free() before
    // completion would silence the callback).
    if (!UCS_PTR_IS_PTR(req)) {
      finish(raw, UCS_PTR_STATUS(req));
      if (UCS_PTR_STATUS(req) != UCS_OK) ep_failed = true;
    }
  }

  void send_end() {
    auto* slot = new Slot;  // once per stream
    slot->impl = this;
    slot->header.kind = static_cast<std::uint16_t>(Kind::kEnd);
    slot->header.sequence = sequence;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::on_send_done;
    p.user_data = slot;
    in_flight.fetch_add(1, kRelaxed);
    ucs_status_ptr_t req = ucp_am_send_nbx(ep, kToImporter, &slot->header, kHeaderSize, nullptr, 0, &p);
    if (!UCS_PTR_IS_PTR(req)) {
      finish(slot, UCS_PTR_STATUS(req));
    }
    end_sent = true;
  }

  bool connect_local(std::chrono::steady_clock::time_point& next_try) {
    if (rx || local_ended) return static_cast<bool>(rx);
    auto now = std::chrono::steady_clock::now();
    if (now < next_try) return false;
    next_try = now + options.retry;
    try {
      rx = Receiver::connect(options.service, {.connect_timeout = std::chrono::milliseconds(0)});
    } catch (const Error&) {
      return false;
    }
    return true;
  }

  // Takes from the local service while there is credit (or, dropping
  // oldest, always); returns true if it did anything.
  bool pump() {
    bool did = false;
    bool can_send = ep != nullptr && !ep_failed && expect.hello_seen;
    while (can_send && expect.credits > 0 && !held.empty()) {
      send(std::move(held.front()));
      held.pop_front();
      did = true;
    }
    while (rx) {
      bool credit = can_send && expect.credits > 0;
      if (!credit && options.overflow == Overflow::kBackPressure) break;
      auto v = rx.try_receive();
      if (!v) {
        auto e = v.error();
        if (e == Errc::kWouldBlock) break;
        if (e == Errc::kBadDescriptor) continue;
        rx = Receiver();  // the local stream ended (kPeerGone, kCutOff, kCorrupt)
        local_ended = true;
        break;
      }
      did = true;
      if (credit) {
        send(std::move(*v));
      } else {
        if (held.size() >= options.drop_queue) {
          // Counted before the view goes back, as in finish().
          dropped_oldest.fetch_add(1, kRelaxed);
          held.pop_front();
        }
        held.push_back(std::move(*v));
      }
    }
    if (local_ended && held.empty() && can_send && !end_sent) {
      send_end();
      did = true;
    }
    return did;
  }

  void run() {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = kToExporter;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = &Impl::on_am;
    hp.arg = this;
    ucp_worker_set_am_recv_handler(worker.get(), &hp);
    auto next_try = std::chrono::steady_clock::now();
    for (;;) {
      worker.progress();
      accept_pending();
      if (ep_failed) {
        links_lost.fetch_add(1, kRelaxed);
        drop_ep();
      }
      connect_local(next_try);
      if (pump()) continue;
      int rx_fd = -1;
      if (rx && (expect.credits > 0 || options.overflow == Overflow::kDropOldest) && ep != nullptr) {
        if (!rx.arm()) continue;
        rx_fd = rx.fd();
      }
      std::uint64_t v = 0;
      if (::read(stop_fd.get(), &v, sizeof v) == sizeof v) break;
      worker.wait(stop_fd.get(), rx_fd, std::chrono::milliseconds(rx ? 100 : 20));
    }
    held.clear();
    drop_ep();
    rx = Receiver();
    if (memh != nullptr) ucp_mem_unmap(worker.context(), memh);
  }

  // Last, so destroyed first: destroying a worker may still complete
  // requests (UCX purges those of endpoints it had not finished closing),
  // and their callbacks use the members above.
  Worker worker;
};

Exporter::Exporter(ExporterOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& m = *impl_;
  FBUF_REQUIRE(!m.options.service.empty(), "an exporter needs a service name");
  m.stop_fd = detail::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!m.stop_fd) detail::throw_errno("eventfd(bridge)");
  SockAddr addr = resolve(m.options.listen_address, m.options.port);
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr.storage);
  lp.sockaddr.addrlen = addr.length;
  lp.conn_handler.cb = &Impl::on_conn_request;
  lp.conn_handler.arg = &m;
  ucs_status_t s = ucp_listener_create(m.worker.get(), &lp, &m.listener);
  if (s != UCS_OK) {
    throw_ucx(s, "ucp_listener_create(" + m.options.listen_address + ":" + std::to_string(m.options.port) + ")");
  }
  ucp_listener_attr_t la{};
  la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  if (ucp_listener_query(m.listener, &la) == UCS_OK) {
    if (la.sockaddr.ss_family == AF_INET) {
      m.port = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);
    } else if (la.sockaddr.ss_family == AF_INET6) {
      m.port = ntohs(reinterpret_cast<const sockaddr_in6*>(&la.sockaddr)->sin6_port);
    }
  }
  m.thread = std::thread([&m] { m.run(); });
}

void Exporter::stop() noexcept {
  if (!impl_->thread.joinable()) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->stop_fd.get(), &one, sizeof one);
  impl_->thread.join();
}

Exporter::~Exporter() {
  stop();
  ucp_listener_destroy(impl_->listener);
}

std::uint16_t Exporter::port() const noexcept { return impl_->port; }

ExporterStats Exporter::stats() const noexcept {
  const Impl& m = *impl_;
  ExporterStats s;
  s.sent = m.sent.load(kRelaxed);
  s.bytes = m.bytes.load(kRelaxed);
  s.send_failed = m.send_failed.load(kRelaxed);
  s.dropped_oldest = m.dropped_oldest.load(kRelaxed);
  s.too_large = m.too_large.load(kRelaxed);
  s.connections = m.connections.load(kRelaxed);
  s.rejected = m.rejected.load(kRelaxed);
  s.links_lost = m.links_lost.load(kRelaxed);
  s.in_flight = m.in_flight.load(kRelaxed);
  s.registered = m.registered.load(kRelaxed);
  return s;
}

std::string Exporter::last_error() const {
  std::lock_guard<std::mutex> lock(impl_->error_mutex);
  return impl_->last_error;
}

}  // namespace fbuf::bridge

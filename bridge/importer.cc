// The importing side of a bridge (docs/design.md, "The bridge").
//
// Threads: as in exporter.cc, the bridge thread alone drives UCX, the
// local Sender and the members under "bridge thread only"; stats() reads
// relaxed atomics (each a counter on its own); last_error is under a mutex.
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bridge/ucx.h"
#include "bridge/wire.h"
#include "fbuf/base/assert.h"
#include "fbuf/base/fd.h"
#include "fbuf/bridge.h"
#include "fbuf/sender.h"

namespace fbuf::bridge {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
using Clock = std::chrono::steady_clock;

std::uint32_t ring_for(std::uint32_t buffers) {
  std::uint32_t r = 2;
  while (r < buffers) r <<= 1;
  return r;
}

}  // namespace

struct Importer::Impl {
  explicit Impl(ImporterOptions o)
      : options(std::move(o)),
        pool(PoolOptions{.name = "bridge:" + local_name(options),
                         .classes = {{options.buffer_size, options.buffers}},
                         .policy = options.policy}) {}

  static std::string local_name(const ImporterOptions& o) {
    return o.local_service.empty() ? o.service : o.local_service;
  }

  // A buffer UCX is receiving into (rendezvous).
  // One message from its header to its publication. Messages are
  // published in sequence order: an eager one that arrives while an
  // earlier rendezvous receive is still in progress waits behind it.
  struct Slot {
    Impl* impl = nullptr;
    Buffer buffer;
    std::size_t length = 0;
    bool done = false;
    bool ok = false;
    bool rndv = false;
  };

  ImporterOptions options;
  Pool pool;
  std::optional<Sender> sender;
  detail::UniqueFd stop_fd;
  std::thread thread;

  std::atomic<std::uint64_t> received{0}, bytes{0}, eager{0}, rendezvous{0}, no_consumer{0},
      receive_failed{0}, rejected{0}, links_lost{0}, connections{0};
  std::atomic<bool> ended{false};
  mutable std::mutex error_mutex;
  std::string last_error;

  // --- bridge thread only ---
  ucp_ep_h ep = nullptr;
  bool ep_failed = false;
  bool heard = false;       // this connection delivered at least one message
  bool hello_sent = false;  // this connection's Hello has left (Credits may follow)
  bool end_seen = false;
  ImporterExpect expect;
  std::size_t receiving = 0;  // rendezvous receives in progress
  std::vector<std::unique_ptr<Slot>> free_slots;
  std::deque<Slot*> order;  // messages not yet published, in sequence order
  Clock::time_point next_connect{};
  // Connection attempts in a row that failed before the exporter said
  // anything. UCX sees the network devices that were up when its context
  // was made; after kFreshContextAfter such failures the importer makes a
  // new one, so an importer started before its link is up connects once it is.
  int failed_attempts = 0;
  static constexpr int kFreshContextAfter = 3;
  std::chrono::milliseconds backoff{0};

  void set_error(const std::string& e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    last_error = e;
  }

  static void on_ep_error(void* arg, ucp_ep_h failed, ucs_status_t st) {
    auto* self = static_cast<Impl*>(arg);
    if (std::getenv("FBUF_BRIDGE_DEBUG")) std::fprintf(stderr, "ep error: %s\n", ucs_status_string(st));
    if (failed == self->ep) self->ep_failed = true;
  }
  // The Hello's send carries the Impl in a CtlSend so that its completion
  // can let Credits go out: a Credit submitted while the Hello still waits
  // for the endpoint's wire-up could overtake it (seen over veth), and the
  // exporter cuts off a Credit before the Hello.
  struct CtlSend {
    Header header;
    Impl* impl = nullptr;
    ucp_ep_h ep = nullptr;
  };
  static void on_ctl_sent(void* request, ucs_status_t status, void* user_data) {
    auto* c = static_cast<CtlSend*>(user_data);
    if (static_cast<Kind>(c->header.kind) == Kind::kHello && status == UCS_OK && c->ep == c->impl->ep) {
      c->impl->hello_sent = true;
    }
    delete c;
    ucp_request_free(request);
  }
  static void on_recv_done(void* request, ucs_status_t status, size_t length, void* user_data) {
    ucp_request_free(request);
    auto* slot = static_cast<Slot*>(user_data);
    slot->impl->received_into(slot, status, length);
  }
  static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data,
                            size_t length, const ucp_am_recv_param_t* param) {
    static_cast<Impl*>(arg)->handle_am(header, header_length, data, length, param);
    // Refused or copied: UCX may drop its descriptor. A rendezvous message
    // accepted above has its receive started already.
    return UCS_OK;
  }

  void publish(Buffer&& b, std::size_t length, bool rndv) {
    if (!sender) {
      b.reset();
      no_consumer.fetch_add(1, kRelaxed);
      return;
    }
    // Counted before the send: a local consumer that receives the message
    // and then asks for the counters must find it there. With nobody
    // local to give it to it is not counted as received at all; a send
    // that fails even so (the last consumer left just now) takes the count
    // back (this thread is the counters' only writer), so a reader at that
    // instant may see it as received before it moves to no_consumer.
    if (sender->receiver_count() == 0) {
      if (std::getenv("FBUF_BRIDGE_DEBUG")) std::fprintf(stderr, "publish: no receivers\n");
      b.reset();
      no_consumer.fetch_add(1, kRelaxed);
      return;
    }
    std::atomic<std::uint64_t>& kind = rndv ? rendezvous : eager;
    received.fetch_add(1, kRelaxed);
    bytes.fetch_add(length, kRelaxed);
    kind.fetch_add(1, kRelaxed);
    std::error_code e = sender->try_send(std::move(b), length);
    if (e) {
      if (std::getenv("FBUF_BRIDGE_DEBUG")) std::fprintf(stderr, "publish: %s\n", e.message().c_str());
      // kNoReceivers: nobody local to give it to; anything else cannot
      // happen with a ring as large as the pool. Counted, never silent;
      // the failed send left the buffer with us: back to the pool.
      received.fetch_sub(1, kRelaxed);
      bytes.fetch_sub(length, kRelaxed);
      kind.fetch_sub(1, kRelaxed);
      b.reset();
      no_consumer.fetch_add(1, kRelaxed);
      return;
    }
  }

  void received_into(Slot* slot, ucs_status_t status, std::size_t length) {
    --receiving;
    slot->done = true;
    slot->ok = status == UCS_OK && length == slot->length;
    if (!slot->ok) receive_failed.fetch_add(1, kRelaxed);
    flush();
  }

  // Publishes the finished messages at the front of `order`. A failed
  // receive (the link broke under it) gives its buffer back.
  void flush() {
    while (!order.empty() && order.front()->done) {
      Slot* slot = order.front();
      order.pop_front();
      if (slot->ok) {
        publish(std::move(slot->buffer), slot->length, slot->rndv);
      } else {
        slot->buffer.reset();
      }
      free_slots.emplace_back(slot);
    }
  }

  void cut_off(const std::string& why) {
    rejected.fetch_add(1, kRelaxed);
    set_error(why);
    std::fprintf(stderr, "fbuf-bridge import: exporter cut off: %s\n", why.c_str());
    drop_ep(true);
  }

  void drop_ep(bool failed) {
    if (ep == nullptr) return;
    ucp_ep_h old = ep;
    ep = nullptr;
    worker->close(old);  // rendezvous receives in progress fail inside
    // ...or soon after: their buffers come back only through their
    // callbacks (UCX may write into them until then), so wait for those,
    // bounded.
    for (int i = 0; i < 1000 && receiving > 0; ++i) {
      if (worker->get() != nullptr && ucp_worker_progress(worker->get()) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (failed && heard) links_lost.fetch_add(1, kRelaxed);
    failed_attempts = failed && !heard ? failed_attempts + 1 : 0;
    if (failed && !end_seen) {
      backoff = heard ? options.backoff_min : std::min(options.backoff_max, std::max(options.backoff_min, backoff * 2));
      next_connect = Clock::now() + backoff;
    }
    ep_failed = false;
    heard = false;
    hello_sent = false;
    expect = {};
  }

  void handle_am(const void* header, size_t header_length, void* data, size_t length,
                 const ucp_am_recv_param_t* param) {
    if (ep == nullptr || end_seen) return;
    expect.max_length = options.buffer_size;
    Header h;
    Reject r = decode_at_importer({static_cast<const std::byte*>(header), header_length}, length,
                                  expect, h);
    if (r != Reject::kNone) {
      cut_off(std::string("bad header from exporter: ") + to_string(r));
      return;
    }
    heard = true;
    backoff = options.backoff_min;
    ++expect.sequence;
    if (static_cast<Kind>(h.kind) == Kind::kEnd) {
      end_seen = true;
      return;
    }
    --expect.credits;
    // uf_allocb: the buffer is taken before the bytes land. A credit
    // stands for a free buffer, so this cannot fail unless our own count
    // is wrong; then the peer is cut off rather than anything dropped.
    auto b = pool.try_allocate(length);
    if (!b) {
      cut_off("no buffer for a credited message: " + b.error().message());
      return;
    }
    bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if (!rndv && order.empty()) {
      if (length != 0) std::memcpy(b->data(), data, length);
      publish(std::move(*b), length, false);
      return;
    }
    std::unique_ptr<Slot> slot;
    if (!free_slots.empty()) {
      slot = std::move(free_slots.back());
      free_slots.pop_back();
    } else {
      slot = std::make_unique<Slot>();
      slot->impl = this;
    }
    slot->length = length;
    slot->buffer = std::move(*b);
    slot->rndv = rndv;
    slot->done = !rndv;
    slot->ok = !rndv;
    if (!rndv) {
      if (length != 0) std::memcpy(slot->buffer.data(), data, length);
      order.push_back(slot.release());
      return;
    }
    order.push_back(slot.get());
    void* dest = slot->buffer.data();
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = &Impl::on_recv_done;
    p.user_data = slot.get();
    ++receiving;
    Slot* raw = slot.release();
    ucs_status_ptr_t req = ucp_am_recv_data_nbx(worker->get(), data, dest, length, &p);
    // A request is freed by its callback (ucp_request_free() before
    // completion would silence the callback).
    if (!UCS_PTR_IS_PTR(req)) {
      received_into(raw, UCS_PTR_STATUS(req), length);
    }
  }

  void send_ctl(Kind kind, std::uint32_t credits, const void* data, std::size_t size) {
    auto* c = new CtlSend;  // a few per second at most: credits are granted in batches
    c->impl = this;
    c->ep = ep;
    c->header.kind = static_cast<std::uint16_t>(kind);
    c->header.credits = credits;
    c->header.length = kind == Kind::kHello ? options.buffer_size : 0;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::on_ctl_sent;
    p.user_data = c;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep, kToExporter, &c->header, kHeaderSize, data, size, &p);
    if (!UCS_PTR_IS_PTR(req)) {
      if (kind == Kind::kHello && UCS_PTR_STATUS(req) == UCS_OK) hello_sent = true;
      delete c;
      if (UCS_PTR_STATUS(req) != UCS_OK) ep_failed = true;
    }
    expect.credits += credits;
  }

  std::uint32_t grantable() {
    if (!sender || sender->receiver_count() < options.wait_consumers) return 0;
    std::uint32_t free = pool.stats().free;
    return free > expect.credits ? free - expect.credits : 0;
  }

  void connect() {
    SockAddr addr = resolve(options.host, options.port);
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                   UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr.storage);
    p.sockaddr.addrlen = addr.length;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &Impl::on_ep_error;
    p.err_handler.arg = this;
    ucs_status_t s = ucp_ep_create(worker->get(), &p, &ep);
    if (s != UCS_OK) {
      ep = nullptr;
      set_error(std::string("ucp_ep_create: ") + ucs_status_string(s));
      backoff = std::min(options.backoff_max, std::max(options.backoff_min, backoff * 2));
      next_connect = Clock::now() + backoff;
      return;
    }
    expect = {};
    expect.max_length = options.buffer_size;
    connections.fetch_add(1, kRelaxed);
    send_ctl(Kind::kHello, grantable(), options.service.data(), options.service.size());
  }

  void set_handler() {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = kToImporter;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = &Impl::on_am;
    hp.arg = this;
    ucp_worker_set_am_recv_handler(worker->get(), &hp);
  }

  void run() {
    set_handler();
    const std::uint32_t batch = std::max<std::uint32_t>(1, options.buffers / 8);
    for (;;) {
      worker->progress();
      if (ep_failed) drop_ep(true);
      if (end_seen && receiving == 0 && sender) {
        // Everything the exporter sent is published: end the local stream.
        sender.reset();
        drop_ep(false);
        ended.store(true, kRelaxed);
      }
      if (ep == nullptr && !end_seen && Clock::now() >= next_connect) {
        if (failed_attempts >= kFreshContextAfter && order.empty()) {
          try {
            auto fresh = std::make_unique<Worker>();
            worker = std::move(fresh);
            set_handler();
          } catch (const Error& e) {
            set_error(e.what());
          }
          failed_attempts = 0;
        }
        connect();
      }
      bool short_of_credit = false;
      if (ep != nullptr && !end_seen && hello_sent) {
        std::uint32_t g = grantable();
        if (g >= batch || (g > 0 && expect.credits == 0)) {
          send_ctl(Kind::kCredit, g, nullptr, 0);
          continue;
        }
        short_of_credit = expect.credits < options.buffers;
      } else if (ep != nullptr && !hello_sent) {
        short_of_credit = true;  // poll soon: the Hello completes in progress
      }
      std::uint64_t v = 0;
      if (::read(stop_fd.get(), &v, sizeof v) == sizeof v) break;
      // Buffers coming back from local consumers are seen by polling the
      // pool every few milliseconds while credit is short.
      auto timeout = std::chrono::milliseconds(short_of_credit ? 2 : 50);
      worker->wait(stop_fd.get(), -1, timeout);
    }
    drop_ep(false);
    // Local consumers still hold buffers or have returns on their way: the
    // Sender collects them (and reclaims those of consumers gone) while it
    // lives, so it stays a little longer (bounded) before the stream ends.
    for (int i = 0; i < 200 && sender; ++i) {
      PoolStats p = pool.stats();
      if (p.free == p.total) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    sender.reset();
  }

  // Last, so destroyed first: destroying a worker may still complete
  // requests (UCX purges those of endpoints it had not finished closing),
  // and their callbacks use the members above.
  std::unique_ptr<Worker> worker = std::make_unique<Worker>();
};

Importer::Importer(ImporterOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& m = *impl_;
  FBUF_REQUIRE(!m.options.service.empty() && m.options.service.size() <= kMaxServiceName, "service name of 1 to 96 bytes");
  FBUF_REQUIRE(m.options.buffers > 0 && m.options.buffers <= kMaxCredits, "1 to 65536 buffers");
  m.stop_fd = detail::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!m.stop_fd) detail::throw_errno("eventfd(bridge)");
  resolve(m.options.host, m.options.port);  // a bad address fails here, not in the thread
  m.sender.emplace(m.pool, Impl::local_name(m.options),
                   SenderOptions{.ring_capacity = ring_for(m.options.buffers)});
  m.thread = std::thread([&m] { m.run(); });
}

void Importer::stop() noexcept {
  if (!impl_->thread.joinable()) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->stop_fd.get(), &one, sizeof one);
  impl_->thread.join();
}

Importer::~Importer() {
  stop();
}

ImporterStats Importer::stats() const noexcept {
  const Impl& m = *impl_;
  ImporterStats s;
  s.received = m.received.load(kRelaxed);
  s.bytes = m.bytes.load(kRelaxed);
  s.eager = m.eager.load(kRelaxed);
  s.rendezvous = m.rendezvous.load(kRelaxed);
  s.no_consumer = m.no_consumer.load(kRelaxed);
  s.receive_failed = m.receive_failed.load(kRelaxed);
  s.rejected = m.rejected.load(kRelaxed);
  s.links_lost = m.links_lost.load(kRelaxed);
  s.connections = m.connections.load(kRelaxed);
  s.ended = m.ended.load(kRelaxed);
  return s;
}

std::string Importer::last_error() const {
  std::lock_guard<std::mutex> lock(impl_->error_mutex);
  return impl_->last_error;
}

Pool Importer::pool() const { return impl_->pool; }

}  // namespace fbuf::bridge

// The processes of the chaos test (tests/fault/chaos_test.cc). Modes:
//
//   produce SERVICE PACE_US BOUND_MS RING
//       The producer: a 64-buffer pool and a listening Sender. Waits for
//       the two honest receivers, prints "ready", then sends numbered
//       frames (tests/integration/test_frame.h) every PACE_US until
//       SIGUSR1. Allocations and sends wait at most BOUND_MS; a timed-out
//       one is counted and retried with the same frame, so the stream has
//       no holes. At the end it closes the Sender, waits up to 10 s for the
//       pool to be all free again and prints key=value counters.
//
//   honest SERVICE HOLD
//       An honest receiver through the public API. Checks every frame
//       (sequence, size, checksum), keeps the last HOLD views and checks
//       each again just before dropping it (a buffer freed and reused
//       under a held view shows up there), and measures the longest time
//       between two frames. Prints key=value results at end-of-stream.
//
//   hostile SERVICE OPS_FD SEED ROLE ATTACKS
//       A hostile peer. Connects through the real handshake (by hand, with
//       the library's private control-plane helpers), maps the ring and the
//       doorbell read-write and rewrites them until it is killed. Every
//       word it writes is one operation; the count goes to the shared
//       8-byte counter mapped from OPS_FD (inherited from the test). ROLE
//       is `chaos` (random episodes drawn from ATTACKS, a comma-separated
//       subset of scribble,returns,stall,detach,capacity,reconnect) or
//       `stall` (an otherwise well-behaved receiver that publishes an
//       impossible send-ring head, over and over).
//
// Exit status: 0 done, 2 bad arguments or setup failure, 3 the service
// could not be reached (the producer is gone).
#include <capnp/message.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/futex.h"
#include "fbuf/buffers/doorbell.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"
#include "ipc/layout.h"
#include "tests/integration/test_frame.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using fbuf::detail::Mapping;
using fbuf::detail::UniqueFd;

constexpr std::uint32_t kSmallBuffers = 48;
constexpr std::uint32_t kLargeBuffers = 16;
constexpr std::size_t kMaxFrame = 65536;

double ms_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// --- produce ---------------------------------------------------------------

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

int produce(const char* service, long pace_us, long bound_ms, std::uint32_t ring) {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, nullptr) != 0) return 2;
  const std::chrono::milliseconds bound(bound_ms);
  const std::chrono::microseconds pace(pace_us);

  fbuf::Pool pool(fbuf::PoolOptions{.name = "chaos", .classes = {{4096, kSmallBuffers}, {kMaxFrame, kLargeBuffers}}});
  std::optional<fbuf::Sender> tx(std::in_place, pool, service, fbuf::SenderOptions{.ring_capacity = ring});
  if (!tx->wait_for_receivers(2, 30s)) {
    std::fprintf(stderr, "chaos_peer: the honest receivers never connected\n");
    return 2;
  }
  std::printf("ready\n");
  std::fflush(stdout);

  std::uint64_t sent = 0, alloc_timeouts = 0, send_timeouts = 0;
  double max_frame_ms = 0;
  std::string error = "none";
  auto next = Clock::now();
  while (!g_stop && error == "none") {
    const std::uint64_t seq = sent;
    const std::size_t payload = tf_mixed_payload_size(seq, kMaxFrame);
    const std::size_t len = TF_HEADER_SIZE + payload;
    const auto t0 = Clock::now();
    std::optional<fbuf::Buffer> buf;
    while (!buf && !g_stop) {
      auto r = tx->allocate(len, bound);
      if (r) {
        buf.emplace(std::move(*r));
      } else if (r.error() == fbuf::make_error_code(fbuf::Errc::kTimedOut)) {
        ++alloc_timeouts;
      } else {
        error = "allocate:" + r.error().message();
        break;
      }
    }
    if (!buf) {
      // A frame the producer was still waiting for when it stopped counts
      // too: a stall at the very end has no frame after it to show it.
      max_frame_ms = std::max(max_frame_ms, ms_since(t0, Clock::now()));
      break;
    }
    tf_write(reinterpret_cast<unsigned char*>(buf->data()), seq, payload);
    bool done = false;
    while (!done && !g_stop) {
      std::error_code ec = tx->send(std::move(*buf), len, bound);
      if (!ec) {
        done = true;
      } else if (ec == fbuf::make_error_code(fbuf::Errc::kTimedOut)) {
        ++send_timeouts;  // the buffer is still ours: the same frame again
      } else {
        error = "send:" + ec.message();
        break;
      }
    }
    if (!done) {  // stopped, or failed, with this frame unsent
      max_frame_ms = std::max(max_frame_ms, ms_since(t0, Clock::now()));
      break;
    }
    ++sent;
    const auto t1 = Clock::now();
    max_frame_ms = std::max(max_frame_ms, ms_since(t0, t1));
    next += pace;
    if (next < t1) next = t1;
    std::this_thread::sleep_until(next);
  }

  const fbuf::SenderStats s = tx->stats();
  std::printf("sent=%" PRIu64 " alloc_timeouts=%" PRIu64 " send_timeouts=%" PRIu64
              " max_frame_ms=%.1f error=%s\n",
              sent, alloc_timeouts, send_timeouts, max_frame_ms, error.c_str());
  std::printf("rejected_returns=%" PRIu64 " receivers_lost=%" PRIu64 " receivers_connected=%" PRIu64
              " rejected_handshakes=%" PRIu64 " returned=%" PRIu64 "\n",
              s.rejected_returns, s.receivers_lost, s.receivers_connected, s.rejected_handshakes, s.returned);
  std::fflush(stdout);
  // End of stream for the honest receivers; they drain, close and drop
  // their views, and everything comes home.
  tx.reset();
  fbuf::PoolStats p = pool.stats();
  const auto deadline = Clock::now() + 10s;
  while (p.free != p.total && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
    p = pool.stats();
  }
  std::printf("pool_free=%u pool_total=%u pool_in_flight=%u pool_rejected_returns=%" PRIu64 "\n", p.free, p.total,
              p.in_flight, p.rejected_returns);
  std::fflush(stdout);
  return 0;
}

// --- honest ----------------------------------------------------------------

struct Held {
  fbuf::View view;
  std::uint64_t seq;
};

int honest(const char* service, std::size_t hold) {
  fbuf::Receiver rx = fbuf::Receiver::connect(service, {.connect_timeout = 30s});
  std::printf("connected\n");
  std::fflush(stdout);
  std::uint64_t expected = 0, first = 0, last = 0, count = 0;
  std::uint64_t lost = 0, dups = 0, torn = 0, reused = 0, bad = 0;
  double max_gap_ms = 0;
  Clock::time_point last_at{};
  std::string end = "peer_gone";
  std::deque<Held> held;
  auto recheck = [&](const Held& h) {
    tf_header hdr;
    if (tf_check(reinterpret_cast<const unsigned char*>(h.view.data()), h.view.size(), h.seq, &hdr) != TF_OK) {
      if (reused++ == 0)
        std::fprintf(stderr, "honest: frame %" PRIu64 " changed while held (now seq %" PRIu64 ")\n", h.seq,
                     hdr.sequence);
    }
  };
  for (;;) {
    auto v = rx.receive(1s);
    if (!v) {
      if (v.error() == fbuf::make_error_code(fbuf::Errc::kTimedOut)) continue;
      if (v.error() == fbuf::make_error_code(fbuf::Errc::kPeerGone)) break;
      if (v.error() == fbuf::make_error_code(fbuf::Errc::kBadDescriptor)) {
        ++bad;
        continue;
      }
      end = "error:" + v.error().message();
      for (char& c : end)
        if (c == ' ') c = '_';
      break;
    }
    const auto now = Clock::now();
    if (count > 0) max_gap_ms = std::max(max_gap_ms, ms_since(last_at, now));
    last_at = now;
    const auto* p = reinterpret_cast<const unsigned char*>(v->data());
    tf_header h;
    int st = tf_check(p, v->size(), expected, &h);
    std::uint64_t seq = expected;
    if (st == TF_BAD_SEQUENCE) {
      seq = h.sequence;
      if (seq < expected) {
        if (dups++ == 0)
          std::fprintf(stderr, "honest: seq %" PRIu64 " again, expected %" PRIu64 "\n", seq, expected);
      } else {
        if (lost == 0) std::fprintf(stderr, "honest: seq %" PRIu64 ", expected %" PRIu64 "\n", seq, expected);
        lost += seq - expected;
      }
      st = tf_check(p, v->size(), seq, &h);
    }
    if (st != TF_OK) {
      if (torn++ == 0)
        std::fprintf(stderr, "honest: frame after %" PRIu64 ": %s\n", expected, tf_status_text(st));
    }
    if (seq >= expected) expected = seq + 1;
    if (count == 0) first = seq;
    last = std::max(last, seq);
    ++count;
    held.push_back({std::move(*v), seq});
    if (held.size() > hold) {
      recheck(held.front());
      held.pop_front();
    }
  }
  for (const Held& h : held) recheck(h);
  held.clear();
  std::printf("honest first=%" PRIu64 " last=%" PRIu64 " count=%" PRIu64 " lost=%" PRIu64 " dups=%" PRIu64
              " torn=%" PRIu64 " reused=%" PRIu64 " bad_descriptors=%" PRIu64 " max_gap_ms=%.1f end=%s\n",
              first, last, count, lost, dups, torn, reused, bad, max_gap_ms, end.c_str());
  std::fflush(stdout);
  return 0;
}

// --- hostile ---------------------------------------------------------------

enum Attack : unsigned {
  kScribble = 1u << 0,
  kReturns = 1u << 1,
  kStall = 1u << 2,
  kDetach = 1u << 3,
  kCapacity = 1u << 4,
  kReconnect = 1u << 5,
};

unsigned parse_attacks(std::string_view list) {
  if (list == "all") return ~0u;
  unsigned out = 0;
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view name = list.substr(0, comma);
    if (name == "scribble") out |= kScribble;
    if (name == "returns") out |= kReturns;
    if (name == "stall") out |= kStall;
    if (name == "detach") out |= kDetach;
    if (name == "capacity") out |= kCapacity;
    if (name == "reconnect") out |= kReconnect;
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return out;
}

// A word of the shared memory this peer can write: where, how wide, and
// what kind of value is interesting there.
enum class Kind { kMagic, kCapacity, kFlag, kSendIndex, kReturnIndex, kSlotWord, kBell };
struct Target {
  std::byte* at;
  unsigned width;  // 4 or 8
  Kind kind;
};

class Hostile {
 public:
  Hostile(std::string service, std::atomic<std::uint64_t>* ops_total, std::uint64_t seed, bool stall_role,
          unsigned attacks)
      : service_(std::move(service)), ops_total_(ops_total), rng_(seed), stall_role_(stall_role),
        attacks_(attacks) {}
  ~Hostile() { flush(); }

  int run() {
    for (;;) {
      if (!connected_ && !connect()) return 3;
      if (stall_role_) {
        stall_episode(Clock::now() + 1h);
        continue;
      }
      switch (pick_episode()) {
        case kScribble: scribble(256 + rng_() % 8192); break;
        case kReturns: returns_episode(); break;
        case kStall: stall_episode(Clock::now() + std::chrono::milliseconds(5 + rng_() % 60)); break;
        case kDetach: detach_episode(); break;
        case kCapacity: capacity_episode(); break;
        case kReconnect: disconnect(); break;
        default: break;
      }
      // A producer that cut this peer off closed the socket: connect again.
      if (connected_ && hung_up()) disconnect();
      flush();
    }
  }

 private:
  // --- connection ---

  // The handshake by hand, so that the header can be rewritten the moment
  // the ring's fd arrives (the producer is still setting up its side).
  bool connect() {
    for (int attempt = 0; attempt < 50; ++attempt) {
      if (try_connect()) return true;
      sock_.reset();
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  bool try_connect() {
    try {
      sock_ = fbuf::ipc::connect_service(service_, 1s);
    } catch (const fbuf::Error& e) {
      std::fprintf(stderr, "hostile: %s\n", e.what());
      return false;
    }
    {
      capnp::MallocMessageBuilder m;
      auto h = m.initRoot<fbuf::ipc::proto::ControlMessage>().initHello();
      h.setVersion(fbuf::ipc::kProtocolVersion);
      h.setPid(static_cast<std::uint32_t>(::getpid()));
      if (fbuf::ipc::send_message(sock_.get(), m, {})) return false;
    }
    static_assert(fbuf::ipc::kMaxControlFds == 8);
    std::vector<capnp::word> words(fbuf::ipc::kMaxControlBytes / sizeof(capnp::word));
    iovec iov{words.data(), words.size() * sizeof(capnp::word)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
    std::vector<UniqueFd> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
    if (n <= 0 || fds.size() != fbuf::ipc::kWelcomeFds) return false;  // a Reject, or cut off
    // Before anything else: the capacities in the header, while the
    // producer may still be reading them.
    if ((attacks_ & kCapacity) != 0 && !stall_role_ && rng_() % 4 != 0) {
      const std::uint32_t huge[] = {~0u, 1u << 31, 1u << 30, 1u << 24};
      const std::uint32_t c1 = huge[rng_() % 4], c2 = huge[rng_() % 4];
      if (::pwrite(fds[1].get(), &c1, 4, offsetof(fbuf::ipc::ChannelHeader, send_capacity)) == 4) count_op();
      if (::pwrite(fds[1].get(), &c2, 4, offsetof(fbuf::ipc::ChannelHeader, return_capacity)) == 4) count_op();
      raced_capacity_ = true;
    }
    try {
      info_ = fbuf::ipc::decode_welcome(kj::ArrayPtr<const capnp::word>(
          words.data(), static_cast<std::size_t>(n) / sizeof(capnp::word)));
      ring_ = Mapping::map(fds[1].get(), info_.ring_bytes, PROT_READ | PROT_WRITE, "hostile ring");
      bell_ = Mapping::map(fds[2].get(), fbuf::detail::page_size(), PROT_READ | PROT_WRITE, "hostile bell");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hostile: %s\n", e.what());
      return false;
    }
    connected_ = true;
    std::printf("welcome %u\n", info_.receiver_id);
    std::fflush(stdout);
    sc_ = info_.send_capacity;
    rc_ = info_.return_capacity;
    buffers_ = 0;
    for (const auto& c : info_.classes) buffers_ += c.count;
    my_head_ = 0;
    ret_tail_ = 0;
    kept_.clear();
    returned_.clear();
    build_targets();
    if (raced_capacity_) {
      // Give the producer a return to read through whatever capacity it
      // believed.
      const std::uint64_t tails[] = {1, 2, 1000, std::uint64_t{1} << 31};
      put64(ring_.data() + ret_off() + offsetof(fbuf::ipc::RingIndices, tail), tails[rng_() % 4]);
      raced_capacity_ = false;
    }
    return true;
  }

  void disconnect() {
    flush();
    ring_.reset();
    bell_.reset();
    sock_.reset();
    connected_ = false;
  }

  bool hung_up() const {
    pollfd p{sock_.get(), POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
  }

  // --- writing and counting ---

  void count_op() {
    ++ops_;
    if (++pending_ops_ >= 256) flush();
  }
  void flush() {
    if (pending_ops_ == 0) return;
    // relaxed: a counter the test reads after this process is gone.
    ops_total_->fetch_add(pending_ops_, std::memory_order_relaxed);
    pending_ops_ = 0;
  }
  // Plain words in shared memory, written with atomic stores so that no
  // write is merged away; relaxed: the peer's reads are what they are.
  void put64(std::byte* at, std::uint64_t v) {
    __atomic_store_n(reinterpret_cast<std::uint64_t*>(at), v, __ATOMIC_RELAXED);
    count_op();
  }
  void put32(std::byte* at, std::uint32_t v) {
    __atomic_store_n(reinterpret_cast<std::uint32_t*>(at), v, __ATOMIC_RELAXED);
    count_op();
  }
  static std::uint64_t get64(const std::byte* at) {
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(at), __ATOMIC_ACQUIRE);
  }

  static std::size_t send_off() { return offsetof(fbuf::ipc::ChannelHeader, send); }
  static std::size_t ret_off() { return offsetof(fbuf::ipc::ChannelHeader, ret); }
  std::byte* send_slot(std::uint64_t pos) const {
    return ring_.data() + fbuf::ipc::ChannelHeader::send_slots_offset() + (pos & (sc_ - 1)) * 32;
  }
  std::byte* ret_slot(std::uint64_t pos) const {
    return ring_.data() + fbuf::ipc::ChannelHeader::return_slots_offset(sc_) + (pos & (rc_ - 1)) * 32;
  }
  std::uint64_t send_tail() const { return get64(ring_.data() + send_off() + offsetof(fbuf::ipc::RingIndices, tail)); }
  std::uint64_t ret_head() const { return get64(ring_.data() + ret_off() + offsetof(fbuf::ipc::RingIndices, head)); }

  void put_send_head(std::uint64_t v) { put64(ring_.data() + send_off() + offsetof(fbuf::ipc::RingIndices, head), v); }

  void write_descriptor(std::byte* slot, const fbuf::ipc::Descriptor& d) {
    std::uint64_t w[4];
    std::memcpy(w, &d, sizeof w);
    for (int i = 0; i < 4; ++i) put64(slot + 8 * i, w[i]);
  }

  void build_targets() {
    targets_.clear();
    using H = fbuf::ipc::ChannelHeader;
    using R = fbuf::ipc::RingIndices;
    std::byte* r = ring_.data();
    targets_.push_back({r + offsetof(H, magic), 8, Kind::kMagic});
    targets_.push_back({r + offsetof(H, version), 4, Kind::kMagic});
    // The capacities belong to the `capacity` attack, so that leaving it
    // out aims the others at what they test.
    if ((attacks_ & kCapacity) != 0) {
      targets_.push_back({r + offsetof(H, send_capacity), 4, Kind::kCapacity});
      targets_.push_back({r + offsetof(H, return_capacity), 4, Kind::kCapacity});
    }
    targets_.push_back({r + offsetof(H, reserved), 4, Kind::kFlag});
    targets_.push_back({r + offsetof(H, sender_closed), 4, Kind::kFlag});
    for (std::size_t ring : {send_off(), ret_off()}) {
      const Kind index = ring == send_off() ? Kind::kSendIndex : Kind::kReturnIndex;
      targets_.push_back({r + ring + offsetof(R, tail), 8, index});
      targets_.push_back({r + ring + offsetof(R, head), 8, index});
      targets_.push_back({r + ring + offsetof(R, data_seq), 4, Kind::kFlag});
      targets_.push_back({r + ring + offsetof(R, consumer_waiters), 4, Kind::kFlag});
      targets_.push_back({r + ring + offsetof(R, space_seq), 4, Kind::kFlag});
      targets_.push_back({r + ring + offsetof(R, producer_waiters), 4, Kind::kFlag});
    }
    const std::size_t slots_end = H::bytes(sc_, rc_);
    for (std::size_t off = H::send_slots_offset(); off + 8 <= slots_end; off += 8)
      targets_.push_back({r + off, 8, Kind::kSlotWord});
    using D = fbuf::detail::DoorbellHeader;
    std::byte* b = bell_.data();
    targets_.push_back({b + offsetof(D, magic), 8, Kind::kMagic});
    targets_.push_back({b + offsetof(D, version), 4, Kind::kMagic});
    targets_.push_back({b + offsetof(D, reserved), 4, Kind::kFlag});
    targets_.push_back({b + offsetof(D, seq), 4, Kind::kBell});
    targets_.push_back({b + offsetof(D, waiters), 4, Kind::kBell});
  }

  // Boundary values, values relative to the live indices, and noise.
  std::uint64_t boundary() {
    static constexpr std::uint64_t kFixed[] = {0,
                                               1,
                                               2,
                                               (std::uint64_t{1} << 31) - 1,
                                               std::uint64_t{1} << 31,
                                               (std::uint64_t{1} << 32) - 1,
                                               std::uint64_t{1} << 32,
                                               std::uint64_t{1} << 63,
                                               ~std::uint64_t{0} - 1,
                                               ~std::uint64_t{0}};
    const std::uint64_t t = send_tail();
    switch (rng_() % 6) {
      case 0: return kFixed[rng_() % std::size(kFixed)];
      case 1: {
        const std::uint64_t caps[] = {sc_ - 1, sc_, sc_ + 1ull, rc_ - 1, rc_, rc_ + 1ull, buffers_, buffers_ + 1ull};
        return caps[rng_() % std::size(caps)];
      }
      case 2: {
        const std::uint64_t rel[] = {t + 1, t + 1000, t - 1, t - sc_, t - sc_ - 1, t + sc_, t + sc_ + 1, my_head_,
                                     my_head_ + 1, ret_tail_ + 1, ret_tail_ + 1000, ret_tail_ - 1, ret_tail_ + rc_ + 1};
        return rel[rng_() % std::size(rel)];
      }
      case 3: return rng_() % 64;
      case 4: return rng_() & 0xffffffffu;
      default: return rng_();
    }
  }

  // A descriptor that looks like a return: one this peer was sent, one it
  // never held (guessing the generation), a stale or future generation,
  // an index or pool out of range.
  fbuf::ipc::Descriptor forged_return() {
    fbuf::ipc::Descriptor d{};
    const fbuf::ipc::Descriptor* seen = nullptr;
    if (!returned_.empty()) seen = &returned_[rng_() % returned_.size()];
    else if (!kept_.empty()) seen = &kept_[rng_() % kept_.size()];
    const std::uint32_t gen = seen != nullptr ? seen->generation : 1;
    switch (rng_() % 7) {
      case 0:  // a duplicate
        if (seen != nullptr) d = *seen;
        break;
      case 1:  // someone else's buffer, generation guessed
        d.index = static_cast<std::uint32_t>(rng_() % buffers_);
        d.generation = gen;
        break;
      case 2:
        d.index = static_cast<std::uint32_t>(rng_() % buffers_);
        d.generation = gen + 1;
        break;
      case 3:  // a future generation
        if (seen != nullptr) d = *seen;
        d.generation += 1;
        break;
      case 4:  // out of range
        d.index = buffers_ + static_cast<std::uint32_t>(rng_() % 3);
        d.generation = gen;
        break;
      case 5:  // no such pool
        if (seen != nullptr) d = *seen;
        d.pool = 1 + static_cast<std::uint32_t>(rng_() % 7);
        break;
      default:
        d.index = ~0u;
        d.generation = ~0u;
        break;
    }
    return d;
  }

  fbuf::ipc::Descriptor forged_slot() {
    fbuf::ipc::Descriptor d = forged_return();
    const std::uint32_t offsets[] = {0, 1, 4096, 65536, ~0u};
    const std::uint32_t lengths[] = {0, 32, 4096, 4097, 65536, ~0u};
    d.offset = offsets[rng_() % std::size(offsets)];
    d.length = lengths[rng_() % std::size(lengths)];
    d.sequence = rng_();
    return d;
  }

  // Leaves the honest processes some CPU: a short sleep every `every` ops.
  void pause_now_and_then(std::uint64_t every) {
    if (ops_ - last_pause_ < every) return;
    last_pause_ = ops_;
    std::this_thread::sleep_for(std::chrono::microseconds(50 + rng_() % 200));
  }

  // --- consuming and returning like a receiver ---

  // Copies out what the producer published since my_head_, publishes the
  // new head and returns the descriptors.
  std::vector<fbuf::ipc::Descriptor> consume(std::size_t max) {
    std::vector<fbuf::ipc::Descriptor> out;
    const std::uint64_t tail = send_tail();
    if (tail < my_head_ || tail - my_head_ > sc_) {
      // This peer's own scribbling, or a head it lied about: follow the
      // producer again from where it is.
      my_head_ = tail;
      return out;
    }
    while (my_head_ < tail && out.size() < max) {
      fbuf::ipc::Descriptor d;
      std::memcpy(&d, send_slot(my_head_), sizeof d);
      out.push_back(d);
      ++my_head_;
    }
    put_send_head(my_head_);
    return out;
  }

  bool push_return(const fbuf::ipc::Descriptor& d) {
    const std::uint64_t head = ret_head();
    if (head > ret_tail_ || ret_tail_ - head >= rc_) return false;
    write_descriptor(ret_slot(ret_tail_), d);
    ++ret_tail_;
    put64(ring_.data() + ret_off() + offsetof(fbuf::ipc::RingIndices, tail), ret_tail_);
    return true;
  }

  void ring_bell() {
    auto* bell = reinterpret_cast<fbuf::detail::DoorbellHeader*>(bell_.data());
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (bell->waiters.load(std::memory_order_acquire) != 0) {
      bell->seq.fetch_add(1, std::memory_order_relaxed);
      count_op();
      fbuf::detail::futex_wake_all(&bell->seq);
    }
  }

  void give_back(const fbuf::ipc::Descriptor& d) {
    if (push_return(d)) {
      returned_.push_back(d);
      if (returned_.size() > 32) returned_.pop_front();
    }
  }

  // Puts the header and both indices back to values that look right.
  void restore() {
    using H = fbuf::ipc::ChannelHeader;
    std::byte* r = ring_.data();
    put64(r + offsetof(H, magic), fbuf::ipc::kChannelMagic);
    put32(r + offsetof(H, version), fbuf::ipc::kProtocolVersion);
    put32(r + offsetof(H, send_capacity), sc_);
    put32(r + offsetof(H, return_capacity), rc_);
    put_send_head(my_head_);
    put64(r + ret_off() + offsetof(fbuf::ipc::RingIndices, tail), ret_tail_);
  }

  // --- episodes ---

  unsigned pick_episode() {
    static constexpr std::pair<unsigned, unsigned> kWeights[] = {
        {kScribble, 30}, {kReturns, 30}, {kStall, 8}, {kDetach, 12}, {kCapacity, 6}, {kReconnect, 6}};
    unsigned total = 0;
    for (auto [a, w] : kWeights)
      if ((attacks_ & a) != 0) total += w;
    if (total == 0) return kReturns;  // nothing enabled: behave, and count
    unsigned pick = static_cast<unsigned>(rng_() % total);
    for (auto [a, w] : kWeights) {
      if ((attacks_ & a) == 0) continue;
      if (pick < w) return a;
      pick -= w;
    }
    return kReturns;
  }

  // Random words, random values, anywhere this peer can write.
  void scribble(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const Target& t = targets_[rng_() % targets_.size()];
      std::uint64_t v;
      if (t.kind == Kind::kSlotWord && rng_() % 2 == 0) {
        const fbuf::ipc::Descriptor d = forged_slot();
        std::uint64_t w[4];
        std::memcpy(w, &d, sizeof w);
        v = w[rng_() % 4];
      } else if (t.kind == Kind::kMagic && rng_() % 2 == 0) {
        v = t.width == 8 ? fbuf::ipc::kChannelMagic : fbuf::ipc::kProtocolVersion;
      } else {
        v = boundary();
      }
      if (t.width == 8) put64(t.at, v);
      else put32(t.at, static_cast<std::uint32_t>(v));
      pause_now_and_then(256);
    }
  }

  // A receiver that looks honest, mostly: consumes, returns what it got,
  // keeps a few, and slips forged returns in between.
  void returns_episode() {
    if (rng_() % 2 == 0) restore();
    const int rounds = 1 + static_cast<int>(rng_() % 20);
    for (int r = 0; r < rounds; ++r) {
      for (const auto& d : consume(64)) {
        if (kept_.size() < 8 && rng_() % 8 == 0) kept_.push_back(d);
        else give_back(d);
        if (rng_() % 3 == 0) push_return(forged_return());
      }
      if (!kept_.empty() && rng_() % 4 == 0) {
        give_back(kept_.front());
        kept_.erase(kept_.begin());
      }
      ring_bell();
      std::this_thread::sleep_for(std::chrono::microseconds(100 + rng_() % 400));
    }
  }

  // Well-behaved on the return side, but the published send-ring head is
  // impossible: ahead of the tail, or far behind it.
  void stall_episode(Clock::time_point until) {
    restore();
    while (Clock::now() < until) {
      for (const auto& d : consume(sc_)) give_back(d);
      ring_bell();
      const std::uint64_t t = send_tail();
      const std::uint64_t heads[] = {t + 1000, t + 1, t + sc_ + 1, std::uint64_t{1} << 63, ~std::uint64_t{0}};
      for (int i = 0; i < 32; ++i) put_send_head(heads[rng_() % std::size(heads)]);
      std::this_thread::sleep_for(std::chrono::microseconds(50 + rng_() % 100));
      if (hung_up()) {
        disconnect();
        return;
      }
    }
  }

  // Detach (shutdown for writing) with a full send ring, then keep
  // rewriting the slots the producer reads back to take home what was left
  // unconsumed: each slot flips between the descriptor really there (a
  // buffer lent to this peer), the descriptor of a neighbouring slot (lent
  // to this peer and, being recent, most likely still held by the honest
  // receivers), a stale generation, and buffers this peer gave back.
  void detach_episode() {
    restore();
    for (const auto& d : consume(sc_)) give_back(d);
    ring_bell();
    // Stop consuming and let the producer fill the ring.
    const auto fill_until = Clock::now() + 30ms;
    while (send_tail() - my_head_ < sc_ && Clock::now() < fill_until) std::this_thread::sleep_for(200us);
    const std::uint64_t tail = send_tail();
    if (tail <= my_head_ || tail - my_head_ > sc_) return;
    std::vector<fbuf::ipc::Descriptor> lent(tail - my_head_);
    for (std::size_t i = 0; i < lent.size(); ++i) std::memcpy(&lent[i], send_slot(my_head_ + i), sizeof lent[i]);
    ::shutdown(sock_.get(), SHUT_WR);
    const auto flip_until = Clock::now() + std::chrono::milliseconds(5 + rng_() % 30);
    const std::size_t n = lent.size();
    std::vector<std::uint64_t> real(2 * n), other(2 * n);
    std::uint64_t spin = 0;
    while (Clock::now() < flip_until) {
      // Every slot shows the other descriptor half of the time, so a
      // change can land between any two reads the producer makes.
      for (std::size_t i = 0; i < n; ++i) {
        const fbuf::ipc::Descriptor& x = lent[i];
        fbuf::ipc::Descriptor y;
        switch ((spin + i) % 4) {
          case 0:
          case 1: y = lent[(i + 1 + spin) % n]; break;
          case 2: y = x; y.generation += 1; break;
          default: y = returned_.empty() ? lent[(i + n - 1) % n] : returned_[(i + spin) % returned_.size()];
        }
        std::memcpy(&real[2 * i], &x, 16);
        std::memcpy(&other[2 * i], &y, 16);
      }
      for (int rep = 0; rep < 16; ++rep) {
        put_send_head(my_head_);
        for (const auto* words : {&other, &real}) {
          for (std::size_t i = 0; i < n; ++i) {
            std::byte* slot = send_slot(my_head_ + i);
            put64(slot, (*words)[2 * i]);
            put64(slot + 8, (*words)[2 * i + 1]);
          }
        }
      }
      ++spin;
    }
    // Half-closed: keep writing for a while, then start over (the producer
    // detaches a connection once).
    scribble(rng_() % 4096);
    disconnect();
  }

  // Capacities in the header, mid-stream: the producer must never read
  // them back.
  void capacity_episode() {
    using H = fbuf::ipc::ChannelHeader;
    const std::uint32_t values[] = {0, 1, sc_ - 1, sc_ + 1, 2 * sc_, 1u << 31, ~0u};
    for (int i = 0; i < 64; ++i) {
      put32(ring_.data() + offsetof(H, send_capacity), values[rng_() % std::size(values)]);
      put32(ring_.data() + offsetof(H, return_capacity), values[rng_() % std::size(values)]);
    }
    for (const auto& d : consume(64)) give_back(d);
    ring_bell();
    std::this_thread::sleep_for(std::chrono::microseconds(100 + rng_() % 400));
  }

  std::string service_;
  std::atomic<std::uint64_t>* ops_total_;
  std::mt19937_64 rng_;
  bool stall_role_;
  unsigned attacks_;

  UniqueFd sock_;
  fbuf::ipc::WelcomeInfo info_;
  Mapping ring_, bell_;
  bool connected_ = false;
  bool raced_capacity_ = false;
  std::uint32_t sc_ = 0, rc_ = 0, buffers_ = 0;
  std::uint64_t my_head_ = 0;   // how far this peer really consumed
  std::uint64_t ret_tail_ = 0;  // how many returns it really published
  std::vector<fbuf::ipc::Descriptor> kept_;       // received and not given back
  std::deque<fbuf::ipc::Descriptor> returned_;    // given back recently
  std::vector<Target> targets_;
  std::uint64_t pending_ops_ = 0;  // not yet added to *ops_total_
  std::uint64_t ops_ = 0;
  std::uint64_t last_pause_ = 0;
};

int hostile(const char* service, int ops_fd, std::uint64_t seed, std::string_view role, std::string_view attacks) {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ops_fd, 0);
  if (p == MAP_FAILED) return 2;
  ::close(ops_fd);
  Hostile h(service, static_cast<std::atomic<std::uint64_t>*>(p), seed, role == "stall", parse_attacks(attacks));
  return h.run();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "produce" && argc == 6)
      return produce(argv[2], std::atol(argv[3]), std::atol(argv[4]),
                     static_cast<std::uint32_t>(std::strtoul(argv[5], nullptr, 10)));
    if (mode == "honest" && argc == 4) return honest(argv[2], std::strtoul(argv[3], nullptr, 10));
    if (mode == "hostile" && argc == 7)
      return hostile(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10), argv[5], argv[6]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chaos_peer: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "usage: chaos_peer produce|honest|hostile ... (see chaos_peer.cc)\n");
  return 2;
}

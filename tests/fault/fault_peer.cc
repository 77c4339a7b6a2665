// The other process in the fault tests. Modes:
//   consume SERVICE [HOLD]      receive until the sender is gone, checking
//                               every frame and that sequence numbers run
//                               on without gaps; keep the last HOLD views.
//                               Prints "ready" once connected and, at the
//                               end, "received N last S".
//   produce SERVICE COUNTER_FD  stream frames forever to whoever connects;
//                               after each send completes, store the count
//                               of completed sends in the shared 8-byte
//                               word mapped from COUNTER_FD.
//   reconnect SERVICE ROUNDS    ROUNDS times: connect (waiting for the
//                               service to appear), receive until the
//                               sender is gone; prints "round R received N".
// Exit status: 0 on success, 3 for a torn frame, 4 for a gap or duplicate,
// 5 for any other receive error, 2 for a setup failure.
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>

#include "fbuf/fbuf.h"
#include "frame.h"

using namespace std::chrono_literals;

namespace {

struct Tally {
  std::uint64_t received = 0;
  std::uint64_t last = 0;
};

// Receives until kPeerGone. Returns an exit status.
int drain(fbuf::Receiver& rx, std::size_t hold, Tally& t) {
  std::deque<fbuf::View> held;
  bool first = true;
  for (;;) {
    auto v = rx.receive(30s);
    if (!v) {
      if (v.error() == fbuf::make_error_code(fbuf::Errc::kPeerGone)) return 0;
      std::fprintf(stderr, "fault_peer: receive: %s\n", v.error().message().c_str());
      return 5;
    }
    std::uint64_t seq = 0;
    if (!fbuf::test::check_frame(v->data(), v->size(), &seq)) {
      std::fprintf(stderr, "fault_peer: torn frame after seq %llu\n", static_cast<unsigned long long>(t.last));
      return 3;
    }
    if (!first && seq != t.last + 1) {
      std::fprintf(stderr, "fault_peer: seq %llu after %llu\n", static_cast<unsigned long long>(seq),
                   static_cast<unsigned long long>(t.last));
      return 4;
    }
    first = false;
    t.last = seq;
    ++t.received;
    if (hold > 0) {
      held.push_back(std::move(*v));
      if (held.size() > hold) held.pop_front();
    }
  }
}

int consume(const char* service, std::size_t hold) {
  fbuf::Receiver rx = fbuf::Receiver::connect(service, {.connect_timeout = 10s});
  std::printf("ready\n");
  std::fflush(stdout);
  Tally t;
  int rc = drain(rx, hold, t);
  std::printf("received %llu last %llu\n", static_cast<unsigned long long>(t.received),
              static_cast<unsigned long long>(t.last));
  return rc;
}

int produce(const char* service, int counter_fd) {
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, counter_fd, 0);
  if (p == MAP_FAILED) return 2;
  auto* completed = static_cast<std::atomic<std::uint64_t>*>(p);
  fbuf::Pool pool(fbuf::PoolOptions{.name = "fault-producer", .classes = {{4096, 32}, {65536, 8}}});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 10s)) return 2;
  for (std::uint64_t seq = 0;; ++seq) {
    const std::size_t len = fbuf::test::frame_length(seq, seq % 8 == 0 ? 65536 : 4096);
    auto b = tx.allocate(len, 10s);
    if (!b) return 5;
    fbuf::test::fill_frame(b->data(), len, seq);
    if (tx.send(std::move(*b), len, 10s)) return 5;
    // release: the count is read by the test after the kill; it only
    // needs to be a lower bound of what was sent.
    completed->store(seq + 1, std::memory_order_release);
  }
}

int reconnect(const char* service, int rounds) {
  for (int r = 0; r < rounds; ++r) {
    fbuf::Receiver rx = fbuf::Receiver::connect(service, {.connect_timeout = 10s});
    Tally t;
    if (int rc = drain(rx, 0, t); rc != 0) return rc;
    std::printf("round %d received %llu\n", r, static_cast<unsigned long long>(t.received));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fault_peer consume|produce|reconnect SERVICE [ARG]\n");
    return 2;
  }
  try {
    std::string mode = argv[1];
    if (mode == "consume") return consume(argv[2], argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 0);
    if (mode == "produce" && argc > 3) return produce(argv[2], std::atoi(argv[3]));
    if (mode == "reconnect" && argc > 3) return reconnect(argv[2], std::atoi(argv[3]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fault_peer: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "fault_peer: bad arguments\n");
  return 2;
}

// fbuf_epoll_loop: one consumer, several producer processes and a timer in
// one epoll loop. Each producer is a "sensor" process publishing readings
// at its own pace on its own service; the consumer registers each
// Receiver's readiness fd (Receiver::fd()) and a timerfd in one epoll set,
// receives whatever is ready, and prints a status line at every tick.
//
//   fbuf_epoll_loop [--producers N] [--count M]
//
// The consumer starts the N producers itself (this program, re-executed as
// `fbuf_epoll_loop produce SERVICE ID COUNT`). At the end it prints what it
// received per producer, and "epoll_loop: OK ..." only if every reading
// arrived, in order, intact, and every stream ended; otherwise it exits 1.
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

// One sensor reading, as it lies in a pool buffer.
struct Reading {
  std::uint32_t producer;
  std::uint32_t pad;
  std::uint64_t sequence;
  double value;
  std::uint64_t check;  // sequence * 31 + producer, to catch a mixed-up buffer
};

std::uint64_t check_of(std::uint32_t producer, std::uint64_t sequence) { return sequence * 31 + producer; }

std::string service_for(std::uint32_t id) {
  return "examples/epoll/" + std::to_string(::getpid()) + "/" + std::to_string(id);
}

// A producer process: COUNT readings in bursts, at a pace of its own
// (producer i pauses (i + 1) * 100 us between bursts), then it closes,
// which ends its stream.
int produce(const std::string& service, std::uint32_t id, std::uint64_t count) {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "sensor", .classes = {{4096, 32}}});
  fbuf::Sender tx(pool, service);
  if (!tx.wait_for_receivers(1, 10s)) {
    std::fprintf(stderr, "producer %u: no receiver came\n", id);
    return 1;
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    auto b = tx.allocate(sizeof(Reading), 5s);
    if (!b) {
      std::fprintf(stderr, "producer %u: allocate: %s\n", id, b.error().message().c_str());
      return 1;
    }
    const Reading r{id, 0, i, 20.0 + static_cast<double>(i % 100) / 10.0, check_of(id, i)};
    std::memcpy(b->data(), &r, sizeof r);
    if (auto ec = tx.send(std::move(*b), sizeof r, 5s); ec) {
      std::fprintf(stderr, "producer %u: send: %s\n", id, ec.message().c_str());
      return 1;
    }
    if (i % 8 == 7) std::this_thread::sleep_for(std::chrono::microseconds(100 * (id + 1)));
  }
  // The consumer takes everything before the stream ends; wait until it
  // did, so it sees every reading (the Receiver would be handed back what
  // it had not taken).
  return 0;
}

struct Stream {
  fbuf::Receiver rx;
  std::uint64_t received = 0;
  double sum = 0;
  bool ended = false;
  std::string problem;
};

int consume(std::uint32_t producers, std::uint64_t count) {
  // Start the producers.
  std::vector<pid_t> pids;
  for (std::uint32_t id = 0; id < producers; ++id) {
    const std::string service = service_for(id), ids = std::to_string(id), counts = std::to_string(count);
    char self[] = "/proc/self/exe";
    char mode[] = "produce";
    char* argv[] = {self, mode, const_cast<char*>(service.c_str()), const_cast<char*>(ids.c_str()),
                    const_cast<char*>(counts.c_str()), nullptr};
    pid_t pid;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, environ) != 0) {
      std::perror("posix_spawn");
      return 1;
    }
    pids.push_back(pid);
  }

  // One epoll set: every receiver's readiness fd, and a timer.
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Stream> streams(producers);
  for (std::uint32_t id = 0; id < producers; ++id) {
    streams[id].rx = fbuf::Receiver::connect(service_for(id), {.connect_timeout = 10s});
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = id;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, streams[id].rx.fd(), &ev);
  }
  const int timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  const itimerspec every{{0, 100'000'000}, {0, 100'000'000}};  // 100 ms
  ::timerfd_settime(timer, 0, &every, nullptr);
  constexpr std::uint32_t kTimer = ~0u;
  epoll_event tev{};
  tev.events = EPOLLIN;
  tev.data.u32 = kTimer;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, timer, &tev);

  // Takes what `s` has until it would block; true once its stream ended.
  auto drain = [&](std::uint32_t id) {
    Stream& s = streams[id];
    for (;;) {
      auto v = s.rx.try_receive();
      if (!v) {
        if (v.error() == fbuf::make_error_code(fbuf::Errc::kWouldBlock)) return;
        if (v.error() != fbuf::make_error_code(fbuf::Errc::kPeerGone)) s.problem = v.error().message();
        s.ended = true;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, s.rx.fd(), nullptr);
        return;
      }
      Reading r;
      if (v->size() != sizeof r) {
        s.problem = "a reading of " + std::to_string(v->size()) + " bytes";
        continue;
      }
      std::memcpy(&r, v->data(), sizeof r);
      if (r.producer != id || r.sequence != s.received || r.check != check_of(id, r.sequence)) {
        if (s.problem.empty()) s.problem = "reading " + std::to_string(s.received) + " is wrong";
      }
      s.sum += r.value;
      ++s.received;
    }
  };

  std::uint32_t open = producers;
  std::uint64_t ticks = 0;
  const auto start = std::chrono::steady_clock::now();
  while (open != 0) {
    // Before sleeping, arm every open receiver; one that refuses has
    // something waiting: take it, and look again without sleeping.
    bool sleep = true;
    for (std::uint32_t id = 0; id < producers; ++id) {
      if (!streams[id].ended && !streams[id].rx.arm()) {
        drain(id);
        sleep = false;
      }
    }
    open = 0;
    for (const Stream& s : streams) open += s.ended ? 0 : 1;
    if (!sleep || open == 0) continue;
    epoll_event events[16];
    const int n = ::epoll_wait(ep, events, 16, 5000);
    if (n == 0) {
      std::fprintf(stderr, "epoll_loop: nothing for 5 s\n");
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u32 == kTimer) {
        std::uint64_t expirations;
        if (::read(timer, &expirations, sizeof expirations) == sizeof expirations) ticks += expirations;
        std::printf("tick %" PRIu64 ":", ticks);
        for (std::uint32_t id = 0; id < producers; ++id) std::printf(" [%u] %" PRIu64, id, streams[id].received);
        std::printf("\n");
      } else if (events[i].data.u32 < producers) {
        drain(events[i].data.u32);
      }
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  bool ok = true;
  for (std::uint32_t id = 0; id < producers; ++id) {
    int status = 0;
    ::waitpid(pids[id], &status, 0);
    const Stream& s = streams[id];
    const bool good = s.ended && s.problem.empty() && s.received == count && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0;
    std::printf("producer %u: %" PRIu64 " readings, mean %.2f, %s%s\n", id, s.received,
                s.received != 0 ? s.sum / static_cast<double>(s.received) : 0.0, good ? "in order, stream ended" : "FAILED: ",
                good ? "" : (s.problem.empty() ? "incomplete" : s.problem.c_str()));
    ok = ok && good;
  }
  ::close(timer);
  ::close(ep);
  if (!ok) return 1;
  std::printf("epoll_loop: OK %u producers, %" PRIu64 " readings, %" PRIu64 " timer ticks, %.2f s\n", producers,
              count * producers, ticks, seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 5 && std::string_view(argv[1]) == "produce")
      return produce(argv[2], static_cast<std::uint32_t>(std::strtoul(argv[3], nullptr, 10)),
                     std::strtoull(argv[4], nullptr, 10));
    std::uint32_t producers = 3;
    std::uint64_t count = 5000;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string_view a = argv[i];
      if (a == "--producers") producers = static_cast<std::uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
      else if (a == "--count") count = std::strtoull(argv[i + 1], nullptr, 10);
      else {
        std::fprintf(stderr, "usage: fbuf_epoll_loop [--producers N] [--count M]\n");
        return 2;
      }
    }
    if (producers == 0 || producers > 16) {
      std::fprintf(stderr, "fbuf_epoll_loop: --producers must be 1..16\n");
      return 2;
    }
    return consume(producers, count);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fbuf_epoll_loop: %s\n", e.what());
    return 1;
  }
}

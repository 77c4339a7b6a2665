// The monitoring request (ipc/monitor.h) as hostile parties see it: clients
// that send garbage, truncated, oversized or wrong-version requests to a
// service with a live stream (each must be refused with a Reject, counted,
// and leave the stream alone), clients of another user, clients that try
// to hold the listener's pending slots, and services that answer with
// lies (the client must refuse them with an Error, never crash).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/base/fd.h"
#include "fbuf/fbuf.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"
#include "ipc/monitor.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using detail::UniqueFd;

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds within = 20000ms) {
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return p();
}

kj::Array<capnp::word> request_words(std::uint32_t version = ipc::kMonitorVersion) {
  capnp::MallocMessageBuilder m;
  m.initRoot<ipc::proto::ControlMessage>().initMonitorRequest().setVersion(version);
  return capnp::messageToFlatArray(m);
}

// Sends `bytes` (and `fds`) as one datagram on a new connection and returns
// what the service answered: "" for a MonitorReply, else the error the
// client reads from its answer (a Reject's reason).
std::string send_raw(const std::string& service, const void* bytes, std::size_t size, std::vector<int> fds = {}) {
  UniqueFd sock = ipc::connect_service(service, 5s);
  iovec iov{const_cast<void*>(bytes), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (::sendmsg(sock.get(), &msg, MSG_NOSIGNAL) < 0) return std::string("sendmsg: ") + std::strerror(errno);
  ipc::Datagram dg;
  if (auto ec = ipc::receive_message(sock.get(), dg, 5s); ec) return "no answer: " + ec.message();
  try {
    (void)ipc::decode_monitor_reply(dg.words);
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

std::string send_words(const std::string& service, const kj::Array<capnp::word>& words, std::vector<int> fds = {}) {
  auto bytes = words.asBytes();
  return send_raw(service, bytes.begin(), bytes.size(), std::move(fds));
}

TEST(Monitor, HostileRequestsAreRefusedCountedAndLeaveTheStreamAlone) {
  const std::string service = unique_service("monitor-hostile");
  Child producer(FBUF_IT_PEER, {"stream", "--service", service, "--hz", "500"});
  ASSERT_TRUE(producer.wait_for_output("listening on", 20s)) << producer.output();
  Child sink(FBUF_IT_PEER, {"sink", "--service", service});
  ASSERT_TRUE(sink.wait_for_output("connected", 20s)) << sink.output();

  const ipc::MonitorInfo before = ipc::query_monitor(service, 5s);
  ASSERT_EQ(before.receivers.size(), 1u);
  EXPECT_EQ(before.owner_pid, static_cast<std::uint32_t>(producer.pid()));
  EXPECT_EQ(before.receivers[0].pid, static_cast<std::uint32_t>(sink.pid()));

  std::vector<std::string> answers;
  // Truncated: the first word of a request (its segment table) alone.
  const auto good = request_words();
  answers.push_back(send_raw(service, good.begin(), 8));
  // Not a whole number of words.
  answers.push_back(send_raw(service, good.begin(), good.asBytes().size() - 3));
  // Oversized: larger than any control message (MSG_TRUNC).
  std::vector<char> huge(ipc::kMaxControlBytes + 4096, 'x');
  answers.push_back(send_raw(service, huge.data(), huge.size()));
  // Garbage words.
  std::vector<std::uint64_t> garbage(16, ~std::uint64_t{0});
  answers.push_back(send_raw(service, garbage.data(), garbage.size() * 8));
  // Another version of the monitoring protocol.
  answers.push_back(send_words(service, request_words(ipc::kMonitorVersion + 98)));
  // A request with an fd attached.
  answers.push_back(send_words(service, good, {STDIN_FILENO}));
  // A union member this side does not know (as an older sender sees a
  // MonitorRequest): the ControlMessage's discriminant, the first two
  // bytes of its data section (after the segment table and the root
  // pointer), set to 9.
  auto unknown = request_words();
  std::uint16_t which = 9;
  std::memcpy(unknown.asBytes().begin() + 16, &which, sizeof which);
  {
    capnp::FlatArrayMessageReader check(unknown);
    ASSERT_EQ(static_cast<std::uint16_t>(check.getRoot<ipc::proto::ControlMessage>().which()), 9u);
  }
  answers.push_back(send_words(service, unknown));
  // A reply where a request belongs.
  {
    capnp::MallocMessageBuilder m;
    ipc::build_monitor_reply(m, before);
    answers.push_back(send_words(service, capnp::messageToFlatArray(m)));
  }
  for (const std::string& a : answers) EXPECT_NE(a.find("refused the monitoring request"), std::string::npos) << a;
  EXPECT_NE(answers[4].find("MonitorRequest version 99"), std::string::npos) << answers[4];
  EXPECT_NE(answers[5].find("carried fds"), std::string::npos) << answers[5];
  EXPECT_NE(answers[6].find("expected Hello or MonitorRequest"), std::string::npos) << answers[6];

  // Each counted once: a refusal is counted before its Reject goes out
  // (Listener::reject()), so before send_raw() read it. The stream went
  // on: asked until the sink has had 50 more frames (not after a fixed
  // sleep, which a loaded machine's producer need not fill), every ask a
  // monitoring request of its own; nobody was lost.
  ipc::MonitorInfo after;
  std::uint64_t asked = 0;
  EXPECT_TRUE(eventually([&] {
    after = ipc::query_monitor(service, 5s);
    ++asked;
    return after.receivers.size() != 1 || after.receivers[0].delivered > before.receivers[0].delivered + 50;
  })) << "the stream stalled at " << after.receivers[0].delivered << " frames delivered";
  EXPECT_EQ(after.stats.rejected_handshakes, before.stats.rejected_handshakes + answers.size());
  EXPECT_EQ(after.stats.receivers_lost, 0u);
  ASSERT_EQ(after.receivers.size(), 1u);
  EXPECT_EQ(after.receivers[0].pid, static_cast<std::uint32_t>(sink.pid()));
  EXPECT_GT(after.receivers[0].delivered, before.receivers[0].delivered + 50);
  EXPECT_EQ(after.monitor_requests, before.monitor_requests + asked);
  EXPECT_EQ(after.stats.dropped, 0u);

  // The sink gets every frame to the end of the stream.
  producer.kill(SIGTERM);
  EXPECT_TRUE(producer.wait(10s).killed_by(SIGTERM));
  ASSERT_TRUE(sink.wait(20s).exited_with(0)) << sink.output();
  EXPECT_NE(sink.output().find("sink ok"), std::string::npos);
}

TEST(Monitor, CountsTowardThePendingLimits) {
  const std::string service = unique_service("monitor-pending");
  Pool pool(PoolOptions{.name = "monitor-pending", .classes = {{4096, 4}}});
  Sender tx(pool, service);
  // Four connections of this process that say nothing take all its
  // pending slots: a monitoring request from it is refused like a Hello.
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(ipc::connect_service(service, 5s));
  try {
    (void)ipc::query_monitor(service, 5s);
    ADD_FAILURE() << "a fifth pending connection of one process was answered";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too many pending handshakes"), std::string::npos) << e.what();
  }
  idle.clear();
  // Once they are gone (the control thread sees the hang-ups), it is answered.
  const auto deadline = Clock::now() + 10s;
  for (;;) {
    try {
      const ipc::MonitorInfo info = ipc::query_monitor(service, 5s);
      EXPECT_EQ(info.service, service);
      break;
    } catch (const Error& e) {
      ASSERT_LT(Clock::now(), deadline) << e.what();
      std::this_thread::sleep_for(10ms);
    }
  }
}

TEST(Monitor, InProcessReceiversAreListed) {
  const std::string service = unique_service("monitor-local");
  // Sealed copies off: the buffers sent stay in flight in their class.
  Pool pool(PoolOptions{.name = "monitor-local", .classes = {{4096, 8}, {65536, 2}}, .policy = Policy::kReadOnly,
                        .sealed_copies = SealedCopies::kNever});
  Sender tx(pool, service, SenderOptions{.ring_capacity = 16, .slow_receiver = SlowReceiverPolicy::kSkip,
                                         .receiver_budget = 3});
  Receiver rx = tx.connect_local();
  for (int i = 0; i < 2; ++i) {
    Result<Buffer> b = tx.allocate(100, 1s);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.send(std::move(*b), 100, 1s));
  }
  Result<View> v = rx.receive(1s);
  ASSERT_TRUE(v);
  const ipc::MonitorInfo info = ipc::query_monitor(service, 5s);
  EXPECT_EQ(info.owner_pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(info.pool_name, "monitor-local");
  EXPECT_EQ(info.policy, Policy::kReadOnly);
  ASSERT_EQ(info.classes.size(), 2u);
  EXPECT_EQ(info.classes[0].count, 8u);
  EXPECT_EQ(info.classes[0].free, 6u);
  EXPECT_EQ(info.classes[1].free, 2u);
  EXPECT_EQ(info.slow_policy, SlowReceiverPolicy::kSkip);
  EXPECT_EQ(info.receiver_budget, 3u);
  EXPECT_EQ(info.ring_capacity, 16u);
  EXPECT_EQ(info.stats.sent, 2u);
  ASSERT_EQ(info.receivers.size(), 1u);
  const ipc::MonitorReceiver& r = info.receivers[0];
  EXPECT_TRUE(r.local);
  EXPECT_EQ(r.pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(r.held, 1u);  // counted: the receiver has a budget
  EXPECT_EQ(r.queued, 1u);
  EXPECT_EQ(r.ring_capacity, 16u);
  EXPECT_EQ(r.delivered, 2u);
  const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_LE(r.connected_since_ns, now_ns);
  EXPECT_GT(r.connected_since_ns, now_ns - std::int64_t{60'000'000'000});
}

TEST(Monitor, AnotherUserIsRefusedUnlessAllowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  for (bool allow : {false, true}) {
    const std::string service = unique_service(allow ? "monitor-other-allowed" : "monitor-other");
    // A child that becomes `nobody` and asks (connect retries until the
    // sender below listens); forked before the sender's control thread
    // exists. Exit status: 0 answered, 1 refused as another user, 2
    // anything else.
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
      try {
        const ipc::MonitorInfo info = ipc::query_monitor(service, 10s);
        ::_exit(info.service == service ? 0 : 2);
      } catch (const Error& e) {
        ::_exit(std::string(e.what()).find("may not connect") != std::string::npos ? 1 : 2);
      } catch (...) {
        ::_exit(2);
      }
    }
    Pool pool(PoolOptions{.name = "monitor-other", .classes = {{4096, 4}}});
    Sender tx(pool, service, SenderOptions{.allow_other_users = allow});
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), allow ? 0 : 1) << (allow ? "allowed" : "refused");
    if (!allow) {
      EXPECT_EQ(tx.stats().rejected_handshakes, 1u);
    }
  }
}

// A service that answers every request with `reply` (and `fds`).
class LyingService {
 public:
  LyingService(const std::string& service, std::function<void(int)> answer)
      : listen_(ipc::listen_service(service)), answer_(std::move(answer)) {
    thread_ = std::thread([this] {
      while (!stop_.load(std::memory_order_relaxed)) {  // relaxed: a stop flag, nothing published with it
        UniqueFd peer(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!peer) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        ipc::Datagram dg;
        (void)ipc::receive_message(peer.get(), dg, 1s);
        answer_(peer.get());
      }
    });
  }
  ~LyingService() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }

 private:
  UniqueFd listen_;
  std::function<void(int)> answer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

ipc::MonitorInfo honest() {
  ipc::MonitorInfo info;
  info.service = "liar";
  info.pool_name = "pool";
  info.classes = {{4096, 4, 2}};
  info.ring_capacity = 16;
  return info;
}

// An honest reply of a read_only pool with sealed copies for its 4 KiB
// class: 4 sealed slots, 1 free and 2 in flight; 10 copies, 3 fallbacks.
ipc::MonitorInfo honest_sealed() {
  ipc::MonitorInfo info = honest();
  info.policy = Policy::kReadOnly;
  info.classes = {{4096, 4, 2, true, 1}, {65536, 2, 1}};
  info.sealed_copy_size = 4096;
  info.sealed_total = 4;
  info.sealed_free = 1;
  info.sealed_in_flight = 2;
  info.sealed_copies = 10;
  info.sealed_fallbacks = 3;
  return info;
}

TEST(Monitor, LyingRepliesAreRefusedByTheClient) {
  struct Lie {
    const char* what;
    std::function<void(capnp::MessageBuilder&)> build;
    const char* expect;
  };
  auto reply = [](std::function<void(ipc::proto::MonitorReply::Builder)> edit) {
    return [edit](capnp::MessageBuilder& m) {
      ipc::build_monitor_reply(m, honest());
      edit(m.getRoot<ipc::proto::ControlMessage>().getMonitorReply());
    };
  };
  auto sealed_reply = [](std::function<void(ipc::proto::MonitorReply::Builder)> edit) {
    return [edit](capnp::MessageBuilder& m) {
      ipc::build_monitor_reply(m, honest_sealed());
      edit(m.getRoot<ipc::proto::ControlMessage>().getMonitorReply());
    };
  };
  const std::vector<Lie> lies = {
      {"another version", reply([](auto r) { r.setVersion(7); }), "MonitorReply version 7"},
      // The sealed-copy state, each lie alone in an otherwise honest reply.
      {"more sealed slots free than the class has",
       sealed_reply([](auto r) { r.getClasses()[0].setSealedFree(5); }), "5 of 4 sealed slots free"},
      {"sealed slots free in a class without",
       sealed_reply([](auto r) { r.getClasses()[1].setSealedFree(1); }), "1 of 0 sealed slots free"},
      {"a copy size no sealed class has", sealed_reply([](auto r) { r.setSealedCopySize(8192); }),
       "sealed copies up to 8192 bytes, but the largest sealed class holds 4096"},
      {"a copy size without sealed classes", reply([](auto r) { r.setSealedCopySize(4096); }),
       "sealed copies up to 4096 bytes, but the largest sealed class holds 0"},
      {"more sealed slots than the sealed classes", sealed_reply([](auto r) { r.setSealedTotal(5); }),
       "5 sealed slots, but the sealed classes have 4"},
      {"sealed slots without a sealed class", reply([](auto r) { r.setSealedTotal(4); }),
       "4 sealed slots, but the sealed classes have 0"},
      {"a free count the classes do not add up to", sealed_reply([](auto r) { r.setSealedFree(0); }),
       "0 sealed slots free, but the sealed classes have 1"},
      {"more free and in flight than slots", sealed_reply([](auto r) { r.setSealedInFlight(4); }),
       "1 free and 4 in flight of 4"},
      {"more in flight than copies made", sealed_reply([](auto r) { r.setSealedCopies(1); }),
       "2 sealed copies in flight, but 1 made"},
      {"copies without sealed slots", reply([](auto r) { r.setSealedCopies(3); }), "without sealed slots"},
      {"fallbacks without sealed slots", reply([](auto r) { r.setSealedFallbacks(1); }), "without sealed slots"},
      {"a volatile pool with sealed classes", sealed_reply([](auto r) { r.setPolicy(0); }),
       "a volatile pool with sealed classes"},
      {"too many receivers", reply([](auto r) { r.initReceivers(ipc::kMaxMonitorReceivers + 1); }),
       "lists 257 receivers"},
      {"a long pool name", reply([](auto r) { r.setPoolName(std::string(1000, 'p')); }), "pool name longer"},
      {"a long service name", reply([](auto r) { r.setService(std::string(200, 's')); }), "service name longer"},
      {"more free than buffers",
       reply([](auto r) {
         auto c = r.initClasses(1);
         c[0].setCount(4);
         c[0].setFree(5);
       }),
       "5 of 4 free"},
      {"too many classes", reply([](auto r) { r.initClasses(65); }), "65 size classes"},
      {"more queued than the ring holds",
       reply([](auto r) {
         auto x = r.initReceivers(1);
         x[0].setRingCapacity(16);
         x[0].setQueued(17);
       }),
       "17 of 16 queued"},
      {"an unknown policy", reply([](auto r) { r.setPolicy(9); }), "unknown policy 9"},
      {"an unknown slow-receiver policy", reply([](auto r) { r.setSlowPolicy(4); }), "slow-receiver policy 4"},
      {"a Hello", [](capnp::MessageBuilder& m) { ipc::build_hello(m, ipc::HelloInfo{}); }, "expected MonitorReply"},
  };
  for (const Lie& lie : lies) {
    const std::string service = unique_service("monitor-liar");
    LyingService liar(service, [&](int fd) {
      capnp::MallocMessageBuilder m;
      lie.build(m);
      (void)ipc::send_message(fd, m, {});
    });
    try {
      (void)ipc::query_monitor(service, 5s);
      ADD_FAILURE() << lie.what << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(lie.expect), std::string::npos) << lie.what << ": " << e.what();
    }
  }
  // Bytes that are no message, a reply with an fd, and silence.
  const std::vector<std::pair<const char*, std::function<void(int)>>> others = {
      {"garbage",
       [](int fd) {
         const std::uint64_t junk[4] = {~0ull, ~0ull, ~0ull, ~0ull};
         (void)::send(fd, junk, sizeof junk, MSG_NOSIGNAL);
       }},
      {"an fd",
       [](int fd) {
         capnp::MallocMessageBuilder m;
         ipc::build_monitor_reply(m, honest());
         const int fds[1] = {STDIN_FILENO};
         (void)ipc::send_message(fd, m, fds);
       }},
      {"silence", [](int) { std::this_thread::sleep_for(600ms); }},
  };
  for (const auto& [what, answer] : others) {
    const std::string service = unique_service("monitor-liar");
    LyingService liar(service, answer);
    try {
      (void)ipc::query_monitor(service, 300ms);
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      SUCCEED() << what << ": " << e.what();
    }
  }
  // And the honest answer is taken, for contrast.
  const std::string service = unique_service("monitor-honest");
  LyingService truthful(service, [](int fd) {
    capnp::MallocMessageBuilder m;
    ipc::build_monitor_reply(m, honest());
    (void)ipc::send_message(fd, m, {});
  });
  EXPECT_EQ(ipc::query_monitor(service, 5s).pool_name, "pool");
}

TEST(Monitor, SealedCopiesTravelAndAReplyWithoutThemMeansNone) {
  // Every sealed field arrives as sent.
  {
    const std::string service = unique_service("monitor-sealed");
    LyingService truthful(service, [](int fd) {
      capnp::MallocMessageBuilder m;
      ipc::build_monitor_reply(m, honest_sealed());
      (void)ipc::send_message(fd, m, {});
    });
    const ipc::MonitorInfo got = ipc::query_monitor(service, 5s);
    const ipc::MonitorInfo want = honest_sealed();
    EXPECT_EQ(got.policy, Policy::kReadOnly);
    ASSERT_EQ(got.classes.size(), 2u);
    EXPECT_TRUE(got.classes[0].sealed);
    EXPECT_EQ(got.classes[0].sealed_free, 1u);
    EXPECT_FALSE(got.classes[1].sealed);
    EXPECT_EQ(got.classes[1].sealed_free, 0u);
    EXPECT_EQ(got.sealed_copy_size, want.sealed_copy_size);
    EXPECT_EQ(got.sealed_total, want.sealed_total);
    EXPECT_EQ(got.sealed_free, want.sealed_free);
    EXPECT_EQ(got.sealed_in_flight, want.sealed_in_flight);
    EXPECT_EQ(got.sealed_copies, want.sealed_copies);
    EXPECT_EQ(got.sealed_fallbacks, want.sealed_fallbacks);
  }
  // A reply as a sender before these fields wrote it (a protected pool,
  // none of them set) decodes, with none.
  {
    const std::string service = unique_service("monitor-older");
    LyingService older(service, [](int fd) {
      capnp::MallocMessageBuilder m;
      ipc::MonitorInfo info = honest();
      info.policy = Policy::kReadOnly;
      auto r = m.initRoot<ipc::proto::ControlMessage>().initMonitorReply();
      r.setVersion(ipc::kMonitorVersion);
      r.setService(info.service);
      r.setPoolName(info.pool_name);
      r.setPolicy(static_cast<std::uint8_t>(info.policy));
      auto classes = r.initClasses(1);
      classes[0].setBufferSize(4096);
      classes[0].setCount(4);
      classes[0].setFree(2);
      r.setRingCapacity(16);
      (void)ipc::send_message(fd, m, {});
    });
    const ipc::MonitorInfo got = ipc::query_monitor(service, 5s);
    ASSERT_EQ(got.classes.size(), 1u);
    EXPECT_FALSE(got.classes[0].sealed);
    EXPECT_EQ(got.sealed_copy_size, 0u);
    EXPECT_EQ(got.sealed_total, 0u);
    EXPECT_EQ(got.sealed_free + got.sealed_in_flight, 0u);
    EXPECT_EQ(got.sealed_copies + got.sealed_fallbacks, 0u);
  }
}

// A live read_only Sender with sealed copies up to 4 KiB answers with the
// counters its pool's stats() reports, in-process receivers holding the
// copies (the multi-process case is cli_test's).
TEST(Monitor, ALiveSenderReportsItsSealedCopies) {
  const std::string service = unique_service("monitor-sealed-live");
  Pool pool(PoolOptions{.name = "sealed",
                        .classes = {{4096, 2}, {65536, 1}},
                        .policy = Policy::kReadOnly,
                        .sealed_copies = SealedCopies::kUpTo,
                        .sealed_copy_limit = 4096});
  ASSERT_EQ(pool.sealed_copy_size(), 4096u);
  Sender sender(pool, service);
  Receiver rx = sender.connect_local();
  // Three small sends: two copies, then a fallback (both slots in flight);
  // one big send, protected.
  std::vector<View> held;
  for (std::size_t size : {100, 200, 300, 5000}) {
    Result<Buffer> b = pool.allocate(size, 5s);
    ASSERT_TRUE(b) << b.error().message();
    ASSERT_FALSE(sender.send(std::move(*b), size, 5s));
    Result<View> v = rx.receive(5s);
    ASSERT_TRUE(v) << v.error().message();
    held.push_back(std::move(*v));
  }
  const PoolStats st = pool.stats();
  EXPECT_EQ(st.sealed_copies, 2u);
  EXPECT_EQ(st.sealed_fallbacks, 1u);
  const ipc::MonitorInfo m = ipc::query_monitor(service, 5s);
  EXPECT_EQ(m.policy, Policy::kReadOnly);
  EXPECT_EQ(m.sealed_copy_size, 4096u);
  EXPECT_EQ(m.sealed_total, st.sealed_total);
  EXPECT_EQ(m.sealed_free, st.sealed_free);
  EXPECT_EQ(m.sealed_in_flight, st.sealed_in_flight);
  EXPECT_EQ(m.sealed_copies, st.sealed_copies);
  EXPECT_EQ(m.sealed_fallbacks, st.sealed_fallbacks);
  ASSERT_EQ(m.classes.size(), 2u);
  EXPECT_TRUE(m.classes[0].sealed);
  EXPECT_FALSE(m.classes[1].sealed);
}

}  // namespace
}  // namespace fbuf::testing

// Sealed copies (docs/design.md, "Sealed copies"): a read_only or
// copy_on_write pool sends a small buffer as a copy in a slot the
// application's mapping does not cover. A late write by the sender, through
// its stale pointer or into every buffer it can allocate, never reaches a
// receiver, between threads and across processes; sealed slots come back,
// are reclaimed from a receiver killed -9, fall back to protection when
// all are in flight, and a forged return naming one is rejected and
// counted, and a batch whose protect fails gives its sealed buffer back
// unsent. The cross-process receiver is this binary re-executed with
// --receiver (see main() below).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/protection.h"
#include "fbuf/fbuf.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"

#include <capnp/message.h>

namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::string g_self;  // this binary, for re-exec

constexpr std::size_t kSmall = 4096;
constexpr std::size_t kLarge = 64 * 1024;
constexpr std::uint32_t kCount = 4;

// Sealed copies forced on for the small class and off for the large one,
// whatever the calibration would choose on this machine.
Pool make_pool(Policy policy, const std::string& name) {
  return Pool(PoolOptions{.name = name,
                          .classes = {{kSmall, kCount}, {kLarge, 2}},
                          .policy = policy,
                          .sealed_copies = SealedCopies::kUpTo,
                          .sealed_copy_limit = kSmall});
}

std::string policy_name(Policy p) { return p == Policy::kReadOnly ? "ReadOnly" : "CopyOnWrite"; }

std::string service_name(const std::string& what) {
  return "sealed/" + what + "/" + std::to_string(getpid());
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds within = 10000ms) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return p();
}

bool all_bytes(const std::byte* p, std::size_t n, char c) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != static_cast<std::byte>(c)) return false;
  return true;
}

// The sender's late writes: through the stale pointer of what it sent, and
// into every buffer of the pool it can allocate now (the sent one among
// them, free again at once). Returns how many it allocated.
std::size_t scribble(Pool& pool, std::byte* stale, char c) {
  if (stale != nullptr) std::memset(stale, c, kSmall);
  std::vector<Buffer> all;
  for (std::size_t size : {kSmall, kLarge}) {
    for (;;) {
      auto b = pool.try_allocate(size);
      if (!b) break;
      std::memset(b->data(), c, b->capacity());
      all.push_back(std::move(*b));
    }
  }
  return all.size();
}

TEST(SealedCopiesChoice, IsExposedAndCanBeForcedEitherWay) {
  Pool never(PoolOptions{.name = "sealed-never", .classes = {{kSmall, 2}}, .policy = Policy::kReadOnly,
                         .sealed_copies = SealedCopies::kNever});
  EXPECT_EQ(never.sealed_copy_size(), 0u);
  EXPECT_EQ(never.stats().sealed_total, 0u);
  Pool some = make_pool(Policy::kCopyOnWrite, "sealed-some");
  EXPECT_EQ(some.sealed_copy_size(), kSmall);
  PoolStats s = some.stats();
  EXPECT_EQ(s.total, kCount + 2);  // the application's buffers only
  EXPECT_EQ(s.free, kCount + 2);
  EXPECT_EQ(s.sealed_total, kCount);  // as many as the class has buffers
  EXPECT_EQ(s.sealed_free, kCount);
  // Volatile pools have none, whatever is asked.
  Pool plain(PoolOptions{.name = "sealed-volatile", .classes = {{kSmall, 2}}, .policy = Policy::kVolatile,
                         .sealed_copies = SealedCopies::kUpTo, .sealed_copy_limit = kLarge});
  EXPECT_EQ(plain.sealed_copy_size(), 0u);
  EXPECT_EQ(plain.stats().sealed_total, 0u);
  // Measured: a size of one of the classes, or none; and what it says is
  // what the stats count.
  Pool measured(PoolOptions{.name = "sealed-auto", .classes = {{kSmall, 2}, {kLarge, 2}}, .policy = Policy::kReadOnly});
  const std::size_t chosen = measured.sealed_copy_size();
  EXPECT_TRUE(chosen == 0 || chosen == kSmall || chosen == kLarge) << chosen;
  EXPECT_EQ(measured.stats().sealed_total, chosen == 0 ? 0u : chosen == kSmall ? 2u : 4u);
  // The allocator never hands out a sealed slot.
  std::vector<Buffer> all;
  while (auto b = some.try_allocate(1)) all.push_back(std::move(*b));
  EXPECT_EQ(all.size(), kCount);
}

class SealedThreads : public ::testing::TestWithParam<Policy> {};

TEST_P(SealedThreads, ALateWriteNeverReachesTheReceiver) {
  Pool pool = make_pool(GetParam(), "sealed-th-" + policy_name(GetParam()));
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::byte* stale = nullptr;
  {
    auto b = tx.allocate(kSmall, 1s);
    ASSERT_TRUE(b);
    stale = b->data();
    std::memset(stale, 'A', kSmall);
    ASSERT_FALSE(tx.send(std::move(*b), kSmall, 1s));
  }
  // The receiver is another thread; it holds the view while the sender
  // scribbles, then checks the bytes again.
  std::atomic<int> phase{0};
  bool first_ok = false, later_ok = false;
  std::thread reader([&] {
    auto v = rx.receive(5s);
    if (!v) return;
    first_ok = v->size() == kSmall && all_bytes(v->data(), kSmall, 'A');
    phase.store(1);
    while (phase.load() != 2) std::this_thread::sleep_for(1ms);
    later_ok = all_bytes(v->data(), kSmall, 'A');
  });
  ASSERT_TRUE(eventually([&] { return phase.load() == 1; }));
  PoolStats s = pool.stats();
  EXPECT_EQ(s.sealed_copies, 1u);
  EXPECT_EQ(s.sealed_in_flight, 1u);
  EXPECT_EQ(s.in_flight, 0u);  // the caller's buffer was free at once
  EXPECT_EQ(s.free, s.total);
  // No fault under either policy: nothing the sender can write was sent.
  EXPECT_EQ(scribble(pool, stale, 'B'), kCount + 2);
  phase.store(2);
  reader.join();
  EXPECT_TRUE(first_ok);
  EXPECT_TRUE(later_ok) << "a late write by the sender reached the receiver";
  s = pool.stats();
  EXPECT_EQ(s.sealed_free, s.sealed_total);
  EXPECT_EQ(s.sealed_in_flight, 0u);
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.sealed_fallbacks, 0u);
}

TEST_P(SealedThreads, WhenEverySealedSlotIsInFlightTheBufferIsProtectedInstead) {
  Pool pool = make_pool(GetParam(), "sealed-full-" + policy_name(GetParam()));
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::vector<View> held;
  for (std::uint32_t i = 0; i <= kCount; ++i) {
    auto b = tx.allocate(kSmall, 1s);
    ASSERT_TRUE(b);
    std::memset(b->data(), 'a' + static_cast<int>(i), kSmall);
    ASSERT_FALSE(tx.send(std::move(*b), kSmall, 1s));
    auto v = rx.receive(1s);
    ASSERT_TRUE(v);
    held.push_back(std::move(*v));
  }
  PoolStats s = pool.stats();
  EXPECT_EQ(s.sealed_copies, kCount);
  EXPECT_EQ(s.sealed_fallbacks, 1u);
  EXPECT_EQ(s.sealed_free, 0u);
  EXPECT_EQ(s.in_flight, 1u);  // the last one went out protected
  for (std::uint32_t i = 0; i <= kCount; ++i)
    EXPECT_TRUE(all_bytes(held[i].data(), kSmall, static_cast<char>('a' + static_cast<int>(i)))) << i;
  // The protected one is no buffer the sender can allocate; scribbling
  // over all the others changes nothing the receiver holds.
  EXPECT_EQ(scribble(pool, nullptr, 'z'), kCount - 1 + 2);
  for (std::uint32_t i = 0; i <= kCount; ++i)
    EXPECT_TRUE(all_bytes(held[i].data(), kSmall, static_cast<char>('a' + static_cast<int>(i)))) << i;
  held.clear();
  s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.sealed_free, s.sealed_total);
  // The protected buffer is restored when it is allocated again.
  EXPECT_EQ(scribble(pool, nullptr, 'y'), kCount + 2);
}

// Every protect fails, changing nothing.
int fail_protect(detail::ProtectionFaults::Op op, std::size_t /*offset*/, std::size_t& length) noexcept {
  if (op != detail::ProtectionFaults::Op::kProtect) return 0;
  length = 0;
  return ENOMEM;
}

TEST_P(SealedThreads, ABatchWhoseProtectFailsGivesTheSealedBufferBackUnsent) {
  Pool pool = make_pool(GetParam(), "sealed-batch-" + policy_name(GetParam()));
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  // One small buffer (a sealed copy) and one large (protected) in a batch.
  Buffer batch[2] = {*tx.allocate(kSmall, 1s), *tx.allocate(kLarge, 1s)};
  std::byte* small = batch[0].data();
  std::memset(small, 's', kSmall);
  std::memset(batch[1].data(), 'l', kLarge);
  const std::size_t lengths[2] = {kSmall, kLarge};
  detail::ProtectionFaults::set(&fail_protect);
  const std::error_code ec = tx.send_many(batch, lengths, 1s);
  detail::ProtectionFaults::set(nullptr);
  ASSERT_EQ(ec, std::error_code(ENOMEM, std::system_category())) << ec.message();
  // All or nothing: both Buffers are the caller's again, as they were.
  ASSERT_TRUE(batch[0]);
  EXPECT_EQ(batch[0].data(), small);
  EXPECT_TRUE(all_bytes(small, kSmall, 's'));
  PoolStats s = pool.stats();
  EXPECT_EQ(s.allocated, 2u);
  EXPECT_EQ(s.sealed_free, s.sealed_total);
  EXPECT_EQ(s.sealed_copies, 0u);
  EXPECT_FALSE(rx.try_receive());
  // And they send normally once protection works.
  std::memset(small, 't', kSmall);  // still writable under either policy
  ASSERT_FALSE(tx.send_many(batch, lengths, 1s));
  auto a = rx.receive(1s);
  auto b = rx.receive(1s);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(all_bytes(a->data(), kSmall, 't'));
  EXPECT_TRUE(all_bytes(b->data(), kLarge, 'l'));
  s = pool.stats();
  EXPECT_EQ(s.sealed_copies, 1u);
  EXPECT_EQ(s.sealed_in_flight, 1u);
  EXPECT_EQ(s.in_flight, 1u);
}

INSTANTIATE_TEST_SUITE_P(Policies, SealedThreads, ::testing::Values(Policy::kReadOnly, Policy::kCopyOnWrite),
                         [](const ::testing::TestParamInfo<Policy>& p) { return policy_name(p.param); });

// --- Across processes. ---

// The receiver role: receives `n` views, says "got <first bytes>", waits for
// a command line, then says "now <first bytes>" and whether every byte is
// as first seen ("same"/"changed"), releases them and says "released".
// With n views held and "hold" as the command, it never releases (for a
// kill -9).
int run_receiver(const char* service, int n) {
  try {
    Receiver rx = Receiver::connect(service);
    std::vector<View> views;
    std::vector<std::string> first;
    std::string got = "got ";
    for (int i = 0; i < n; ++i) {
      auto v = rx.receive(10s);
      if (!v) return 2;
      first.emplace_back(reinterpret_cast<const char*>(v->data()), v->size());
      got += static_cast<char>(v->data()[0]);
      views.push_back(std::move(*v));
    }
    printf("%s\n", got.c_str());
    fflush(stdout);
    char cmd[64];
    if (fgets(cmd, sizeof cmd, stdin) == nullptr) return 3;
    if (std::strncmp(cmd, "hold", 4) == 0) {
      pause();
      return 0;
    }
    std::string now = "now ";
    bool same = true;
    for (int i = 0; i < n; ++i) {
      now += static_cast<char>(views[i].data()[0]);
      same = same && std::memcmp(views[i].data(), first[i].data(), first[i].size()) == 0;
    }
    printf("%s %s\n", now.c_str(), same ? "same" : "changed");
    views.clear();
    printf("released\n");
    fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "receiver: %s\n", e.what());
    return 1;
  }
}

class ReceiverProcess {
 public:
  ReceiverProcess(const std::string& service, int n)
      : stdin_(make_pipe()), child_(g_self, {"--receiver", service, std::to_string(n)}, {{stdin_.first, 0}}) {
    close(stdin_.first);
  }
  ~ReceiverProcess() {
    if (stdin_.second >= 0) close(stdin_.second);
  }
  std::string line() { return child_.line(std::chrono::seconds(20)); }
  void say(const char* what) {
    std::string cmd = std::string(what) + "\n";
    EXPECT_EQ(write(stdin_.second, cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  }
  testing::ExitStatus wait() { return child_.wait(std::chrono::seconds(30)); }
  void kill9() { child_.kill(SIGKILL); }

 private:
  static std::pair<int, int> make_pipe() {
    int p[2] = {-1, -1};
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    return {p[0], p[1]};
  }
  std::pair<int, int> stdin_;
  testing::Child child_;
};

class SealedProcesses : public ::testing::TestWithParam<Policy> {};

TEST_P(SealedProcesses, ALateWriteNeverReachesTheReceiver) {
  const std::string name = "sealed-xp-" + policy_name(GetParam());
  Pool pool = make_pool(GetParam(), name);
  const std::string service = service_name(name);
  ReceiverProcess child(service, 2);
  Sender tx(pool, service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
  std::byte* stale[2] = {};
  for (int i = 0; i < 2; ++i) {
    auto b = tx.allocate(kSmall, 1s);
    ASSERT_TRUE(b);
    stale[i] = b->data();
    std::memset(stale[i], 'A' + i, kSmall);
    ASSERT_FALSE(tx.send(std::move(*b), kSmall, 1s));
  }
  EXPECT_EQ(child.line(), "got AB");
  PoolStats s = pool.stats();
  EXPECT_EQ(s.sealed_copies, 2u);
  EXPECT_EQ(s.sealed_in_flight, 2u);
  // Through both stale pointers, then over every buffer it can allocate.
  std::memset(stale[1], 'X', kSmall);
  EXPECT_EQ(scribble(pool, stale[0], 'X'), kCount + 2);
  child.say("check");
  EXPECT_EQ(child.line(), "now AB same") << "a late write by the sender reached the receiver";
  EXPECT_EQ(child.line(), "released");
  const auto status = child.wait();
  EXPECT_TRUE(status.exited_with(0)) << status.describe();
  ASSERT_TRUE(eventually([&] {
    PoolStats p = pool.stats();
    return p.sealed_free == p.sealed_total && p.sealed_in_flight == 0;
  }));
  s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.rejected_returns, 0u);
}

TEST_P(SealedProcesses, SealedSlotsHeldByAReceiverKilledMinus9AreReclaimed) {
  const std::string name = "sealed-kill-" + policy_name(GetParam());
  Pool pool = make_pool(GetParam(), name);
  const std::string service = service_name(name);
  ReceiverProcess child(service, static_cast<int>(kCount));
  Sender tx(pool, service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 10s));
  for (std::uint32_t i = 0; i < kCount; ++i) {
    auto b = tx.allocate(kSmall, 1s);
    ASSERT_TRUE(b);
    std::memset(b->data(), 'k', kSmall);
    ASSERT_FALSE(tx.send(std::move(*b), kSmall, 1s));
  }
  EXPECT_EQ(child.line(), "got kkkk");
  child.say("hold");
  EXPECT_EQ(pool.stats().sealed_in_flight, kCount);
  EXPECT_EQ(pool.stats().sealed_free, 0u);
  child.kill9();
  (void)child.wait();
  ASSERT_TRUE(eventually([&] {
    PoolStats p = pool.stats();
    return p.sealed_free == p.sealed_total;
  })) << "sealed slots still lent to a dead receiver";
  PoolStats s = pool.stats();
  EXPECT_EQ(s.sealed_in_flight, 0u);
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.in_flight, 0u);
}

INSTANTIATE_TEST_SUITE_P(Policies, SealedProcesses, ::testing::Values(Policy::kReadOnly, Policy::kCopyOnWrite),
                         [](const ::testing::TestParamInfo<Policy>& p) { return policy_name(p.param); });

// --- A hostile receiver. ---

using detail::Mapping;
using detail::UniqueFd;

// A receiver that speaks the protocol by hand, so it can lie.
struct RawReceiver {
  explicit RawReceiver(const std::string& service) {
    sock = ipc::connect_service(service, 5s);
    capnp::MallocMessageBuilder m;
    m.initRoot<ipc::proto::ControlMessage>().initHello().setVersion(ipc::kProtocolVersion);
    EXPECT_FALSE(ipc::send_message(sock.get(), m, {}));
    ipc::Datagram dg;
    EXPECT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
    info = ipc::decode_welcome(dg.words);
    fds = std::move(dg.fds);
    ring = detail::ChannelMemory(Mapping::map(fds[1].get(), info.ring_bytes, PROT_READ | PROT_WRITE, "ring"),
                                 info.send_capacity, info.return_capacity);
    bell = Mapping::map(fds[2].get(), detail::page_size(), PROT_READ | PROT_WRITE, "bell");
    pool = Mapping::map(fds[0].get(), info.pool_size, PROT_READ, "pool");
    header = ring.header();
    in = detail::RingConsumer(&header->send, ring.send_slots(), info.send_capacity);
    out = detail::RingProducer(&header->ret, ring.return_slots(), info.return_capacity);
  }
  ipc::Descriptor take() {
    ipc::Descriptor d{};
    EXPECT_EQ(in.pop(d), detail::RingStatus::kOk);
    return d;
  }
  void give_back(ipc::Descriptor d) {
    EXPECT_TRUE(out.push(d));
    detail::ring_doorbell(reinterpret_cast<detail::DoorbellHeader*>(bell.data()));
  }
  // Where buffer `index` starts in the pool, by the Welcome's geometry.
  std::size_t offset_of(std::uint32_t index) const {
    std::size_t offset = 0;
    for (const auto& c : info.classes) {
      if (index < c.count) return offset + index * c.buffer_size;
      index -= c.count;
      offset += c.count * c.buffer_size;
    }
    return SIZE_MAX;
  }

  UniqueFd sock;
  ipc::WelcomeInfo info;
  std::vector<UniqueFd> fds;
  detail::ChannelMemory ring;
  Mapping bell;
  Mapping pool;
  ipc::ChannelHeader* header = nullptr;
  detail::RingConsumer in;
  detail::RingProducer out;
};

TEST(SealedForged, ReturnsNamingSealedSlotsAreValidatedLikeAnyOther) {
  Pool pool = make_pool(Policy::kReadOnly, "sealed-forged");
  const std::string service = service_name("forged");
  Sender tx(pool, service);
  RawReceiver r(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  // The Welcome lists the sealed slots' class after the application's.
  ASSERT_EQ(r.info.classes.size(), 3u);
  EXPECT_EQ(r.info.classes[2].buffer_size, kSmall);
  EXPECT_EQ(r.info.classes[2].count, kCount);
  const std::uint32_t first_sealed = kCount + 2;
  for (char c : {'p', 'q'}) {
    auto b = tx.allocate(16, 1s);
    ASSERT_TRUE(b);
    std::memset(b->data(), c, 16);
    ASSERT_FALSE(tx.send(std::move(*b), 16, 1s));
  }
  ipc::Descriptor a = r.take(), b = r.take();
  ASSERT_GE(a.index, first_sealed);
  ASSERT_GE(b.index, first_sealed);
  // The bytes are where the geometry says.
  EXPECT_EQ(static_cast<char>(r.pool.data()[r.offset_of(a.index) + a.offset]), 'p');
  EXPECT_EQ(static_cast<char>(r.pool.data()[r.offset_of(b.index) + b.offset]), 'q');
  std::uint32_t never_lent = first_sealed;
  while (never_lent == a.index || never_lent == b.index) ++never_lent;

  auto give_back = [&](ipc::Descriptor d) {
    r.give_back(d);
    tx.stats();
  };
  auto forged = a;
  forged.generation += 1;  // a sealed slot at the wrong generation
  give_back(forged);
  forged = a;
  forged.index = never_lent;  // a sealed slot never lent to it
  give_back(forged);
  forged = a;
  forged.index = first_sealed + kCount;  // past the last sealed slot
  give_back(forged);
  give_back(a);  // valid
  give_back(a);  // already returned
  SenderStats s = tx.stats();
  EXPECT_EQ(s.rejected_returns, 4u);
  EXPECT_EQ(s.returned, 1u);
  PoolStats p = pool.stats();
  EXPECT_EQ(p.sealed_in_flight, 1u);  // b is still lent, and still valid
  EXPECT_EQ(p.sealed_free, kCount - 1);
  EXPECT_EQ(p.free, p.total);
  r.give_back(b);
  EXPECT_TRUE(eventually([&] { return pool.stats().sealed_free == kCount; }));
  EXPECT_EQ(tx.stats().returned, 2u);
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  fbuf::g_self = "/proc/self/exe";
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) fbuf::g_self.assign(exe, static_cast<std::size_t>(n));
  if (argc == 4 && std::strcmp(argv[1], "--receiver") == 0) return fbuf::run_receiver(argv[2], std::atoi(argv[3]));
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

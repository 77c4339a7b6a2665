// The pool's protection failure paths (read_only and copy_on_write), made
// deterministic by detail::ProtectionFaults: protect and restore calls fail
// on demand with ENOMEM, as they do for real when a split would pass
// vm.max_map_count. Whatever fails, the pool stays consistent, the caller
// keeps a failed send's buffers, and no buffer is handed out protected.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/buffers/protection.h"
#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using detail::ProtectionFaults;
using namespace std::chrono_literals;

// What the hook does; reset by the fixture.
struct Faults {
  int fail_protect = 0;                 // fail the n-th protect from now (1-based); 0: none
  std::size_t protect_changes = 0;      // bytes the failing protect changes first
  bool fail_restores = false;           // every restore fails, changing nothing...
  std::size_t only_offset = SIZE_MAX;   // ...or, if set, those covering this offset
  std::size_t also_offset = SIZE_MAX;   // ...or this one
  int protects = 0;
  int restores = 0;
};
Faults g_faults;

int hook(ProtectionFaults::Op op, std::size_t offset, std::size_t& length) noexcept {
  Faults& f = g_faults;
  if (op == ProtectionFaults::Op::kProtect) {
    if (++f.protects != f.fail_protect) return 0;
    length = std::min(length, f.protect_changes);
    return ENOMEM;
  }
  ++f.restores;
  if (!f.fail_restores) return 0;
  auto covers = [&](std::size_t at) { return at >= offset && at < offset + length; };
  if (f.only_offset != SIZE_MAX && !covers(f.only_offset) && !covers(f.also_offset)) return 0;
  length = 0;
  return ENOMEM;
}

const std::error_code kNoMemory(ENOMEM, std::system_category());

// The permissions ("rw-s", "r--s", "rw-p") of every mapping that overlaps
// [p, p + length), from /proc/self/maps.
std::vector<std::string> permissions(const void* p, std::size_t length) {
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const auto end = begin + length;
  std::vector<std::string> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
    if (lo < end && hi > begin) out.emplace_back(perms);
  }
  return out;
}

// The sender may write, and its writes reach the pool's shared pages.
bool writable(const void* p, std::size_t length) {
  auto perms = permissions(p, length);
  if (perms.empty()) return false;
  for (auto& s : perms)
    if (s != "rw-s") return false;
  return true;
}

// Every page of it is protected (read_only) or private (copy_on_write).
bool guarded(const void* p, std::size_t length) {
  auto perms = permissions(p, length);
  if (perms.empty()) return false;
  for (auto& s : perms)
    if (s == "rw-s") return false;
  return true;
}

class ProtectionFailure : public ::testing::TestWithParam<Policy> {
 protected:
  void SetUp() override {
    g_faults = Faults{};
    ProtectionFaults::set(&hook);
  }
  void TearDown() override {
    ProtectionFaults::set(nullptr);
    g_faults = Faults{};
  }

  Pool make_pool(std::uint32_t count, std::size_t size = 4096, bool eager = false) {
    Pool pool(PoolOptions{.name = "protection-test", .classes = {{size, count}}, .policy = GetParam(),
                          .eager_restore = eager, .sealed_copies = SealedCopies::kNever});
    // Where each buffer lives in the sender's mapping, by index.
    std::vector<Buffer> all;
    for (std::uint32_t i = 0; i < count; ++i) all.push_back(std::move(*pool.try_allocate(size)));
    at_.assign(count, nullptr);
    for (auto& b : all) at_[b.index()] = b.data();
    // Dropped last first, so the free list is as new: buffer 0 on top.
    while (!all.empty()) all.pop_back();
    return pool;
  }

  std::vector<std::byte*> at_;
};

void expect_stats(const Pool& pool, std::uint32_t free, std::uint32_t allocated, std::uint32_t in_flight) {
  PoolStats s = pool.stats();
  EXPECT_EQ(s.free, free);
  EXPECT_EQ(s.allocated, allocated);
  EXPECT_EQ(s.in_flight, in_flight);
  EXPECT_EQ(s.free + s.allocated + s.in_flight, s.total);
}

TEST_P(ProtectionFailure, AFailedProtectLeavesTheBufferWithTheCallerAndWritable) {
  Pool pool = make_pool(4, 8192);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = tx.try_allocate(1);
  ASSERT_TRUE(b);
  std::byte* p = b->data();
  // The failing call protects the first of the buffer's two pages first.
  g_faults.fail_protect = 1;
  g_faults.protect_changes = 4096;
  EXPECT_EQ(tx.try_send(std::move(*b), 8), kNoMemory);
  ASSERT_TRUE(*b);  // still the caller's
  EXPECT_TRUE(writable(p, 8192));
  std::memset(p, 7, 8192);
  expect_stats(pool, 3, 1, 0);
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kWouldBlock));

  // The next send succeeds and protects it.
  ASSERT_FALSE(tx.try_send(std::move(*b), 8));
  EXPECT_TRUE(guarded(p, 8192));
  expect_stats(pool, 3, 0, 1);
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->data()[0], std::byte{7});
}

TEST_P(ProtectionFailure, ARollbackThatFailsTooLeavesBuffersGuardedAndNoneIsHandedOutProtected) {
  Pool pool = make_pool(8);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::vector<Buffer> held;
  for (int i = 0; i < 5; ++i) held.push_back(std::move(*pool.try_allocate(1)));
  held[2].reset();
  held.erase(held.begin() + 2);  // two runs: buffers 0-1 and 3-4
  const std::size_t lengths[4] = {1, 1, 1, 1};
  // The second run's protect fails after changing its first buffer, and
  // every restore of the rollback fails.
  g_faults.fail_protect = 2;
  g_faults.protect_changes = 4096;
  g_faults.fail_restores = true;
  EXPECT_EQ(tx.send_many(held, lengths, std::chrono::nanoseconds(0)), kNoMemory);
  for (auto& b : held) EXPECT_TRUE(b);  // all still the caller's
  EXPECT_TRUE(guarded(at_[0], 8192));   // the first run, protected and not restored
  EXPECT_TRUE(guarded(at_[3], 4096));   // the part of the second run changed
  expect_stats(pool, 4, 4, 0);
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kWouldBlock));
  held.clear();  // dropped unsent: back on the free list, guarded

  // While restores keep failing, only buffers that need none are handed
  // out; then the allocation fails with ENOMEM, not with a protected buffer.
  std::vector<Buffer> got;
  for (;;) {
    auto b = pool.try_allocate(1);
    if (!b) {
      EXPECT_EQ(b.error(), kNoMemory);
      break;
    }
    EXPECT_TRUE(writable(b->data(), 4096)) << "buffer " << b->index();
    std::memset(b->data(), 1, 4096);
    got.push_back(std::move(*b));
    ASSERT_LE(got.size(), 8u);
  }
  EXPECT_EQ(got.size(), 4u);  // 2, 5, 6, 7
  expect_stats(pool, 4, 4, 0);

  // Once restores work again, the others are restored at allocation.
  g_faults.fail_restores = false;
  for (int i = 0; i < 4; ++i) {
    auto b = pool.try_allocate(1);
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_TRUE(writable(b->data(), 4096)) << "buffer " << b->index();
    std::memset(b->data(), 1, 4096);
    got.push_back(std::move(*b));
  }
  expect_stats(pool, 0, 8, 0);
}

TEST_P(ProtectionFailure, ASuccessfulRollbackClearsTheGuardOfAnEarlierFailedOne) {
  Pool pool = make_pool(8);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::vector<Buffer> held;
  for (int i = 0; i < 5; ++i) held.push_back(std::move(*pool.try_allocate(1)));
  held[2].reset();
  held.erase(held.begin() + 2);
  const std::size_t lengths[4] = {1, 1, 1, 1};
  g_faults.fail_protect = 2;
  g_faults.protect_changes = 4096;
  g_faults.fail_restores = true;
  ASSERT_EQ(tx.send_many(held, lengths, std::chrono::nanoseconds(0)), kNoMemory);
  ASSERT_TRUE(guarded(at_[0], 8192));

  // The same batch again: its second run's protect fails again, and this
  // time the rollback works, so every buffer is the caller's to write.
  g_faults = Faults{};
  g_faults.fail_protect = 2;
  g_faults.protect_changes = 4096;
  ASSERT_EQ(tx.send_many(held, lengths, std::chrono::nanoseconds(0)), kNoMemory);
  for (auto& b : held) {
    EXPECT_TRUE(writable(b.data(), 4096)) << "buffer " << b.index();
    std::memset(b.data(), 2, 4096);
  }
  // Their slots say so too: allocating them again restores nothing.
  held.clear();
  g_faults = Faults{};
  std::vector<Buffer> got;
  for (int i = 0; i < 8; ++i) got.push_back(std::move(*pool.try_allocate(1)));
  EXPECT_EQ(g_faults.restores, 0);
  expect_stats(pool, 0, 8, 0);
}

TEST_P(ProtectionFailure, ARestoreFailingInTryAllocatePassesToTheNextFreeBuffer) {
  Pool pool = make_pool(4);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  {
    auto b = pool.try_allocate(1);
    ASSERT_EQ(b->index(), 0u);
    ASSERT_FALSE(tx.try_send(std::move(*b), 1));
    ASSERT_TRUE(rx.try_receive());  // the view is dropped at once
  }
  ASSERT_TRUE(guarded(at_[0], 4096));  // free, on top of the list, guarded

  g_faults.fail_restores = true;
  g_faults.only_offset = 0;  // buffer 0 is at the start of the pool
  std::vector<Buffer> got;
  for (std::uint32_t want : {1u, 2u, 3u}) {
    auto b = pool.try_allocate(1);
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(b->index(), want);
    EXPECT_TRUE(writable(b->data(), 4096));
    std::memset(b->data(), 3, 4096);
    got.push_back(std::move(*b));
  }
  // Only the failing one is left: the class fails with ENOMEM.
  EXPECT_EQ(pool.try_allocate(1).error(), kNoMemory);
  EXPECT_TRUE(guarded(at_[0], 4096));
  expect_stats(pool, 1, 3, 0);

  // Once restores work again, it is tried again and handed out.
  g_faults.fail_restores = false;
  auto b = pool.try_allocate(1);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->index(), 0u);
  EXPECT_TRUE(writable(b->data(), 4096));
  std::memset(b->data(), 3, 4096);
  expect_stats(pool, 0, 4, 0);
}

TEST_P(ProtectionFailure, TwoFailingRestoresOnTopDoNotHideAFreeBufferBelow) {
  Pool pool = make_pool(4);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  {
    auto a = pool.try_allocate(1);
    auto b = pool.try_allocate(1);
    ASSERT_EQ(a->index(), 0u);
    ASSERT_EQ(b->index(), 1u);
    ASSERT_FALSE(tx.try_send(std::move(*a), 1));
    ASSERT_FALSE(tx.try_send(std::move(*b), 1));
    auto va = rx.try_receive();
    auto vb = rx.try_receive();
    ASSERT_TRUE(va && vb);
    vb->reset();
    va->reset();  // free list, top first: 0, 1, 2, 3; 0 and 1 guarded
  }
  g_faults.fail_restores = true;
  g_faults.only_offset = 0;
  g_faults.also_offset = static_cast<std::size_t>(at_[1] - at_[0]);
  auto c = pool.try_allocate(1);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->index(), 2u);
  EXPECT_TRUE(writable(c->data(), 4096));
  auto d = pool.try_allocate(1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->index(), 3u);
  EXPECT_EQ(pool.try_allocate(1).error(), kNoMemory);
  expect_stats(pool, 2, 2, 0);
}

TEST_P(ProtectionFailure, AFailedEagerRestoreLeavesTheBufferGuardedUntilItIsAllocated) {
  Pool pool = make_pool(4, 4096, /*eager=*/true);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = pool.try_allocate(1);
  ASSERT_EQ(b->index(), 0u);
  ASSERT_FALSE(tx.try_send(std::move(*b), 1));
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  g_faults.fail_restores = true;
  v->reset();  // the last receiver returns it: the eager restore fails
  EXPECT_GE(g_faults.restores, 1);
  EXPECT_TRUE(guarded(at_[0], 4096));
  expect_stats(pool, 4, 0, 0);

  g_faults.fail_restores = false;
  auto again = pool.try_allocate(1);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->index(), 0u);
  EXPECT_TRUE(writable(again->data(), 4096));
  std::memset(again->data(), 4, 4096);
}

TEST_P(ProtectionFailure, AWorkingEagerRestoreLeavesTheBufferWritableAtOnce) {
  Pool pool = make_pool(4, 4096, /*eager=*/true);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = pool.try_allocate(1);
  ASSERT_FALSE(tx.try_send(std::move(*b), 1));
  EXPECT_TRUE(guarded(at_[0], 4096));
  rx.try_receive()->reset();
  EXPECT_TRUE(writable(at_[0], 4096));
}

TEST_P(ProtectionFailure, BuffersReturnedTogetherAreRestoredByOneCallPerContiguousRun) {
  Pool pool = make_pool(8);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  // Buffers 0-3 and 6 are sent one by one (five protects), 4 and 5 kept.
  std::vector<Buffer> all;
  for (int i = 0; i < 7; ++i) all.push_back(std::move(*tx.try_allocate(1)));
  for (int i : {0, 1, 2, 3, 6}) ASSERT_FALSE(tx.try_send(std::move(all[i]), 1));
  std::vector<View> views;
  while (auto v = rx.try_receive()) views.push_back(std::move(*v));
  ASSERT_EQ(views.size(), 5u);
  for (int i : {0, 1, 2, 3, 6}) EXPECT_TRUE(guarded(at_[i], 4096)) << i;
  views.clear();  // all five come back: the top of the free list is guarded
  EXPECT_EQ(g_faults.restores, 0);
  auto b = tx.try_allocate(1);
  ASSERT_TRUE(b);
  // Two runs, 0-3 and 6: two calls restore all five.
  EXPECT_EQ(g_faults.restores, 2);
  for (int i : {0, 1, 2, 3, 6}) EXPECT_TRUE(writable(at_[i], 4096)) << i;
  // The next allocations need no restore.
  std::vector<Buffer> more;
  for (int i = 0; i < 4; ++i) more.push_back(std::move(*tx.try_allocate(1)));
  EXPECT_EQ(g_faults.restores, 2);
  for (auto& m : more) std::memset(m.data(), 1, 4096);
  std::memset(b->data(), 1, 4096);
}

TEST_P(ProtectionFailure, ABatchRestoreThatFailsLeavesItsRunGuardedAndRestoresTheTopAlone) {
  Pool pool = make_pool(4);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::vector<Buffer> all;
  for (int i = 0; i < 4; ++i) all.push_back(std::move(*tx.try_allocate(1)));
  for (auto& b : all) ASSERT_FALSE(tx.try_send(std::move(b), 1));
  std::vector<View> views;
  while (auto v = rx.try_receive()) views.push_back(std::move(*v));
  views.clear();  // returned in order: buffer 3 on top
  // The run's restore (it covers buffer 1) fails; buffer 3 alone works.
  g_faults.fail_restores = true;
  g_faults.only_offset = 4096;
  auto b = tx.try_allocate(1);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->index(), 3u);
  EXPECT_EQ(g_faults.restores, 2);
  EXPECT_TRUE(writable(at_[3], 4096));
  EXPECT_TRUE(guarded(at_[1], 4096));
  std::memset(b->data(), 1, 4096);
  expect_stats(pool, 3, 1, 0);
}

INSTANTIATE_TEST_SUITE_P(Policies, ProtectionFailure, ::testing::Values(Policy::kReadOnly, Policy::kCopyOnWrite),
                         [](const ::testing::TestParamInfo<Policy>& p) {
                           return std::string(p.param == Policy::kReadOnly ? "ReadOnly" : "CopyOnWrite");
                         });

// --- copy_on_write: the sender's late write privatises the page it hits. ---

TEST(CopyOnWritePages, ALateWriteMakesOnlyItsPagePrivateAndReallocationSharesItAgain) {
  Pool pool(PoolOptions{.name = "cow-pages", .classes = {{4 * 4096, 1}}, .policy = Policy::kCopyOnWrite,
                        .sealed_copies = SealedCopies::kNever});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = tx.try_allocate(1);
  ASSERT_TRUE(b);
  std::byte* p = b->data();
  std::memset(p, 1, 4 * 4096);
  ASSERT_FALSE(tx.try_send(std::move(*b), 4 * 4096));
  // Sent: read-only, page tables kept.
  EXPECT_EQ(permissions(p, 4 * 4096), std::vector<std::string>{"r--s"});
  p[4096 + 7] = std::byte{2};  // faults; the page becomes private; the write is re-run
  p[4096 + 8] = std::byte{3};  // the same private page: no fault
  EXPECT_EQ(permissions(p, 4 * 4096), (std::vector<std::string>{"r--s", "rw-p", "r--s"}));
  EXPECT_EQ(p[4096 + 7], std::byte{2});
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->data()[4096 + 7], std::byte{1});  // the receiver's bytes are as sent
  EXPECT_EQ(v->data()[4096 + 8], std::byte{1});
  v->reset();
  // Allocated again: shared and writable everywhere, the private copy gone.
  auto again = tx.try_allocate(1);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->data(), p);
  EXPECT_TRUE(writable(p, 4 * 4096));
  EXPECT_EQ(p[4096 + 7], std::byte{1});
  p[4096 + 7] = std::byte{4};  // reaches the pool's shared pages again
  ASSERT_FALSE(tx.try_send(std::move(*again), 4 * 4096));
  auto w = rx.try_receive();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->data()[4096 + 7], std::byte{4});
}

// Two threads write into the same sent page at once: one maps it private,
// the other's write faults until then and lands in the same copy, so
// neither loses a byte and the receiver's bytes stay as sent.
TEST(CopyOnWritePages, TwoThreadsWritingTheSamePageAfterSendShareOnePrivateCopy) {
#if defined(__SANITIZE_THREAD__)
  // TSan models the handler's mmap as a write to the page, and a writer
  // that comes after it without faulting has no ordering TSan can see (the
  // kernel's page tables order it): a report on correct code.
  GTEST_SKIP() << "the kernel orders the private mapping before the second writer; TSan cannot see it";
#endif
  Pool pool(PoolOptions{.name = "cow-race", .classes = {{4096, 2}}, .policy = Policy::kCopyOnWrite,
                        .sealed_copies = SealedCopies::kNever});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  for (int round = 0; round < 50; ++round) {
    auto b = tx.allocate(1, 1s);
    ASSERT_TRUE(b);
    std::byte* p = b->data();
    std::memset(p, 0, 4096);
    ASSERT_FALSE(tx.try_send(std::move(*b), 4096));
    std::atomic<bool> go{false};
    auto writer = [&](std::size_t from) {
      while (!go.load(std::memory_order_acquire)) {
      }
      for (std::size_t i = from; i < from + 2048; i += 64) p[i] = std::byte{1};
    };
    std::thread a(writer, 0), c(writer, 2048);
    go.store(true, std::memory_order_release);
    a.join();
    c.join();
    for (std::size_t i = 0; i < 4096; i += 64) ASSERT_EQ(p[i], std::byte{1}) << "round " << round << " byte " << i;
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    for (std::size_t i = 0; i < 4096; i += 64) ASSERT_EQ(v->data()[i], std::byte{0}) << "round " << round;
  }
}

// --- The mapping count: checked when the pool is made, never at send. ---

std::uint64_t read_max_map_count() {
  std::ifstream f("/proc/sys/vm/max_map_count");
  std::uint64_t v = 0;
  f >> v;
  return v;
}

std::uint64_t mappings_now() {
  std::ifstream maps("/proc/self/maps");
  std::uint64_t n = 0;
  for (std::string line; std::getline(maps, line);) ++n;
  return n;
}

// The pool sizes follow the machine's current vm.max_map_count (a global
// setting: the test reads it rather than lowering it for everyone).
class MapCount : public ::testing::TestWithParam<Policy> {
 protected:
  void SetUp() override {
    limit_ = read_max_map_count();
    if (limit_ == 0) GTEST_SKIP() << "no /proc/sys/vm/max_map_count";
    // One page per buffer: a large limit makes a large (sparse) pool and
    // as many sends; beyond this the test would take too long.
    if (limit_ > (std::uint64_t{1} << 18)) GTEST_SKIP() << "vm.max_map_count is " << limit_;
  }
  std::uint64_t limit_ = 0;
};

TEST_P(MapCount, APoolOfMoreProtectedBuffersThanHalfTheLimitSendsEveryOtherBuffer) {
  // More than limit / 2 buffers, every other one sent and held: each held
  // buffer is a mapping of its own between two writable neighbours.
  const auto count = static_cast<std::uint32_t>(limit_ / 2 + limit_ / 8);
  Pool pool(PoolOptions{.name = "map-count", .classes = {{4096, count}}, .policy = GetParam(),
                        .sealed_copies = SealedCopies::kNever});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  std::vector<Buffer> all;
  all.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    auto b = tx.try_allocate(1);
    ASSERT_TRUE(b) << i;
    all.push_back(std::move(*b));
  }
  std::vector<View> held;
  held.reserve(count / 2);
  std::byte* first_sent = all[0].data();
  std::byte* last_sent = nullptr;
  for (std::uint32_t i = 0; i < count; i += 2) {
    ASSERT_EQ(all[i].index(), i);
    last_sent = all[i].data();
    all[i].data()[0] = std::byte{1};
    ASSERT_FALSE(tx.try_send(std::move(all[i]), 1)) << "send " << i << " of " << count;
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    held.push_back(std::move(*v));
  }
  // The splits happened: the process now has more than limit / 2 mappings.
  EXPECT_GT(mappings_now(), limit_ / 2);
  EXPECT_TRUE(guarded(first_sent, 4096));
  EXPECT_TRUE(guarded(last_sent, 4096));
  EXPECT_TRUE(writable(all[1].data(), 4096));
  for (std::uint32_t i = 1; i < count; i += 2) {
    all[i].data()[0] = std::byte{2};  // the unsent neighbours stay writable
    all[i].reset();
  }
  held.clear();
  expect_stats(pool, count, 0, 0);
}

TEST_P(MapCount, APoolThatCouldPassTheLimitIsRefusedWhenItIsMade) {
  const auto count = static_cast<std::uint32_t>(limit_ + 1);
  try {
    Pool pool(PoolOptions{.name = "map-count", .classes = {{4096, count}}, .policy = GetParam(),
                          .sealed_copies = SealedCopies::kNever});
    FAIL() << "a pool of " << count << " protected buffers was made";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::kInvalidArgument));
    EXPECT_NE(std::string(e.what()).find("vm.max_map_count"), std::string::npos) << e.what();
    const std::string policy = GetParam() == Policy::kReadOnly ? "read_only" : "copy_on_write";
    EXPECT_NE(std::string(e.what()).find("pool 'map-count': " + std::to_string(count) + " " + policy + " buffers"),
              std::string::npos)
        << e.what();
  }
  // The refused pool reserved nothing: a pool within the limit is made.
  Pool fits(PoolOptions{.name = "map-count", .classes = {{4096, 64}}, .policy = GetParam(),
                        .sealed_copies = SealedCopies::kNever});
  // Volatile pools never split their mapping and are not limited.
  Pool plain(PoolOptions{.name = "map-count", .classes = {{4096, count}}, .policy = Policy::kVolatile});
  EXPECT_EQ(plain.stats().total, count);
}

TEST_P(MapCount, TwoProtectedPoolsAreCountedTogether) {
  const auto count = static_cast<std::uint32_t>(limit_ / 2 + limit_ / 8);
  Pool first(PoolOptions{.name = "map-count-1", .classes = {{4096, count}}, .policy = GetParam(),
                         .sealed_copies = SealedCopies::kNever});
  EXPECT_THROW(Pool(PoolOptions{.name = "map-count-2", .classes = {{4096, count}}, .policy = GetParam(),
                                .sealed_copies = SealedCopies::kNever}), Error);
}

INSTANTIATE_TEST_SUITE_P(Policies, MapCount, ::testing::Values(Policy::kReadOnly, Policy::kCopyOnWrite),
                         [](const ::testing::TestParamInfo<Policy>& p) {
                           return std::string(p.param == Policy::kReadOnly ? "ReadOnly" : "CopyOnWrite");
                         });

}  // namespace
}  // namespace fbuf

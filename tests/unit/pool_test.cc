#include "fbuf/pool.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "fbuf/buffers/pool_core.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

Pool small_pool(std::uint32_t n4k = 4, std::uint32_t n64k = 2) {
  return Pool(PoolOptions{.name = "pool-test", .classes = {{65536, n64k}, {4096, n4k}}});
}

TEST(Pool, AMovedFromPoolSaysClosedAndTheNewOneWorks) {
  Pool a = small_pool();
  Pool b = std::move(a);
  EXPECT_EQ(a.try_allocate(1).error(), make_error_code(Errc::kClosed));  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.allocate(1, 1ms).error(), make_error_code(Errc::kClosed));
  EXPECT_EQ(a.stats().total, 0u);
  auto buf = b.try_allocate(1);
  ASSERT_TRUE(buf);
  EXPECT_EQ(b.stats().allocated, 1u);
  Pool c = small_pool();
  c = std::move(b);  // the assigned-from one is empty too
  EXPECT_EQ(b.try_allocate(1).error(), make_error_code(Errc::kClosed));  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.stats().allocated, 1u);
}

TEST(PoolDeathTest, OptionsOfAMovedFromPoolAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Pool a = small_pool();
  Pool b = std::move(a);
  EXPECT_DEATH(a.options(), "options\\(\\) of a moved-from Pool");  // NOLINT(bugprone-use-after-move)
}

TEST(Pool, RoundsSizesToPagesAndSortsClasses) {
  Pool pool(PoolOptions{.name = "geometry", .classes = {{10000, 1}, {100, 2}}});
  const auto& c = pool.options().classes;
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].buffer_size, 4096u);
  EXPECT_EQ(c[1].buffer_size, 12288u);
  EXPECT_EQ(pool.max_buffer_size(), 12288u);
  EXPECT_EQ(pool.stats().total, 3u);
}

TEST(Pool, RejectsBadOptions) {
  EXPECT_THROW(Pool(PoolOptions{.name = "none", .classes = {}}), Error);
  EXPECT_THROW(Pool(PoolOptions{.name = "zero", .classes = {{0, 1}}}), Error);
  EXPECT_THROW(Pool(PoolOptions{.name = "empty", .classes = {{4096, 0}}}), Error);
}

TEST(Pool, BuffersArePageAlignedDistinctAndWritable) {
  Pool pool = small_pool();
  std::vector<Buffer> held;
  std::set<std::byte*> seen;
  for (int i = 0; i < 4; ++i) {
    auto b = pool.try_allocate(100);
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b->data()) % 4096, 0u);
    EXPECT_EQ(b->capacity(), 4096u);
    std::memset(b->data(), i, b->capacity());
    EXPECT_TRUE(seen.insert(b->data()).second);
    held.push_back(std::move(*b));
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(held[i].data()[4095], std::byte(i));
}

TEST(Pool, TryAllocateFailsWhenExhausted) {
  Pool pool = small_pool(2, 1);
  std::vector<Buffer> held;
  for (int i = 0; i < 2; ++i) {
    auto b = pool.try_allocate(4096);
    ASSERT_TRUE(b);
    held.push_back(std::move(*b));
  }
  auto none = pool.try_allocate(1);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), make_error_code(Errc::kWouldBlock));
  EXPECT_EQ(pool.stats().free, 1u);
  EXPECT_EQ(pool.stats().allocated, 2u);
}

TEST(Pool, ASmallRequestNeverTakesALargeBuffer) {
  Pool pool = small_pool(1, 1);
  auto small = pool.try_allocate(100);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->capacity(), 4096u);
  EXPECT_FALSE(pool.try_allocate(100));  // the 64 KiB buffer stays reserved
  auto large = pool.try_allocate(5000);
  ASSERT_TRUE(large);
  EXPECT_EQ(large->capacity(), 65536u);
}

TEST(Pool, TryAllocateRejectsSizesNoClassHolds) {
  Pool pool = small_pool();
  auto r = pool.try_allocate(65537);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kTooLarge));
}

TEST(Pool, DroppedBufferGoesBackToThePool) {
  Pool pool = small_pool(1, 1);
  {
    auto b = pool.try_allocate(4096);
    ASSERT_TRUE(b);
    EXPECT_EQ(pool.stats().free, 1u);
  }
  EXPECT_EQ(pool.stats().free, 2u);
  EXPECT_EQ(pool.stats().allocated, 0u);
}

TEST(Pool, ResetReturnsEarlyAndLeavesAnEmptyHandle) {
  Pool pool = small_pool(1, 1);
  auto b = pool.try_allocate(1);
  ASSERT_TRUE(b);
  b->reset();
  EXPECT_FALSE(*b);
  EXPECT_EQ(pool.stats().free, 2u);
}

TEST(Pool, AllocateTimesOutWhenNothingComesBack) {
  Pool pool = small_pool(1, 0 + 1);
  auto a = pool.try_allocate(65536);
  ASSERT_TRUE(a);
  auto r = pool.allocate(65536, 30ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(Errc::kTimedOut));
}

TEST(Pool, AllocateWakesWhenAnotherThreadReturnsABuffer) {
  Pool pool = small_pool(1, 1);
  auto a = pool.try_allocate(65536);
  ASSERT_TRUE(a);
  std::thread t([b = std::move(*a)]() mutable {
    std::this_thread::sleep_for(50ms);
    b.reset();
  });
  auto r = pool.allocate(65536, 10s);
  t.join();
  ASSERT_TRUE(r) << r.error().message();
}

TEST(Pool, BuffersOutliveThePoolHandle) {
  Buffer b;
  {
    Pool pool = small_pool();
    auto r = pool.try_allocate(10);
    ASSERT_TRUE(r);
    b = std::move(*r);
  }
  std::memset(b.data(), 1, b.capacity());  // still mapped
  b.reset();
}

TEST(Pool, MemfdIsSealedAgainstShrinkingAndReadOnlyFdRefusesWritableMaps) {
  Pool pool = small_pool();
  auto& core = *detail::PoolAccess::core(pool);
  int ro = core.read_only_fd();
  EXPECT_EQ(fcntl(ro, F_GETFL) & O_ACCMODE, O_RDONLY);
  int seals = fcntl(ro, F_GET_SEALS);
  EXPECT_NE(seals & F_SEAL_SHRINK, 0);
  EXPECT_NE(seals & F_SEAL_GROW, 0);
  void* p = mmap(nullptr, core.total_size(), PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
  EXPECT_EQ(p, MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  // Re-opening the read-only fd read-write through /proc may succeed, but
  // the seals refuse every way of writing through it.
  int rw = open(("/proc/self/fd/" + std::to_string(ro)).c_str(), O_RDWR);
  if (rw >= 0) {
    EXPECT_NE(ftruncate(rw, 0), 0);
    EXPECT_EQ(errno, EPERM);
    EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0), MAP_FAILED);
    EXPECT_EQ(errno, EPERM);
    EXPECT_EQ(write(rw, "x", 1), -1);
    EXPECT_EQ(errno, EPERM);
    close(rw);
  }
  EXPECT_NE(seals & F_SEAL_FUTURE_WRITE, 0);
}

TEST(Pool, ManyThreadsAllocateAndReleaseWithoutLosingBuffers) {
  Pool pool = small_pool(8, 2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        auto b = pool.allocate(4096, 5s);
        ASSERT_TRUE(b);
        b->data()[0] = std::byte{1};
      }
    });
  for (auto& t : threads) t.join();
  auto s = pool.stats();
  EXPECT_EQ(s.free, s.total);
}

}  // namespace
}  // namespace fbuf

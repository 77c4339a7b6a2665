// Back-pressure on an exhausted pool: try_allocate fails fast, allocate
// waits, and a buffer returned by a consumer in another process wakes it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "fbuf/fbuf.h"
#include "pool_check.h"
#include "child_process.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(BackPressure, TryAllocateOnAnExhaustedPoolWouldBlock) {
  Pool pool(PoolOptions{.name = "it-exhausted", .classes = {{4096, 4}}, .policy = Policy::kVolatile});
  Sender sender(pool);
  std::vector<Buffer> held;
  for (int i = 0; i < 4; ++i) {
    Result<Buffer> b = pool.try_allocate(4096);
    ASSERT_TRUE(b) << "buffer " << i << ": " << b.error().message();
    held.push_back(std::move(*b));
  }
  Result<Buffer> none = pool.try_allocate(1);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), Errc::kWouldBlock) << none.error().message();
  Result<Buffer> none_either = sender.try_allocate(1);
  ASSERT_FALSE(none_either);
  EXPECT_EQ(none_either.error(), Errc::kWouldBlock) << none_either.error().message();
  Result<Buffer> late = pool.allocate(1, 20ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error(), Errc::kTimedOut) << late.error().message();
  Result<Buffer> too_big = pool.try_allocate(8192);
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error(), Errc::kTooLarge) << too_big.error().message();

  held.pop_back();
  EXPECT_TRUE(pool.try_allocate(4096)) << "a released buffer is free again";
}

TEST(BackPressure, AllocateWakesWhenAConsumerProcessReturnsABuffer) {
  const std::string service = unique_service("wake");
  Pool pool(PoolOptions{.name = "it-wake", .classes = {{4096, 8}}, .policy = Policy::kVolatile});
  std::optional<Sender> sender;
  sender.emplace(pool, service);
  Child consumer(FBUF_IT_PEER,
                 {"hold", "--service", service, "--views", "1", "--hold-ms", "200"});
  ASSERT_TRUE(sender->wait_for_receivers(1, 20s)) << consumer.output();

  std::vector<Buffer> held;
  for (int i = 0; i < 8; ++i) {
    Result<Buffer> b = sender->try_allocate(4096);
    ASSERT_TRUE(b) << "buffer " << i << ": " << b.error().message();
    held.push_back(std::move(*b));
  }
  Result<Buffer> none = pool.try_allocate(4096);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), Errc::kWouldBlock) << none.error().message();

  // One buffer goes to the consumer, which holds it for about 200 ms.
  std::error_code ec = sender->send(std::move(held.back()), 64, 5s);
  ASSERT_FALSE(ec) << ec.message();
  held.pop_back();

  const auto start = Clock::now();
  Result<Buffer> back = pool.allocate(4096, 2s);
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  ASSERT_TRUE(back) << "allocate(2 s) after " << waited.count()
                    << " ms: " << back.error().message() << "; " << describe(pool.stats())
                    << "\n" << consumer.output();
  std::printf("allocate woke after %lld ms\n", static_cast<long long>(waited.count()));
  EXPECT_NE(consumer.output().find("holding views=1"), std::string::npos) << consumer.output();

  back->reset();
  held.clear();
  sender.reset();
  const ExitStatus st = consumer.wait(30s);
  EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << consumer.output();
}

}  // namespace
}  // namespace fbuf::testing

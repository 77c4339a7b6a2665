// Deadlines saturate: a timeout of fbuf::kForever (nanoseconds::max()), or
// INT64_MAX through the C API, waits until the thing waited for happens,
// instead of overflowing `now + timeout` into the past and timing out at
// once. First the arithmetic at its edges, then every timed call.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "fbuf/base/deadline.h"
#include "fbuf/fbuf.h"
#include "fbuf/uf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using detail::Clock;
using detail::deadline_after;
using detail::time_left;

constexpr auto kYear = std::chrono::hours(24 * 365);

TEST(DeadlineAfter, SaturatesAtTheEndOfTimeForForever) {
  EXPECT_EQ(deadline_after(kForever), Clock::time_point::max());
  EXPECT_EQ(deadline_after(std::chrono::nanoseconds::max() - 1ns), Clock::time_point::max());
  // Exactly the room left before the clock's end, and a little less.
  const auto room = Clock::time_point::max() - Clock::now();
  EXPECT_EQ(deadline_after(room), Clock::time_point::max());
  const auto before = Clock::now();
  const auto d = deadline_after(room - 100 * kYear);
  EXPECT_GT(d, before);
  EXPECT_LT(d, Clock::time_point::max());
}

TEST(DeadlineAfter, IsNowForZeroAndNegativeTimeouts) {
  const auto before = Clock::now();
  for (auto t : {std::chrono::nanoseconds(0), -1ns, std::chrono::nanoseconds::min()}) {
    const auto d = deadline_after(t);
    EXPECT_GE(d, before);
    EXPECT_LE(d, Clock::now());
  }
}

TEST(DeadlineAfter, AddsAnOrdinaryTimeout) {
  const auto before = Clock::now();
  const auto d = deadline_after(1s);
  EXPECT_GE(d - before, 1s);
  EXPECT_LT(d - before, 2s);
}

TEST(TimeLeft, IsTheSliceWhileTheDeadlineIsFar) {
  EXPECT_EQ(time_left(Clock::time_point::max(), 20ms), 20ms);
  EXPECT_EQ(time_left(deadline_after(kForever), 50ms), 50ms);
  // An unbounded slice (the test hook's) gives all the time there is, and
  // that is positive and enormous, not wrapped.
  EXPECT_GT(time_left(Clock::time_point::max(), kForever), 100 * kYear);
}

TEST(TimeLeft, IsWhatRemainsNearTheDeadlineAndZeroOncePassed) {
  const auto d = Clock::now() + 5ms;
  const auto left = time_left(d, 20ms);
  EXPECT_GT(left, 0ns);
  EXPECT_LE(left, 5ms);
  EXPECT_EQ(time_left(Clock::now() - 1s, 20ms), 0ns);
  EXPECT_EQ(time_left(Clock::time_point::min(), 20ms), 0ns);
  EXPECT_EQ(time_left(Clock::now(), kForever), 0ns);
}

// --- Every timed call, with a timeout that never expires. ---

std::string service_name(const char* what) {
  return std::string("deadline/") + what + "/" + std::to_string(::getpid());
}

// Starts `call` on another thread; checks it is still waiting after
// 200 ms; then `provide`s what it waits for and returns its result, which
// must come within 2 s.
template <class R>
R waits_until_provided(std::function<R()> call, const std::function<void()>& provide) {
  auto f = std::async(std::launch::async, std::move(call));
  EXPECT_EQ(f.wait_for(200ms), std::future_status::timeout) << "returned at once instead of waiting";
  provide();
  EXPECT_EQ(f.wait_for(2s), std::future_status::ready) << "still waiting after what it waited for came";
  return f.get();
}

Pool one_buffer_pool(const char* name) { return Pool(PoolOptions{.name = name, .classes = {{4096, 1}}}); }

TEST(ForeverTimeout, ReceiveWaitsUntilSomethingIsSent) {
  Pool pool = one_buffer_pool("forever-receive");
  const std::string service = service_name("receive");
  Sender tx(pool, service);
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  auto r = waits_until_provided<Result<View>>([&] { return rx.receive(kForever); },
                                              [&] {
                                                auto b = tx.allocate(16, 1s);
                                                ASSERT_TRUE(b);
                                                ASSERT_FALSE(tx.send(std::move(*b), 16, 1s));
                                              });
  EXPECT_TRUE(r) << r.error().message();
}

TEST(ForeverTimeout, AllocateWaitsUntilABufferComesBack) {
  Pool pool = one_buffer_pool("forever-allocate");
  auto held = pool.try_allocate(16);
  ASSERT_TRUE(held);
  auto r = waits_until_provided<Result<Buffer>>([&] { return pool.allocate(16, kForever); },
                                                [&] { held->reset(); });
  EXPECT_TRUE(r) << r.error().message();
}

TEST(ForeverTimeout, SendWaitsForRingSpace) {
  Pool pool(PoolOptions{.name = "forever-send", .classes = {{4096, 4}}});
  const std::string service = service_name("send");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 2});
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  for (int i = 0; i < 2; ++i) {
    auto b = tx.allocate(16, 1s);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.send(std::move(*b), 16, 1s));
  }
  auto b = tx.allocate(16, 1s);
  ASSERT_TRUE(b);
  Result<View> taken = Errc::kWouldBlock;
  auto ec = waits_until_provided<std::error_code>([&] { return tx.send(std::move(*b), 16, kForever); },
                                                  [&] { taken = rx.receive(1s); });
  EXPECT_TRUE(taken);
  EXPECT_FALSE(ec) << ec.message();
}

TEST(ForeverTimeout, ConnectWaitsForTheServiceToAppear) {
  const std::string service = service_name("connect");
  Pool pool = one_buffer_pool("forever-connect");
  std::unique_ptr<Sender> tx;
  auto ok = waits_until_provided<bool>(
      [&] {
        try {
          return static_cast<bool>(Receiver::connect(service, {.connect_timeout = kForever}));
        } catch (const Error&) {
          return false;
        }
      },
      [&] { tx = std::make_unique<Sender>(pool, service); });
  EXPECT_TRUE(ok);
}

TEST(ForeverTimeout, WaitForReceiversWaitsForTheFirstOne) {
  Pool pool = one_buffer_pool("forever-wait");
  Sender tx(pool);
  Receiver rx;
  auto ok = waits_until_provided<bool>([&] { return tx.wait_for_receivers(1, kForever); },
                                       [&] { rx = tx.connect_local(); });
  EXPECT_TRUE(ok);
}

// --- The same through the C API: INT64_MAX nanoseconds. ---

struct UfPool {
  UfPool(const char* name, std::uint32_t count) {
    uf_size_class classes[] = {{4096, count}};
    EXPECT_EQ(uf_pool_create(name, classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  }
  ~UfPool() { uf_pool_destroy(pool); }
  uf_pool* pool = nullptr;
};

struct UfChannel {
  ~UfChannel() {
    if (ch) uf_channel_close(ch);
  }
  uf_channel* ch = nullptr;
};

TEST(ForeverTimeoutInC, AllocateGetAndWriteWaitWithInt64Max) {
  UfPool p("uf-forever", 2);
  const std::string service = service_name("uf");
  UfChannel tx, rx;
  ASSERT_EQ(uf_channel_listen(p.pool, service.c_str(), &tx.ch), UF_OK);
  ASSERT_EQ(uf_channel_connect(service.c_str(), 5'000'000'000, &rx.ch), UF_OK);
  ASSERT_EQ(uf_channel_wait_receivers(tx.ch, 1, INT64_MAX), UF_OK);

  // uf_get waits for a write.
  uf_buf* got = nullptr;
  auto e = waits_until_provided<uf_error>([&] { return uf_get(rx.ch, INT64_MAX, &got); },
                                          [&] {
                                            uf_buf* b = nullptr;
                                            ASSERT_EQ(uf_allocate(p.pool, 16, 0, &b), UF_OK);
                                            std::memcpy(uf_data(b), "forever", 8);
                                            ASSERT_EQ(uf_write(tx.ch, b, 8, INT64_MAX), UF_OK);
                                          });
  ASSERT_EQ(e, UF_OK);
  EXPECT_STREQ(static_cast<const char*>(uf_cdata(got)), "forever");

  // uf_allocate waits for a buffer to come back (one is held by `got`, one here).
  uf_buf* other = nullptr;
  ASSERT_EQ(uf_allocate(p.pool, 16, 0, &other), UF_OK);
  uf_buf* again = nullptr;
  e = waits_until_provided<uf_error>([&] { return uf_allocate(p.pool, 16, INT64_MAX, &again); },
                                     [&] { uf_deallocate(got); });
  ASSERT_EQ(e, UF_OK);
  uf_deallocate(again);
  uf_deallocate(other);
}

TEST(ForeverTimeoutInC, WriteWaitsForRingSpaceWithInt64Max) {
  // A ring of 256 slots: fill it from a pool larger than that, then one more.
  uf_size_class classes[] = {{4096, 300}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-forever-write", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  const std::string service = service_name("uf-write");
  UfChannel tx, rx;
  ASSERT_EQ(uf_channel_listen(pool, service.c_str(), &tx.ch), UF_OK);
  ASSERT_EQ(uf_channel_connect(service.c_str(), 5'000'000'000, &rx.ch), UF_OK);
  ASSERT_EQ(uf_channel_wait_receivers(tx.ch, 1, 5'000'000'000), UF_OK);
  uf_error last = UF_OK;
  int sent = 0;
  for (; sent < 300; ++sent) {
    uf_buf* b = nullptr;
    ASSERT_EQ(uf_allocate(pool, 16, 0, &b), UF_OK);
    last = uf_write(tx.ch, b, 16, 0);
    if (last != UF_OK) {
      uf_deallocate(b);
      break;
    }
  }
  ASSERT_EQ(last, UF_EAGAIN) << "the ring never filled";
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(pool, 16, 0, &b), UF_OK);
  uf_buf* got = nullptr;
  auto e = waits_until_provided<uf_error>([&] { return uf_write(tx.ch, b, 16, INT64_MAX); },
                                          [&] { ASSERT_EQ(uf_get(rx.ch, 1'000'000'000, &got), UF_OK); });
  EXPECT_EQ(e, UF_OK);
  uf_deallocate(got);
  uf_channel_close(rx.ch);
  rx.ch = nullptr;
  uf_channel_close(tx.ch);
  tx.ch = nullptr;
  uf_pool_destroy(pool);
}

TEST(ForeverTimeoutInC, ConnectAndWaitReceiversWaitWithInt64Max) {
  UfPool p("uf-forever-connect", 1);
  const std::string service = service_name("uf-connect");
  UfChannel tx, rx;
  auto e = waits_until_provided<uf_error>([&] { return uf_channel_connect(service.c_str(), INT64_MAX, &rx.ch); },
                                          [&] { ASSERT_EQ(uf_channel_listen(p.pool, service.c_str(), &tx.ch), UF_OK); });
  EXPECT_EQ(e, UF_OK);

  UfChannel local_tx, local_rx;
  ASSERT_EQ(uf_channel_listen(p.pool, nullptr, &local_tx.ch), UF_OK);
  e = waits_until_provided<uf_error>([&] { return uf_channel_wait_receivers(local_tx.ch, 1, INT64_MAX); },
                                     [&] { ASSERT_EQ(uf_channel_connect_local(local_tx.ch, &local_rx.ch), UF_OK); });
  EXPECT_EQ(e, UF_OK);
}

}  // namespace
}  // namespace fbuf

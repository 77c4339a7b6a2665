#include "fbuf/error.h"

#include <gtest/gtest.h>

#include <chrono>

#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

TEST(Errc, MapsToTheFbufCategoryWithReadableMessages) {
  std::error_code ec = Errc::kWouldBlock;
  EXPECT_EQ(ec.category().name(), std::string("fbuf"));
  EXPECT_NE(ec.message().find("would block"), std::string::npos);
  EXPECT_EQ(std::error_code(Errc::kPeerGone).message(), "peer gone: the other end closed or died");
}

TEST(Result, HoldsAValueOrAnError) {
  Result<int> good = 7;
  ASSERT_TRUE(good);
  EXPECT_EQ(*good, 7);
  EXPECT_FALSE(good.error());

  Result<int> bad = Errc::kTimedOut;
  EXPECT_FALSE(bad);
  EXPECT_EQ(bad.error(), make_error_code(Errc::kTimedOut));
}

TEST(ResultDeathTest, ReadingTheValueOfAnErrorAbortsNamingTheError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Result<int> bad = Errc::kTimedOut;
  EXPECT_DEATH(static_cast<void>(*bad),
               "fbuf: requirement failed: the value of an error Result was read \\(error: fbuf: timed out\\)");
  Result<std::string> gone = Errc::kPeerGone;
  EXPECT_DEATH(static_cast<void>(gone->size()), "value of an error Result was read.*peer gone");
  EXPECT_DEATH(static_cast<void>(*std::move(gone)), "value of an error Result was read.*peer gone");
}

TEST(Error, CarriesTheCodeAndTheContext) {
  Error e(make_error_code(Errc::kProtocol), "decoding Welcome");
  EXPECT_EQ(e.code(), make_error_code(Errc::kProtocol));
  EXPECT_NE(std::string(e.what()).find("decoding Welcome"), std::string::npos);
}

TEST(Policy, HasNames) {
  EXPECT_STREQ(to_string(Policy::kVolatile), "volatile");
  EXPECT_STREQ(to_string(Policy::kReadOnly), "read_only");
  EXPECT_STREQ(to_string(Policy::kCopyOnWrite), "copy_on_write");
}

// Moved-from handles: the hot-path calls say kClosed instead of crashing.
using namespace std::chrono_literals;
const std::error_code kClosedCode = make_error_code(Errc::kClosed);

Pool one_pool() { return Pool(PoolOptions{.name = "moved-from", .classes = {{4096, 4}}}); }

TEST(MovedFromSender, SaysClosedOnTheHotPath) {
  Pool pool = one_pool();
  Sender a(pool);
  Sender b = std::move(a);
  auto buf = pool.try_allocate(1);
  ASSERT_TRUE(buf);
  // NOLINTBEGIN(bugprone-use-after-move)
  EXPECT_EQ(a.try_send(std::move(*buf), 1), kClosedCode);
  EXPECT_TRUE(*buf);  // still the caller's
  EXPECT_EQ(a.send(std::move(*buf), 1, 1ms), kClosedCode);
  std::size_t len = 1;
  EXPECT_EQ(a.send_many(std::span<Buffer>(&*buf, 1), std::span<const std::size_t>(&len, 1), 1ms), kClosedCode);
  EXPECT_TRUE(*buf);
  EXPECT_EQ(a.try_allocate(1).error(), kClosedCode);
  EXPECT_EQ(a.allocate(1, 1ms).error(), kClosedCode);
  EXPECT_EQ(a.receiver_count(), 0u);
  EXPECT_FALSE(a.wait_for_receivers(1, 1ms));
  EXPECT_FALSE(a.wait_for_receivers(0, 1ms));
  SenderStats st = a.stats();
  EXPECT_EQ(st.sent, 0u);
  EXPECT_EQ(st.receivers_connected, 0u);
  EXPECT_EQ(a.service(), "");
  EXPECT_THROW(a.connect_local(), Error);
  EXPECT_THROW(a.pool(), Error);
  // NOLINTEND(bugprone-use-after-move)

  // The moved-to one works.
  Receiver rx = b.connect_local();
  ASSERT_FALSE(b.try_send(std::move(*buf), 1));
  EXPECT_TRUE(rx.try_receive());
}

TEST(MovedFromReceiver, SaysClosedOnTheHotPath) {
  Pool pool = one_pool();
  Sender tx(pool);
  Receiver a = tx.connect_local();
  Receiver b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.try_receive().error(), kClosedCode);
  EXPECT_EQ(a.receive(1ms).error(), kClosedCode);
  EXPECT_EQ(a.stats().received, 0u);
  EXPECT_EQ(Receiver().try_receive().error(), kClosedCode);  // never connected

  auto buf = pool.try_allocate(1);
  ASSERT_FALSE(tx.try_send(std::move(*buf), 1));
  EXPECT_TRUE(b.try_receive());
}

// Receivers that are gone give their places back: with max_receivers 8,
// a ninth in-process receiver after eight destroyed ones connects.
TEST(ConnectLocal, ReceiversDestroyedFreeTheirPlaces) {
  Pool pool = one_pool();
  Sender tx(pool, SenderOptions{.max_receivers = 8});
  for (int i = 0; i < 9; ++i) {
    Receiver rx = tx.connect_local();
    EXPECT_EQ(tx.receiver_count(), 1u) << "receiver " << i + 1;
  }
  // And eight alive at once are the limit.
  std::vector<Receiver> alive;
  for (int i = 0; i < 8; ++i) alive.push_back(tx.connect_local());
  EXPECT_THROW(tx.connect_local(), Error);
}

}  // namespace
}  // namespace fbuf

#include "fbuf/error.h"

#include <gtest/gtest.h>

#include "fbuf/pool.h"

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

}  // namespace
}  // namespace fbuf

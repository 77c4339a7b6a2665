// The C API in one process: errors, ownership on failure, batches.
#include "fbuf/uf.h"

#include <gtest/gtest.h>

#include <cstring>

namespace {

struct Fixture {
  Fixture(uf_policy policy = UF_POLICY_VOLATILE) {
    uf_size_class classes[] = {{4096, 4}};
    EXPECT_EQ(uf_pool_create("uf-test", classes, 1, policy, &pool), UF_OK);
    EXPECT_EQ(uf_channel_listen(pool, nullptr, &tx), UF_OK);
    EXPECT_EQ(uf_channel_connect_local(tx, &rx), UF_OK);
  }
  ~Fixture() {
    uf_channel_close(rx);
    uf_channel_close(tx);
    uf_pool_destroy(pool);
  }
  uf_pool* pool = nullptr;
  uf_channel* tx = nullptr;
  uf_channel* rx = nullptr;
};

TEST(UfApi, NamesEveryError) {
  EXPECT_STREQ(uf_strerror(UF_OK), "success");
  EXPECT_NE(std::strstr(uf_strerror(UF_EPEERGONE), "peer gone"), nullptr);
  EXPECT_STREQ(uf_strerror(static_cast<uf_error>(15)), "unknown uf_error");
}

TEST(UfApi, RejectsBadArguments) {
  uf_pool* pool = nullptr;
  EXPECT_EQ(uf_pool_create("x", nullptr, 0, UF_POLICY_VOLATILE, &pool), UF_EINVAL);
  uf_size_class zero[] = {{0, 1}};
  EXPECT_EQ(uf_pool_create("x", zero, 1, UF_POLICY_VOLATILE, &pool), UF_EINVAL);
  EXPECT_EQ(uf_allocate(nullptr, 1, 0, nullptr), UF_EINVAL);
  EXPECT_EQ(uf_write(nullptr, nullptr, 0, 0), UF_EINVAL);
  uf_channel* ch = nullptr;
  EXPECT_EQ(uf_channel_connect("uf-test/nobody", 1000000, &ch), UF_ESYSTEM);
}

TEST(UfApi, AllocateWriteGetDeallocate) {
  Fixture f;
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 100, 0, &b), UF_OK);
  std::memcpy(uf_data(b), "hello", 6);
  ASSERT_EQ(uf_write(f.tx, b, 6, 0), UF_OK);
  uf_buf* got = nullptr;
  ASSERT_EQ(uf_get(f.rx, 1000000000, &got), UF_OK);
  EXPECT_EQ(uf_size(got), 6u);
  EXPECT_STREQ(static_cast<const char*>(uf_cdata(got)), "hello");
  EXPECT_EQ(uf_data(got), nullptr);  // received buffers are read-only
  uf_deallocate(got);
  uint32_t free_count = 0, total = 0;
  uf_pool_counts(f.pool, &free_count, &total);
  EXPECT_EQ(free_count, total);
  EXPECT_EQ(uf_get(f.rx, 0, &got), UF_EAGAIN);
}

TEST(UfApi, ExhaustionAndFailedWritesLeaveTheCallerOwningTheBuffer) {
  Fixture f;
  uf_buf* held[4];
  for (auto& h : held) ASSERT_EQ(uf_allocb(f.tx, 10, 0, &h), UF_OK);
  uf_buf* none = nullptr;
  EXPECT_EQ(uf_allocate(f.pool, 10, 0, &none), UF_EAGAIN);
  EXPECT_EQ(uf_allocate(f.pool, 10, 1000000, &none), UF_ETIMEDOUT);
  EXPECT_EQ(uf_allocate(f.pool, 5000, 0, &none), UF_ETOOLARGE);
  EXPECT_EQ(uf_write(f.tx, held[0], 5000, 0), UF_EINVAL);  // longer than the buffer
  std::memset(uf_data(held[0]), 1, 10);                     // still ours
  for (auto* h : held) uf_deallocate(h);
}

TEST(UfApi, WritevSendsABatchOrNothing) {
  Fixture f(UF_POLICY_COPY_ON_WRITE);
  uf_buf* bufs[3];
  size_t lens[3] = {1, 2, 3};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(uf_allocate(f.pool, 10, 0, &bufs[i]), UF_OK);
    std::memset(uf_data(bufs[i]), 'a' + i, 10);
  }
  size_t bad[3] = {1, 2, 5000};
  EXPECT_EQ(uf_writev(f.tx, bufs, bad, 3, 0), UF_EINVAL);
  for (auto* b : bufs) EXPECT_NE(uf_data(b), nullptr);  // all still ours
  ASSERT_EQ(uf_writev(f.tx, bufs, lens, 3, 0), UF_OK);
  for (int i = 0; i < 3; ++i) {
    uf_buf* got = nullptr;
    ASSERT_EQ(uf_get(f.rx, 0, &got), UF_OK);
    EXPECT_EQ(uf_size(got), lens[i]);
    EXPECT_EQ(static_cast<const char*>(uf_cdata(got))[0], 'a' + i);
    uf_deallocate(got);
  }
}

TEST(UfApi, GetReportsPeerGoneAfterTheSenderCloses) {
  uf_size_class classes[] = {{4096, 2}};
  uf_pool* pool = nullptr;
  uf_channel *tx = nullptr, *rx = nullptr;
  ASSERT_EQ(uf_pool_create("uf-gone", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  ASSERT_EQ(uf_channel_listen(pool, nullptr, &tx), UF_OK);
  ASSERT_EQ(uf_channel_connect_local(tx, &rx), UF_OK);
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocb(tx, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_write(tx, b, 1, 0), UF_OK);
  uf_channel_close(tx);
  uf_buf* got = nullptr;
  EXPECT_EQ(uf_get(rx, 1000000000, &got), UF_OK);
  uf_deallocate(got);
  EXPECT_EQ(uf_get(rx, 1000000000, &got), UF_EPEERGONE);
  uf_channel_close(rx);
  uf_pool_destroy(pool);
}

}  // namespace

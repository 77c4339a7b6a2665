// The C API in one process: errors, ownership on failure, batches.
#include "fbuf/uf.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

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
  EXPECT_NE(std::strstr(uf_strerror(UF_EMSG), "uf_msg_receive"), nullptr);
  EXPECT_STREQ(uf_strerror(static_cast<uf_error>(17)), "unknown uf_error");
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

TEST(UfApi, ListenAndConnectRejectAnEmptyServiceName) {
  Fixture f;
  uf_channel* ch = nullptr;
  EXPECT_EQ(uf_channel_listen(f.pool, "", &ch), UF_EINVAL);
  EXPECT_EQ(uf_channel_connect("", 0, &ch), UF_EINVAL);
  EXPECT_EQ(ch, nullptr);
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

// The exact message for `handle`: "fbuf: <call>: <kind> handle 0x... <how>".
std::string ended(const char* call, const char* kind, const void* handle, const char* how) {
  char p[32];
  std::snprintf(p, sizeof p, "%p", handle);
  return std::string("fbuf: ") + call + ": " + kind + " handle " + p + " " + how;
}

TEST(UfApi, ASecondWriteOfAConsumedBufferIsInvalid) {
  Fixture f;
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_write(f.tx, b, 1, 0), UF_OK);
  EXPECT_EQ(uf_write(f.tx, b, 1, 0), UF_EINVAL);
  uf_buf* batch[1] = {b};
  size_t lens[1] = {1};
  EXPECT_EQ(uf_writev(f.tx, batch, lens, 1, 0), UF_EINVAL);
  uf_buf* got = nullptr;
  ASSERT_EQ(uf_get(f.rx, 0, &got), UF_OK);  // sent once
  uf_deallocate(got);
  EXPECT_EQ(uf_get(f.rx, 0, &got), UF_EAGAIN);
}

TEST(UfApi, WritevWithAConsumedBufferIsInvalidAndLeavesTheOthersOwned) {
  Fixture f;
  uf_buf *a = nullptr, *b = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &a), UF_OK);
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_write(f.tx, b, 1, 0), UF_OK);
  uf_buf* batch[2] = {a, b};
  size_t lens[2] = {1, 1};
  EXPECT_EQ(uf_writev(f.tx, batch, lens, 2, 0), UF_EINVAL);
  uf_buf* twice[2] = {a, a};
  EXPECT_EQ(uf_writev(f.tx, twice, lens, 2, 0), UF_EINVAL);
  std::memset(uf_data(a), 1, 1);  // still ours
  ASSERT_EQ(uf_writev(f.tx, batch, lens, 1, 0), UF_OK);
}

TEST(UfApi, CallsOnAClosedChannelAreInvalid) {
  Fixture f;
  uf_channel *tx = nullptr, *rx = nullptr;
  ASSERT_EQ(uf_channel_listen(f.pool, nullptr, &tx), UF_OK);
  ASSERT_EQ(uf_channel_connect_local(tx, &rx), UF_OK);
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_buf* none = nullptr;
  uf_channel* ch = nullptr;
  EXPECT_EQ(uf_allocb(tx, 1, 0, &none), UF_EINVAL);
  EXPECT_EQ(uf_write(tx, b, 1, 0), UF_EINVAL);
  size_t len = 1;
  EXPECT_EQ(uf_writev(tx, &b, &len, 1, 0), UF_EINVAL);
  EXPECT_EQ(uf_channel_connect_local(tx, &ch), UF_EINVAL);
  EXPECT_EQ(uf_channel_wait_receivers(tx, 0, 0), UF_EINVAL);
  EXPECT_EQ(uf_get(rx, 0, &none), UF_EINVAL);
  struct uf_sender_stats ss = {};
  ss.size = sizeof ss;
  EXPECT_EQ(uf_sender_stats(tx, &ss), UF_EINVAL);
  struct uf_receiver_stats rs = {};
  rs.size = sizeof rs;
  EXPECT_EQ(uf_receiver_stats(rx, &rs), UF_EINVAL);
  EXPECT_EQ(none, nullptr);
  EXPECT_EQ(ch, nullptr);
  std::memset(uf_data(b), 1, 1);  // the failed writes left it ours
  uf_deallocate(b);
}

TEST(UfApi, CallsOnADestroyedPoolAreInvalid) {
  uf_size_class classes[] = {{4096, 1}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-destroyed", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_pool_destroy(pool);
  uf_buf* b = nullptr;
  uf_channel* ch = nullptr;
  EXPECT_EQ(uf_allocate(pool, 1, 0, &b), UF_EINVAL);
  EXPECT_EQ(uf_channel_listen(pool, nullptr, &ch), UF_EINVAL);
  struct uf_pool_stats ps = {};
  ps.size = sizeof ps;
  EXPECT_EQ(uf_pool_stats(pool, &ps), UF_EINVAL);
}

TEST(UfApi, NullHandlesAreNoOpsToEnd) {
  uf_deallocate(nullptr);
  uf_channel_close(nullptr);
  uf_pool_destroy(nullptr);
  EXPECT_EQ(uf_data(nullptr), nullptr);
  EXPECT_EQ(uf_size(nullptr), 0u);
}

// Death tests run in a forked child (the default "fast" style), so the
// handle's address in the message is the one the parent sees. These
// fixtures start no threads.
TEST(UfApiDeathTest, DeallocatingTwiceAbortsNamingTheCallAndTheHandle) {
  Fixture f;
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  uf_deallocate(b);
  EXPECT_DEATH(uf_deallocate(b), ended("uf_deallocate", "buffer", b, "was already deallocated"));
}

TEST(UfApiDeathTest, DeallocatingAWrittenBufferAborts) {
  Fixture f;
  uf_buf *b = nullptr, *c = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &c), UF_OK);
  ASSERT_EQ(uf_write(f.tx, b, 1, 0), UF_OK);
  size_t len = 1;
  ASSERT_EQ(uf_writev(f.tx, &c, &len, 1, 0), UF_OK);
  EXPECT_DEATH(uf_deallocate(b), ended("uf_deallocate", "buffer", b, "was already consumed by uf_write"));
  EXPECT_DEATH(uf_deallocate(c), ended("uf_deallocate", "buffer", c, "was already consumed by uf_writev"));
}

TEST(UfApiDeathTest, ReadingAnEndedBufferAborts) {
  Fixture f;
  uf_buf *b = nullptr, *got = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_write(f.tx, b, 1, 0), UF_OK);
  ASSERT_EQ(uf_get(f.rx, 0, &got), UF_OK);
  uf_deallocate(got);
  EXPECT_DEATH(uf_data(b), ended("uf_data", "buffer", b, "was already consumed by uf_write"));
  EXPECT_DEATH(uf_cdata(got), ended("uf_cdata", "buffer", got, "was already deallocated"));
  EXPECT_DEATH(uf_size(got), ended("uf_size", "buffer", got, "was already deallocated"));
}

TEST(UfApiDeathTest, ClosingAChannelTwiceAborts) {
  Fixture f;
  uf_channel* tx = nullptr;
  ASSERT_EQ(uf_channel_listen(f.pool, nullptr, &tx), UF_OK);
  uf_channel_close(tx);
  EXPECT_DEATH(uf_channel_close(tx), ended("uf_channel_close", "channel", tx, "was already closed"));
}

TEST(UfApiDeathTest, UsingADestroyedPoolWhereNoErrorCanBeReturnedAborts) {
  uf_size_class classes[] = {{4096, 1}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-destroyed", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_pool_destroy(pool);
  uint32_t free_count = 0;
  EXPECT_DEATH(uf_pool_counts(pool, &free_count, nullptr),
               ended("uf_pool_counts", "pool", pool, "was already destroyed"));
  EXPECT_DEATH(uf_pool_destroy(pool), ended("uf_pool_destroy", "pool", pool, "was already destroyed"));
}

TEST(UfApiDeathTest, AHandleOfTheWrongKindAborts) {
  Fixture f;
  auto* not_a_buffer = reinterpret_cast<uf_buf*>(f.tx);
  EXPECT_DEATH(uf_deallocate(not_a_buffer), "fbuf: uf_deallocate: 0x[0-9a-f]+ is a channel handle, not a buffer handle");
  EXPECT_EQ(uf_write(f.tx, not_a_buffer, 1, 0), UF_EINVAL);
}

// Handles end from several threads at once, well past the quarantine's
// size, and a handle ended in one thread is caught in another.
TEST(UfApi, HandlesEndSafelyFromManyThreads) {
  uf_size_class classes[] = {{4096, 64}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-threads", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([pool] {
      for (int i = 0; i < 3000; ++i) {
        uf_buf* b = nullptr;
        if (uf_allocate(pool, 1, -1, &b) != UF_OK) {
          ADD_FAILURE() << "uf_allocate failed";
          return;
        }
        static_cast<char*>(uf_data(b))[0] = 1;
        uf_deallocate(b);
      }
    });
  for (auto& t : threads) t.join();
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocate(pool, 1, 0, &b), UF_OK);
  std::thread([b] { uf_deallocate(b); }).join();
  uf_channel* tx = nullptr;
  ASSERT_EQ(uf_channel_listen(pool, nullptr, &tx), UF_OK);
  EXPECT_EQ(uf_write(tx, b, 1, 0), UF_EINVAL);
  uf_channel_close(tx);
  uint32_t free_count = 0, total = 0;
  uf_pool_counts(pool, &free_count, &total);
  EXPECT_EQ(free_count, total);
  uf_pool_destroy(pool);
}

TEST(UfStats, ReportWhatTheCxxApiReports) {
  Fixture f;
  uf_buf *a = nullptr, *b = nullptr, *held = nullptr;
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &a), UF_OK);
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &b), UF_OK);
  ASSERT_EQ(uf_allocate(f.pool, 1, 0, &held), UF_OK);
  ASSERT_EQ(uf_write(f.tx, a, 1, 0), UF_OK);
  ASSERT_EQ(uf_write(f.tx, b, 1, 0), UF_OK);
  uf_buf* got = nullptr;
  ASSERT_EQ(uf_get(f.rx, 0, &got), UF_OK);
  uf_deallocate(got);  // one back, one still in the ring

  struct uf_pool_stats ps = {};
  ps.size = sizeof ps;
  ASSERT_EQ(uf_pool_stats(f.pool, &ps), UF_OK);
  EXPECT_EQ(ps.size, sizeof ps);
  EXPECT_EQ(ps.total, 4u);
  EXPECT_EQ(ps.free, 2u);
  EXPECT_EQ(ps.allocated, 1u);
  EXPECT_EQ(ps.in_flight, 1u);
  EXPECT_EQ(ps.rejected_returns, 0u);

  struct uf_sender_stats ss = {};
  ss.size = sizeof ss;
  ASSERT_EQ(uf_sender_stats(f.tx, &ss), UF_OK);
  EXPECT_EQ(ss.sent, 2u);
  EXPECT_EQ(ss.delivered, 2u);
  EXPECT_EQ(ss.receivers_connected, 1u);
  EXPECT_EQ(ss.receivers_lost, 0u);
  EXPECT_EQ(ss.dropped, 0u);
  EXPECT_EQ(ss.receivers_cut_off, 0u);

  struct uf_receiver_stats rs = {};
  rs.size = sizeof rs;
  ASSERT_EQ(uf_receiver_stats(f.rx, &rs), UF_OK);
  EXPECT_EQ(rs.received, 1u);  // (`returned` counts returns through a ring: remote receivers only)
  EXPECT_EQ(rs.rejected_descriptors, 0u);
  EXPECT_EQ(rs.dropped, 0u);
  uf_deallocate(held);
}

TEST(UfStats, RejectWrongEndsNullAndShortStructs) {
  Fixture f;
  struct uf_pool_stats ps = {};
  struct uf_sender_stats ss = {};
  struct uf_receiver_stats rs = {};
  ps.size = sizeof ps;
  ss.size = sizeof ss;
  rs.size = sizeof rs;
  EXPECT_EQ(uf_sender_stats(f.rx, &ss), UF_EINVAL);    // a receiving end
  EXPECT_EQ(uf_receiver_stats(f.tx, &rs), UF_EINVAL);  // a sending end
  EXPECT_EQ(uf_pool_stats(nullptr, &ps), UF_EINVAL);
  EXPECT_EQ(uf_sender_stats(nullptr, &ss), UF_EINVAL);
  EXPECT_EQ(uf_receiver_stats(nullptr, &rs), UF_EINVAL);
  EXPECT_EQ(uf_pool_stats(f.pool, nullptr), UF_EINVAL);
  EXPECT_EQ(uf_sender_stats(f.tx, nullptr), UF_EINVAL);
  EXPECT_EQ(uf_receiver_stats(f.rx, nullptr), UF_EINVAL);
  ps.size = 0;
  EXPECT_EQ(uf_pool_stats(f.pool, &ps), UF_EINVAL);
  ss.size = sizeof ss - 1;
  EXPECT_EQ(uf_sender_stats(f.tx, &ss), UF_EINVAL);
  rs.size = sizeof(size_t);
  EXPECT_EQ(uf_receiver_stats(f.rx, &rs), UF_EINVAL);
}

// A caller compiled against a later, longer struct: what this version does
// not know reads 0, and nothing past the caller's size is written.
TEST(UfStats, ALongerStructGetsItsUnknownFieldsZeroed) {
  Fixture f;
  struct Later {
    struct uf_pool_stats known;
    uint64_t unknown[2];
  };
  struct {
    Later s;
    uint64_t past;
  } m;
  std::memset(&m, 0xab, sizeof m);
  m.s.known.size = sizeof(Later);
  ASSERT_EQ(uf_pool_stats(f.pool, &m.s.known), UF_OK);
  EXPECT_EQ(m.s.known.size, sizeof(Later));
  EXPECT_EQ(m.s.known.total, 4u);
  EXPECT_EQ(m.s.unknown[0], 0u);
  EXPECT_EQ(m.s.unknown[1], 0u);
  EXPECT_EQ(m.past, 0xababababababababu);
}

}  // namespace

namespace {

// A sending end whose options skip a receiver that stops taking: the other
// receiver gets every buffer, and what the staller missed is counted on
// both sides.
TEST(UfSenderOptions, SkipASlowReceiverAndCountWhatItMissed) {
  uf_size_class classes[] = {{4096, 8}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-options", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_sender_options o = {};
  o.size = sizeof o;
  o.ring_capacity = 2;
  o.slow_receiver = UF_SLOW_SKIP;
  uf_channel *tx = nullptr, *honest = nullptr, *staller = nullptr;
  ASSERT_EQ(uf_channel_listen_with(pool, nullptr, &o, &tx), UF_OK);
  ASSERT_EQ(uf_channel_connect_local(tx, &honest), UF_OK);
  ASSERT_EQ(uf_channel_connect_local(tx, &staller), UF_OK);
  constexpr int kSends = 5;
  for (int i = 0; i < kSends; ++i) {
    uf_buf* b = nullptr;
    ASSERT_EQ(uf_allocb(tx, 1, 0, &b), UF_OK);
    static_cast<char*>(uf_data(b))[0] = static_cast<char>('a' + i);
    ASSERT_EQ(uf_write(tx, b, 1, 0), UF_OK) << "send " << i << " must not wait for the staller";
    uf_buf* got = nullptr;
    ASSERT_EQ(uf_get(honest, 0, &got), UF_OK);
    EXPECT_EQ(static_cast<const char*>(uf_cdata(got))[0], static_cast<char>('a' + i));
    uf_deallocate(got);
  }
  struct uf_sender_stats ss = {};
  ss.size = sizeof ss;
  ASSERT_EQ(uf_sender_stats(tx, &ss), UF_OK);
  EXPECT_EQ(ss.sent, static_cast<uint64_t>(kSends));
  EXPECT_EQ(ss.dropped, static_cast<uint64_t>(kSends - 2));  // its ring holds 2
  struct uf_receiver_stats rs = {};
  rs.size = sizeof rs;
  ASSERT_EQ(uf_receiver_stats(staller, &rs), UF_OK);
  EXPECT_EQ(rs.dropped, static_cast<uint64_t>(kSends - 2));
  uf_channel_close(staller);
  uf_channel_close(honest);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
}

TEST(UfSenderOptions, RejectBadOptions) {
  uf_size_class classes[] = {{4096, 2}};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("uf-bad-options", classes, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_channel* tx = nullptr;
  uf_sender_options o = {};
  EXPECT_EQ(uf_channel_listen_with(pool, nullptr, &o, &tx), UF_EINVAL);  // size not set
  o.size = sizeof o;
  o.hold_timeout_ns = -1;
  EXPECT_EQ(uf_channel_listen_with(pool, nullptr, &o, &tx), UF_EINVAL);
  o.hold_timeout_ns = 0;
  o.ring_capacity = 3;  // not a power of two
  EXPECT_EQ(uf_channel_listen_with(pool, nullptr, &o, &tx), UF_EINVAL);
  o.ring_capacity = 0;
  EXPECT_EQ(uf_channel_listen_with(pool, nullptr, &o, &tx), UF_OK);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
}

}  // namespace

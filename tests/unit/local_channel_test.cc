// Sender/Receiver inside one process: in-process receivers (thread
// handoff) and receivers connected through the service socket.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/buffers/view_owner.h"
#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::string unique_service(const char* what) {
  return std::string("unit/") + what + "/" + std::to_string(::getpid());
}

Pool make_pool(std::uint32_t count = 16) {
  return Pool(PoolOptions{.name = "channel-test", .classes = {{4096, count}}});
}

void fill(Buffer& b, std::uint64_t seq) { std::memcpy(b.data(), &seq, sizeof seq); }
std::uint64_t read_seq(const View& v) {
  std::uint64_t s;
  std::memcpy(&s, v.data(), sizeof s);
  return s;
}

// An in-process receiver's budget counts the views it holds, not only what
// is queued in its ring: a receiver that keeps two views is skipped once
// its budget of two is reached, although its ring is empty.
TEST(LocalChannel, ABudgetCountsTheViewsAReceiverHolds) {
  Pool pool(PoolOptions{.name = "local-budget", .classes = {{4096, 8}}});
  Sender tx(pool, SenderOptions{.slow_receiver = SlowReceiverPolicy::kSkip, .receiver_budget = 2});
  Receiver honest = tx.connect_local();
  Receiver holder = tx.connect_local();
  std::vector<View> kept;
  for (int i = 0; i < 6; ++i) {
    auto b = tx.try_allocate(16);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.try_send(std::move(*b), 16)) << "send " << i;
    auto v = honest.try_receive();
    ASSERT_TRUE(v) << "send " << i;
    if (auto h = holder.try_receive()) kept.push_back(std::move(*h));
  }
  EXPECT_EQ(kept.size(), 2u);
  EXPECT_EQ(tx.stats().dropped, 4u);
  EXPECT_EQ(holder.stats().dropped, 4u);
  kept.clear();
  EXPECT_EQ(pool.stats().free, 8u);
}

TEST(LocalChannel, HandsBuffersToAnotherThreadInOrder) {
  Pool pool = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  constexpr std::uint64_t kCount = 100000;
  std::thread consumer([&rx] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      auto v = rx.receive(10s);
      ASSERT_TRUE(v) << v.error().message();
      ASSERT_EQ(v->size(), 8u);
      ASSERT_EQ(read_seq(*v), i);
    }
  });
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto b = tx.allocate(8, 10s);
    ASSERT_TRUE(b);
    fill(*b, i);
    ASSERT_FALSE(tx.send(std::move(*b), 8, 10s));
  }
  consumer.join();
  auto s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(tx.stats().sent, kCount);
}

TEST(LocalChannel, ViewReadsTheSameMemoryTheSenderWrote) {
  Pool pool = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = tx.try_allocate(100);
  ASSERT_TRUE(b);
  std::byte* where = b->data();
  std::memset(b->data(), 0x5a, 100);
  ASSERT_FALSE(tx.try_send(std::move(*b), 100));
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->size(), 100u);
  EXPECT_EQ(v->data()[99], std::byte{0x5a});
  // Zero copy: the view is a read-only alias of the very same pages, so a
  // (volatile-policy) write through the sender's old pointer shows in it.
  const_cast<std::byte*>(where)[99] = std::byte{0x33};
  EXPECT_EQ(v->data()[99], std::byte{0x33});
}

TEST(LocalChannel, TrySendWithNoReceiverFailsAndKeepsTheBuffer) {
  Pool pool = make_pool();
  Sender tx(pool);
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  EXPECT_EQ(tx.try_send(std::move(*b), 10), make_error_code(Errc::kNoReceivers));
  EXPECT_TRUE(*b);  // still ours
  EXPECT_EQ(pool.stats().allocated, 1u);
}

TEST(LocalChannel, TrySendOnAFullRingFailsAndKeepsTheBuffer) {
  Pool pool = make_pool(8);
  Sender tx(pool, SenderOptions{.ring_capacity = 2});
  Receiver rx = tx.connect_local();
  for (int i = 0; i < 2; ++i) {
    auto b = tx.try_allocate(10);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.try_send(std::move(*b), 10));
  }
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  EXPECT_EQ(tx.try_send(std::move(*b), 10), make_error_code(Errc::kWouldBlock));
  EXPECT_TRUE(*b);
  EXPECT_EQ(tx.send(std::move(*b), 10, 20ms), make_error_code(Errc::kTimedOut));
  EXPECT_TRUE(*b);
  ASSERT_TRUE(rx.try_receive());  // dropped at once: frees a slot
  EXPECT_FALSE(tx.send(std::move(*b), 10, 1s));
  EXPECT_FALSE(*b);
}

TEST(LocalChannel, SendRejectsAForeignBufferAndAnOverlongLength) {
  Pool pool = make_pool();
  Pool other = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto foreign = other.try_allocate(10);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(tx.try_send(std::move(*foreign), 10), make_error_code(Errc::kInvalidArgument));
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  EXPECT_EQ(tx.try_send(std::move(*b), 4097), make_error_code(Errc::kInvalidArgument));
  EXPECT_EQ(tx.try_send(Buffer{}, 0), make_error_code(Errc::kInvalidArgument));
}

TEST(LocalChannel, FanOutReturnsTheBufferAfterTheLastRelease) {
  Pool pool = make_pool(1);
  Sender tx(pool);
  std::vector<Receiver> rxs;
  for (int i = 0; i < 3; ++i) rxs.push_back(tx.connect_local());
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  std::memcpy(b->data(), "fan-out!!", 10);
  ASSERT_FALSE(tx.try_send(std::move(*b), 10));
  std::vector<View> views;
  for (auto& rx : rxs) {
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    EXPECT_EQ(std::memcmp(v->data(), "fan-out!!", 10), 0);
    views.push_back(std::move(*v));
  }
  EXPECT_EQ(tx.stats().delivered, 3u);
  views[0].reset();
  views[1].reset();
  EXPECT_FALSE(pool.try_allocate(10));  // one holder left
  views[2].reset();
  EXPECT_TRUE(pool.try_allocate(10));
}

// Views released by several threads at once, some of the same buffer
// (fan-out), while the sender allocates: the lock-free local return list
// loses and repeats nothing (run under TSan too, docs/testing.md).
TEST(LocalChannel, ViewsReleasedByManyThreadsAllComeBack) {
  Pool pool(PoolOptions{.name = "local-many", .classes = {{4096, 16}}});
  Sender tx(pool);
  std::vector<Receiver> rxs;
  for (int i = 0; i < 3; ++i) rxs.push_back(tx.connect_local());
  constexpr int kMessages = 20000;
  std::vector<std::thread> consumers;
  std::atomic<int> bad{0};
  for (auto& rx : rxs)
    consumers.emplace_back([&rx, &bad] {
      for (int i = 0; i < kMessages; ++i) {
        auto v = rx.receive(10s);
        if (!v || v->size() != 8 || v->data()[0] != std::byte(i & 0xff)) bad.fetch_add(1);
      }
    });
  for (int i = 0; i < kMessages; ++i) {
    auto b = tx.allocate(8, 10s);
    ASSERT_TRUE(b) << i;
    b->data()[0] = std::byte(i & 0xff);
    ASSERT_FALSE(tx.send(std::move(*b), 8, 10s)) << i;
  }
  for (auto& t : consumers) t.join();
  EXPECT_EQ(bad.load(), 0);
  PoolStats s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.rejected_returns, 0u);
}

// A volatile pool collects views released in this process when the class
// runs dry (as it collects remote returns), not at every allocation: the
// free buffers go first, then every released one comes back, each once.
TEST(LocalChannel, AVolatilePoolTakesReleasedViewsBackWhenTheClassRunsDry) {
  Pool pool = make_pool(4);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  for (int i = 0; i < 2; ++i) {
    auto b = tx.try_allocate(10);
    ASSERT_TRUE(b);
    ASSERT_FALSE(tx.try_send(std::move(*b), 10));
  }
  std::vector<std::uint32_t> released;
  for (int i = 0; i < 2; ++i) {
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    released.push_back(v->index());
  }  // both views dropped: released, not yet collected
  std::vector<Buffer> held;
  for (int i = 0; i < 4; ++i) {
    auto b = tx.try_allocate(10);
    ASSERT_TRUE(b) << i << ": " << b.error().message();
    held.push_back(std::move(*b));
  }
  std::vector<std::uint32_t> indices;
  for (const Buffer& b : held) indices.push_back(b.index());
  std::sort(indices.begin(), indices.end());
  EXPECT_EQ(indices, (std::vector<std::uint32_t>{0, 1, 2, 3}));
  // The two never-sent buffers came first, the released ones after.
  EXPECT_TRUE(std::find(released.begin(), released.end(), held[0].index()) == released.end());
  EXPECT_TRUE(std::find(released.begin(), released.end(), held[1].index()) == released.end());
  EXPECT_FALSE(tx.try_allocate(10));  // each came back once
  held.clear();
  PoolStats s = pool.stats();
  EXPECT_EQ(s.free, 4u);
  EXPECT_EQ(s.rejected_returns, 0u);
}

// An owner's table of shared views (the path's in-process forwarding):
// releases skip its lock until the first share, and a share ends once.
TEST(SharedRefs, EachShareEndsOnceAndOnlyForItsView) {
  detail::SharedRefs refs;
  EXPECT_FALSE(refs.take(0, 1, 7));  // nothing ever shared
  ASSERT_TRUE(refs.add(0, 1, 7));
  ASSERT_TRUE(refs.add(0, 1, 7));
  EXPECT_FALSE(refs.take(0, 1, 8));  // another generation
  EXPECT_FALSE(refs.take(0, 2, 7));  // another buffer
  EXPECT_TRUE(refs.take(0, 1, 7));
  EXPECT_TRUE(refs.take(0, 1, 7));
  EXPECT_FALSE(refs.take(0, 1, 7));  // both shares ended: the reference goes back
}

TEST(LocalChannel, ClosingAReceiverReturnsWhatItNeverTook) {
  Pool pool = make_pool(4);
  Sender tx(pool);
  {
    Receiver rx = tx.connect_local();
    for (int i = 0; i < 4; ++i) {
      auto b = tx.try_allocate(10);
      ASSERT_TRUE(b);
      ASSERT_FALSE(tx.try_send(std::move(*b), 10));
    }
    EXPECT_EQ(pool.stats().free, 0u);
  }
  EXPECT_EQ(pool.stats().free, 4u);
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  EXPECT_EQ(tx.try_send(std::move(*b), 10), make_error_code(Errc::kNoReceivers));
}

TEST(LocalChannel, ReceiverDrainsThenSeesPeerGoneWhenTheSenderCloses) {
  Pool pool = make_pool();
  Receiver rx;
  {
    Sender tx(pool);
    rx = tx.connect_local();
    for (int i = 0; i < 3; ++i) {
      auto b = tx.try_allocate(10);
      ASSERT_TRUE(b);
      ASSERT_FALSE(tx.try_send(std::move(*b), 10));
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(rx.receive(1s));
  auto end = rx.receive(1s);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error(), make_error_code(Errc::kPeerGone));
}

TEST(SocketChannel, StreamsThroughTheServiceSocketInOneProcess) {
  Pool pool = make_pool(32);
  const std::string name = unique_service("stream");
  Sender tx(pool, name);
  Receiver rx = Receiver::connect(name);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  constexpr std::uint64_t kCount = 50000;
  std::thread consumer([&rx] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      auto v = rx.receive(10s);
      ASSERT_TRUE(v) << v.error().message();
      ASSERT_EQ(read_seq(*v), i);
    }
  });
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto b = tx.allocate(8, 10s);
    ASSERT_TRUE(b) << b.error().message();
    fill(*b, i);
    ASSERT_FALSE(tx.send(std::move(*b), 8, 10s));
  }
  consumer.join();
  auto s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(rx.stats().received, kCount);
}

TEST(SocketChannel, ASecondSenderCannotTakeATakenName) {
  Pool pool = make_pool();
  const std::string name = unique_service("taken");
  Sender tx(pool, name);
  EXPECT_THROW(Sender(pool, name), Error);
}

TEST(SocketChannel, ConnectToNobodyFailsWithinItsTimeout) {
  EXPECT_THROW(Receiver::connect(unique_service("nobody"), ReceiverOptions{.connect_timeout = 50ms}), Error);
}

TEST(SocketChannel, ClosedReceiverIsDroppedAndItsBuffersReclaimed) {
  Pool pool = make_pool(8);
  const std::string name = unique_service("detach");
  Sender tx(pool, name);
  {
    Receiver rx = Receiver::connect(name);
    ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
    for (int i = 0; i < 5; ++i) {
      auto b = tx.try_allocate(10);
      ASSERT_TRUE(b);
      ASSERT_FALSE(tx.try_send(std::move(*b), 10));
    }
    auto held = rx.try_receive();  // one taken, four never taken
    ASSERT_TRUE(held);
  }
  // The control thread sees the hang-up; wait for it by polling counts.
  for (int i = 0; i < 500 && (tx.receiver_count() != 0 || pool.stats().free != 8); ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pool.stats().free, 8u);
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  EXPECT_EQ(tx.try_send(std::move(*b), 10), make_error_code(Errc::kNoReceivers));
}

TEST(SocketChannel, ReceiverSeesPeerGoneAfterDrainingWhenTheSenderCloses) {
  Pool pool = make_pool();
  const std::string name = unique_service("sender-close");
  Receiver rx;
  {
    Sender tx(pool, name);
    rx = Receiver::connect(name);
    ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
    for (int i = 0; i < 3; ++i) {
      auto b = tx.try_allocate(10);
      ASSERT_TRUE(b);
      ASSERT_FALSE(tx.try_send(std::move(*b), 10));
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(rx.receive(1s));
  auto end = rx.receive(1s);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error(), make_error_code(Errc::kPeerGone));
}

}  // namespace
}  // namespace fbuf

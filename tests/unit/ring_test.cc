#include "fbuf/base/ring.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

namespace fbuf::detail {
namespace {

using namespace std::chrono_literals;

// A ring with its memory, as the owner lays it out.
struct TestRing {
  explicit TestRing(std::uint32_t capacity) : slots(capacity) {}
  RingProducer producer() { return RingProducer(&idx, slots.data(), static_cast<std::uint32_t>(slots.size())); }
  RingConsumer consumer() { return RingConsumer(&idx, slots.data(), static_cast<std::uint32_t>(slots.size())); }
  RingIndices idx;
  std::vector<Descriptor> slots;
};

Descriptor desc(std::uint64_t seq) { return Descriptor{0, static_cast<std::uint32_t>(seq), 1, 0, 0, 0, seq}; }

TEST(Ring, DeliversInOrderAcrossWrapAround) {
  TestRing r(4);
  auto p = r.producer();
  auto c = r.consumer();
  Descriptor d;
  for (std::uint64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(p.push(desc(i)));
    ASSERT_EQ(c.pop(d), RingStatus::kOk);
    EXPECT_EQ(d.sequence, i);
  }
  EXPECT_EQ(c.pop(d), RingStatus::kEmpty);
}

TEST(Ring, ReportsFullAtCapacityAndAcceptsAgainAfterAPop) {
  TestRing r(8);
  auto p = r.producer();
  auto c = r.consumer();
  for (std::uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(p.push(desc(i)));
  EXPECT_EQ(p.reserve(), RingStatus::kFull);
  EXPECT_FALSE(p.push(desc(8)));
  Descriptor d;
  ASSERT_EQ(c.pop(d), RingStatus::kOk);
  EXPECT_EQ(d.sequence, 0u);
  EXPECT_TRUE(p.push(desc(8)));
}

TEST(Ring, TakenSlotsGoBackToTheProducerOnlyAtRelease) {
  TestRing r(4);
  auto p = r.producer();
  auto c = r.consumer();
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(p.push(desc(i)));
  Descriptor d;
  ASSERT_EQ(c.take(d), RingStatus::kOk);
  ASSERT_EQ(c.take(d), RingStatus::kOk);
  EXPECT_EQ(d.sequence, 1u);
  EXPECT_EQ(p.reserve(), RingStatus::kFull);  // taken, not yet released
  c.release();
  EXPECT_EQ(p.reserve(2), RingStatus::kOk);
  EXPECT_EQ(p.reserve(3), RingStatus::kFull);
  c.release();  // nothing new: no change
  EXPECT_EQ(r.idx.head.load(), 2u);
}

TEST(Ring, BatchWritesBecomeVisibleOnlyAtPublish) {
  TestRing r(8);
  auto p = r.producer();
  auto c = r.consumer();
  ASSERT_EQ(p.reserve(3), RingStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) p.write(desc(i));
  Descriptor d;
  EXPECT_EQ(c.pop(d), RingStatus::kEmpty);
  p.publish();
  for (std::uint64_t i = 0; i < 3; ++i) {
    ASSERT_EQ(c.pop(d), RingStatus::kOk);
    EXPECT_EQ(d.sequence, i);
  }
}

TEST(Ring, ProducerRejectsAHeadThePeerForged) {
  TestRing r(4);
  auto p = r.producer();
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(p.push(desc(i)));
  r.idx.head.store(1000);  // beyond the tail
  EXPECT_EQ(p.reserve(), RingStatus::kCorrupt);
  r.idx.head.store(~0ull);
  EXPECT_EQ(p.reserve(), RingStatus::kCorrupt);
}

TEST(Ring, ConsumerRejectsATailThePeerForged) {
  TestRing r(4);
  auto c = r.consumer();
  Descriptor d;
  r.idx.tail.store(5);  // more than capacity ahead of head
  EXPECT_EQ(c.pop(d), RingStatus::kCorrupt);
  r.idx.tail.store(~0ull);
  EXPECT_EQ(c.pop(d), RingStatus::kCorrupt);
  r.idx.tail.store(2);  // back in range: reads what is there
  EXPECT_EQ(c.pop(d), RingStatus::kOk);
}

TEST(Ring, ProducerDoesNotTrustTheSharedTail) {
  TestRing r(4);
  auto p = r.producer();
  auto c = r.consumer();
  ASSERT_TRUE(p.push(desc(0)));
  r.idx.tail.store(0);  // a peer rewinds the producer's published tail
  ASSERT_TRUE(p.push(desc(1)));  // the producer republishes from its own copy
  Descriptor d;
  ASSERT_EQ(c.pop(d), RingStatus::kOk);
  EXPECT_EQ(d.sequence, 0u);
  ASSERT_EQ(c.pop(d), RingStatus::kOk);
  EXPECT_EQ(d.sequence, 1u);
}

TEST(Ring, TwoThreadsPassAMillionDescriptorsInOrderWithSleeps) {
  TestRing r(64);
  auto p = r.producer();
  auto c = r.consumer();
  constexpr std::uint64_t kCount = 1'000'000;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      while (!p.push(desc(i)))
        sleep_until(r.idx.producer_waiters, r.idx.space_seq, 10ms,
                    [&] { return p.reserve() == RingStatus::kOk; });
    }
  });
  std::uint64_t expected = 0;
  Descriptor d;
  while (expected < kCount) {
    RingStatus st = c.pop(d);
    if (st == RingStatus::kOk) {
      ASSERT_EQ(d.sequence, expected);
      ++expected;
    } else {
      ASSERT_EQ(st, RingStatus::kEmpty);
      sleep_until(r.idx.consumer_waiters, r.idx.data_seq, 10ms, [&] { return c.readable(); });
    }
  }
  producer.join();
  EXPECT_EQ(c.pop(d), RingStatus::kEmpty);
}

TEST(Ring, SleeperIsWokenByThePeerWithoutWaitingForItsTimeout) {
  TestRing r(4);
  auto p = r.producer();
  auto c = r.consumer();
  std::thread producer([&] {
    std::this_thread::sleep_for(20ms);
    p.push(desc(42));
  });
  auto start = std::chrono::steady_clock::now();
  bool ready = false;
  // A generous timeout: a lost wake-up makes this loop run for a minute,
  // and the test fails on the count of sleeps below, not on timing.
  int sleeps = 0;
  while (!ready && sleeps < 3) {
    ready = sleep_until(r.idx.consumer_waiters, r.idx.data_seq, 60s, [&] { return c.readable(); });
    ++sleeps;
  }
  producer.join();
  EXPECT_TRUE(ready);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  Descriptor d;
  ASSERT_EQ(c.pop(d), RingStatus::kOk);
  EXPECT_EQ(d.sequence, 42u);
}

}  // namespace
}  // namespace fbuf::detail

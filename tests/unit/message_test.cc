// fbuf::Message within one process: building, split/clip/join edge cases,
// iovecs and copy-out, and sending as one unit to in-process receivers
// (all or nothing under a full ring and an exhausted budget).
#include <gtest/gtest.h>
#include <sys/uio.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

Pool make_pool(const char* name, std::uint32_t count = 16) {
  return Pool(PoolOptions{.name = name, .classes = {{4096, count}}});
}

// A buffer whose first `n` bytes are `first`, first + 1, ...
Buffer pattern(Pool& pool, std::size_t n, unsigned first) {
  auto b = pool.try_allocate(n);
  EXPECT_TRUE(b);
  for (std::size_t i = 0; i < n; ++i) b->data()[i] = static_cast<std::byte>(first + i);
  return std::move(*b);
}

std::vector<std::byte> bytes_of(const Message& m) {
  std::vector<std::byte> out(m.size());
  EXPECT_EQ(m.copy_to(out), m.size());
  return out;
}

std::vector<std::byte> expected(unsigned first, std::size_t n) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(first + i);
  return out;
}

std::vector<std::byte> cat(std::vector<std::byte> a, const std::vector<std::byte>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Slices: [0..10) of A, [0..20) of B, [5..35) of C: 60 bytes.
Message three_slices(Pool& pool) {
  Message m;
  EXPECT_FALSE(m.append(pattern(pool, 10, 0), 10));
  EXPECT_FALSE(m.append(pattern(pool, 20, 100), 20));
  EXPECT_FALSE(m.append(pattern(pool, 40, 200), 5, 30));
  return m;
}

std::vector<std::byte> three_bytes() { return cat(cat(expected(0, 10), expected(100, 20)), expected(205, 30)); }

TEST(Message, BuildsAppendsAndPrepends) {
  Pool pool = make_pool("msg-build");
  Message m;
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.size(), 0u);
  ASSERT_FALSE(m.append(pattern(pool, 8, 10), 8));
  ASSERT_FALSE(m.prepend(pattern(pool, 4, 0), 4));
  ASSERT_FALSE(m.append(pattern(pool, 16, 50), 2, 6));
  EXPECT_EQ(m.slice_count(), 3u);
  EXPECT_EQ(m.size(), 18u);
  EXPECT_EQ(bytes_of(m), cat(cat(expected(0, 4), expected(10, 8)), expected(52, 6)));
  EXPECT_EQ(m.slice(2).size(), 6u);
  EXPECT_EQ(m.slice(2)[0], std::byte{52});
  // A Buffer slice is writable until sent.
  ASSERT_EQ(m.writable_slice(0).size(), 4u);
  m.writable_slice(0)[0] = std::byte{99};
  EXPECT_EQ(m.slice(0)[0], std::byte{99});
  m.clear();
  EXPECT_EQ(pool.stats().free, 16u);
}

TEST(Message, RefusesBadRangesAndLeavesTheHandleWithTheCaller) {
  Pool pool = make_pool("msg-refuse");
  Message m;
  Buffer b = pattern(pool, 8, 0);
  const std::size_t cap = b.capacity();
  EXPECT_EQ(m.append(std::move(b), cap + 1), Errc::kInvalidArgument);
  EXPECT_TRUE(b);
  EXPECT_EQ(m.append(std::move(b), cap, 1), Errc::kInvalidArgument);
  EXPECT_EQ(m.append(std::move(b), SIZE_MAX, 2), Errc::kInvalidArgument);
  EXPECT_TRUE(b);
  Buffer empty;
  EXPECT_EQ(m.append(std::move(empty), 0), Errc::kInvalidArgument);
  View none;
  EXPECT_EQ(m.append(std::move(none)), Errc::kInvalidArgument);
  EXPECT_TRUE(m.empty());
  // A range ending exactly at the capacity is fine.
  EXPECT_FALSE(m.append(std::move(b), cap - 1, 1));
  EXPECT_FALSE(b);
}

TEST(Message, RefusesMoreThanMaxSlices) {
  Pool pool = make_pool("msg-max", 80);
  Message m;
  for (std::size_t i = 0; i < Message::kMaxSlices; ++i) ASSERT_FALSE(m.append(pattern(pool, 1, 0), 1)) << i;
  Buffer b = pattern(pool, 1, 0);
  EXPECT_EQ(m.append(std::move(b), 1), Errc::kInvalidArgument);
  EXPECT_EQ(m.prepend(std::move(b), 1), Errc::kInvalidArgument);
  EXPECT_TRUE(b);
  Message other;
  ASSERT_FALSE(other.append(std::move(b), 1));
  EXPECT_EQ(m.append(std::move(other)), Errc::kInvalidArgument);
  EXPECT_EQ(other.slice_count(), 1u);
  EXPECT_EQ(m.slice_count(), Message::kMaxSlices);
}

TEST(Message, SplitsAtZeroAtTheEndAtABoundaryAndInsideASlice) {
  Pool pool = make_pool("msg-split");
  const auto all = three_bytes();
  for (std::size_t at : {std::size_t{0}, std::size_t{10}, std::size_t{17}, std::size_t{30}, std::size_t{59},
                         std::size_t{60}}) {
    Message m = three_slices(pool);
    Result<Message> rest = m.split(at);
    ASSERT_TRUE(rest) << at;
    EXPECT_EQ(m.size(), at);
    EXPECT_EQ(rest->size(), 60 - at);
    EXPECT_EQ(bytes_of(m), std::vector<std::byte>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(at)));
    EXPECT_EQ(bytes_of(*rest), std::vector<std::byte>(all.begin() + static_cast<std::ptrdiff_t>(at), all.end()));
    // Slices: a boundary cut adds none, an inner cut adds one.
    const bool inner = at != 0 && at != 10 && at != 30 && at != 60;
    EXPECT_EQ(m.slice_count() + rest->slice_count(), inner ? 4u : 3u) << at;
    // Join them back: a slice cut in two becomes one again.
    ASSERT_FALSE(m.append(std::move(*rest)));
    EXPECT_TRUE(rest->empty());
    EXPECT_EQ(m.slice_count(), 3u);
    EXPECT_EQ(bytes_of(m), all);
  }
  EXPECT_EQ(pool.stats().free, 16u);
  Message m = three_slices(pool);
  EXPECT_EQ(m.split(61).error(), Errc::kInvalidArgument);
  EXPECT_EQ(m.size(), 60u);
  Message empty;
  Result<Message> r = empty.split(0);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->empty());
}

TEST(Message, AHalfKeepsASharedBufferUntilBothAreGone) {
  Pool pool = make_pool("msg-share");
  Message m;
  ASSERT_FALSE(m.append(pattern(pool, 100, 0), 100));
  Result<Message> rest = m.split(40);
  ASSERT_TRUE(rest);
  EXPECT_EQ(pool.stats().allocated, 1u);
  m.clear();
  EXPECT_EQ(pool.stats().allocated, 1u);  // the other half still holds it
  EXPECT_EQ(bytes_of(*rest), expected(40, 60));
  rest->clear();
  EXPECT_EQ(pool.stats().free, 16u);
}

TEST(Message, ClipsToAnyRangeAndDropsWhatIsLeftOut) {
  Pool pool = make_pool("msg-clip");
  const auto all = three_bytes();
  struct Case {
    std::size_t offset, length, slices;
  };
  for (Case c : {Case{0, 60, 3}, Case{0, 0, 0}, Case{60, 0, 0}, Case{5, 50, 3}, Case{10, 20, 1}, Case{12, 3, 1},
                 Case{0, 10, 1}, Case{30, 30, 1}, Case{9, 2, 2}}) {
    Message m = three_slices(pool);
    ASSERT_FALSE(m.clip(c.offset, c.length)) << c.offset << "+" << c.length;
    EXPECT_EQ(m.size(), c.length);
    EXPECT_EQ(m.slice_count(), c.slices) << c.offset << "+" << c.length;
    EXPECT_EQ(bytes_of(m), std::vector<std::byte>(all.begin() + static_cast<std::ptrdiff_t>(c.offset),
                                                  all.begin() + static_cast<std::ptrdiff_t>(c.offset + c.length)));
    // Slices dropped by the clip went back to the pool already.
    EXPECT_EQ(pool.stats().allocated, c.slices);
  }
  Message m = three_slices(pool);
  EXPECT_EQ(m.clip(50, 11), Errc::kInvalidArgument);
  EXPECT_EQ(m.clip(61, 0), Errc::kInvalidArgument);
  EXPECT_EQ(m.clip(1, SIZE_MAX), Errc::kInvalidArgument);
  EXPECT_EQ(m.size(), 60u);
}

TEST(Message, JoinsMessagesFromSeveralPoolsAndKeepsOrder) {
  Pool a = make_pool("msg-join-a");
  Pool b = make_pool("msg-join-b");
  Message head, tail;
  ASSERT_FALSE(head.append(pattern(a, 8, 0), 8));
  ASSERT_FALSE(tail.append(pattern(b, 8, 100), 8));
  ASSERT_FALSE(tail.append(pattern(a, 8, 200), 8));
  Message front;
  ASSERT_FALSE(front.append(pattern(b, 4, 50), 4));
  ASSERT_FALSE(head.append(std::move(tail)));
  ASSERT_FALSE(head.prepend(std::move(front)));
  EXPECT_TRUE(tail.empty());
  EXPECT_TRUE(front.empty());
  EXPECT_EQ(head.slice_count(), 4u);
  EXPECT_EQ(bytes_of(head), cat(cat(cat(expected(50, 4), expected(0, 8)), expected(100, 8)), expected(200, 8)));
  // Split across the pool boundary, then clip across it.
  Result<Message> rest = head.split(12);
  ASSERT_TRUE(rest);
  EXPECT_EQ(bytes_of(*rest), cat(expected(100, 8), expected(200, 8)));
  ASSERT_FALSE(rest->clip(6, 4));
  EXPECT_EQ(bytes_of(*rest), cat(expected(106, 2), expected(200, 2)));
  // Joining a message with itself is refused; joining an empty one is a no-op.
  EXPECT_EQ(head.append(std::move(head)), Errc::kInvalidArgument);
  Message none;
  EXPECT_FALSE(head.append(std::move(none)));
  EXPECT_FALSE(none.append(std::move(head)));
  EXPECT_EQ(none.size(), 12u);
}

TEST(Message, ExportsIovecsAndCopiesOut) {
  Pool pool = make_pool("msg-iov");
  Message m = three_slices(pool);
  iovec few[2];
  EXPECT_EQ(m.iovecs(few, 2), 0u);
  iovec iov[4];
  ASSERT_EQ(m.iovecs(iov, 4), 3u);
  std::vector<std::byte> gathered;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(iov[i].iov_base, static_cast<const void*>(m.slice(static_cast<std::size_t>(i)).data()));
    const auto* p = static_cast<const std::byte*>(iov[i].iov_base);
    gathered.insert(gathered.end(), p, p + iov[i].iov_len);
  }
  EXPECT_EQ(gathered, three_bytes());
  // copy_to from an offset, into a short span, and past the end.
  std::vector<std::byte> part(15);
  EXPECT_EQ(m.copy_to(part, 5), 15u);
  const auto all = three_bytes();
  EXPECT_EQ(part, std::vector<std::byte>(all.begin() + 5, all.begin() + 20));
  EXPECT_EQ(m.copy_to(part, 50), 10u);
  EXPECT_EQ(m.copy_to(part, 60), 0u);
  EXPECT_EQ(m.copy_to(part, 1000), 0u);
}

TEST(MessageSend, ArrivesWholeAtEveryInProcessReceiver) {
  Pool pool = make_pool("msg-send");
  Sender tx(pool);
  Receiver r1 = tx.connect_local();
  Receiver r2 = tx.connect_local();
  Message m = three_slices(pool);
  ASSERT_FALSE(tx.try_send(std::move(m)));
  EXPECT_TRUE(m.empty());
  for (Receiver* r : {&r1, &r2}) {
    Result<Message> got = r->try_receive_message();
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_EQ(got->slice_count(), 3u);
    EXPECT_EQ(bytes_of(*got), three_bytes());
    EXPECT_TRUE(got->writable_slice(0).empty());  // received slices are Views
    EXPECT_EQ(r->try_receive_message().error(), Errc::kWouldBlock);
  }
  EXPECT_EQ(tx.stats().sent, 3u);
  EXPECT_EQ(pool.stats().free, 16u);
}

TEST(MessageSend, PlainReceiveLeavesAMessageForReceiveMessage) {
  Pool pool = make_pool("msg-plain");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 1), 4));
  ASSERT_FALSE(tx.try_send(three_slices(pool)));
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 9), 4));
  Result<View> v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->bytes()[0], std::byte{1});
  EXPECT_EQ(rx.try_receive().error(), Errc::kMessage);
  EXPECT_EQ(rx.try_receive().error(), Errc::kMessage);  // nothing overtakes it
  EXPECT_FALSE(rx.arm());                              // something is waiting
  Result<Message> m = rx.receive_message(1s);
  ASSERT_TRUE(m);
  EXPECT_EQ(bytes_of(*m), three_bytes());
  // A single buffer comes to receive_message() as a one-slice message.
  Result<Message> one = rx.try_receive_message();
  ASSERT_TRUE(one);
  EXPECT_EQ(one->slice_count(), 1u);
  EXPECT_EQ(one->slice(0)[0], std::byte{9});
  v->reset();
  m->clear();
  one->clear();
  EXPECT_EQ(pool.stats().free, 16u);
}

TEST(MessageSend, AMessageLeftInTheStashGoesBackWhenTheReceiverCloses) {
  Pool pool = make_pool("msg-stash");
  Sender tx(pool);
  {
    Receiver rx = tx.connect_local();
    ASSERT_FALSE(tx.try_send(three_slices(pool)));
    EXPECT_EQ(rx.try_receive().error(), Errc::kMessage);
  }
  EXPECT_EQ(pool.stats().free, 16u);
}

TEST(MessageSend, AFullRingFailsTheWholeSendAndLeavesTheSlicesUsable) {
  Pool pool = make_pool("msg-full");
  Sender tx(pool, SenderOptions{.ring_capacity = 4});
  Receiver rx = tx.connect_local();
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 0), 4));
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 0), 4));
  Message m = three_slices(pool);  // 3 slots needed, 2 free
  EXPECT_EQ(tx.try_send(std::move(m)), Errc::kWouldBlock);
  EXPECT_EQ(tx.send(std::move(m), 5ms), Errc::kTimedOut);
  ASSERT_EQ(m.slice_count(), 3u);
  EXPECT_EQ(bytes_of(m), three_bytes());
  m.writable_slice(0)[0] = std::byte{77};  // still the caller's, still writable
  EXPECT_EQ(tx.stats().sent, 2u);
  // Nothing of it was published: the receiver sees the two buffers only.
  ASSERT_TRUE(rx.try_receive());
  ASSERT_TRUE(rx.try_receive());
  EXPECT_EQ(rx.try_receive().error(), Errc::kWouldBlock);
  ASSERT_FALSE(tx.try_send(std::move(m)));
  Result<Message> got = rx.try_receive_message();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->slice(0)[0], std::byte{77});
}

TEST(MessageSend, AnExhaustedBudgetSkipsTheWholeMessage) {
  Pool pool = make_pool("msg-budget");
  Sender tx(pool, SenderOptions{.slow_receiver = SlowReceiverPolicy::kSkip, .receiver_budget = 4});
  Receiver slow = tx.connect_local();
  Receiver fast = tx.connect_local();
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 0), 4));
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 0), 4));
  ASSERT_TRUE(fast.try_receive());
  ASSERT_TRUE(fast.try_receive());
  // slow holds 2 of 4: a 3-slice message is skipped for it, whole.
  ASSERT_FALSE(tx.try_send(three_slices(pool)));
  EXPECT_EQ(slow.stats().dropped, 3u);
  ASSERT_TRUE(fast.try_receive_message());
  ASSERT_TRUE(slow.try_receive());
  ASSERT_TRUE(slow.try_receive());
  EXPECT_EQ(slow.try_receive_message().error(), Errc::kWouldBlock);
}

TEST(MessageSend, AnExhaustedBudgetOfEveryReceiverLeavesTheMessageWithTheCaller) {
  Pool pool = make_pool("msg-budget-all");
  Sender tx(pool, SenderOptions{.slow_receiver = SlowReceiverPolicy::kSkip, .receiver_budget = 2});
  Receiver rx = tx.connect_local();
  Message m = three_slices(pool);
  EXPECT_EQ(tx.try_send(std::move(m)), Errc::kWouldBlock);
  EXPECT_EQ(bytes_of(m), three_bytes());
  EXPECT_EQ(rx.try_receive_message().error(), Errc::kWouldBlock);
  EXPECT_EQ(pool.stats().allocated, 3u);
}

// Protection applies to every Buffer slice: under copy_on_write, writes by
// the sender after the send (through pointers it kept) go to its private
// copies; the receiver reads every slice as sent.
TEST(MessageSend, CopyOnWriteProtectsEverySliceOfAMessage) {
  Pool pool(PoolOptions{.name = "msg-cow", .classes = {{4096, 8}}, .policy = Policy::kCopyOnWrite});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  Message m;
  std::byte* raw[3];
  for (int i = 0; i < 3; ++i) {
    Buffer b = pattern(pool, 32, static_cast<unsigned>(10 * i));
    raw[i] = b.data();
    ASSERT_FALSE(m.append(std::move(b), 4, 16));
  }
  ASSERT_FALSE(tx.try_send(std::move(m)));
  for (std::byte* p : raw) std::memset(p, 0xEE, 32);
  Result<Message> got = rx.try_receive_message();
  ASSERT_TRUE(got);
  ASSERT_EQ(got->slice_count(), 3u);
  EXPECT_EQ(bytes_of(*got), cat(cat(expected(4, 16), expected(14, 16)), expected(24, 16)));
  for (int i = 0; i < 3; ++i) EXPECT_NE(got->slice(static_cast<std::size_t>(i)).data(), raw[i] + 4);
}

TEST(MessageSend, RefusesWhatItCannotSendAsOneUnit) {
  Pool pool = make_pool("msg-refuse-send");
  Pool other = make_pool("msg-refuse-other");
  Sender tx(pool, SenderOptions{.ring_capacity = 2});
  Receiver rx = tx.connect_local();
  Message empty;
  EXPECT_EQ(tx.try_send(std::move(empty)), Errc::kInvalidArgument);
  // More slices than the ring holds.
  Message big = three_slices(pool);
  EXPECT_EQ(tx.try_send(std::move(big)), Errc::kInvalidArgument);
  EXPECT_EQ(big.slice_count(), 3u);
  // A Buffer of another pool.
  Message foreign;
  ASSERT_FALSE(foreign.append(pattern(other, 4, 0), 4));
  EXPECT_EQ(tx.try_send(std::move(foreign)), Errc::kInvalidArgument);
  // A Buffer whose other half is in another message.
  Message half;
  ASSERT_FALSE(half.append(pattern(pool, 8, 0), 8));
  Result<Message> rest = half.split(4);
  ASSERT_TRUE(rest);
  EXPECT_EQ(tx.try_send(std::move(half)), Errc::kInvalidArgument);
  rest->clear();
  EXPECT_FALSE(tx.try_send(std::move(half)));  // alone now
  Result<Message> got = rx.try_receive_message();
  ASSERT_TRUE(got);
  EXPECT_EQ(bytes_of(*got), expected(0, 4));
  // A View of this pool received in this process: not forwardable.
  Message again;
  ASSERT_FALSE(tx.try_send(pattern(pool, 4, 5), 4));
  Result<View> rv = rx.try_receive();
  ASSERT_TRUE(rv);
  ASSERT_FALSE(again.append(std::move(*rv)));
  EXPECT_EQ(tx.try_send(std::move(again)), Errc::kUnsupported);
  EXPECT_EQ(again.slice_count(), 1u);
}

}  // namespace
}  // namespace fbuf

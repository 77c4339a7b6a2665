// Cap'n Proto messages built in pool buffers and read in place
// (fbuf/typed/capnp.h): by a receiver thread and by a receiver process
// (the reader's segments are the received buffers themselves), and hostile
// messages (out-of-bounds and oversize pointers, far pointers to missing
// segments, nesting and traversal bombs, capabilities, ragged segments)
// refused and counted, their buffers returned. The receiver process is this
// binary re-executed with --receiver (see main() below).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "fbuf/typed/capnp.h"
#include "pool_check.h"
#include "typed_test.capnp.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::string g_self;  // this binary, for re-exec

Pool make_pool(const char* name, std::uint32_t count = 8) {
  return Pool(PoolOptions{.name = name,
                          .classes = {{4096, count}, {65536, count}, {1 << 20, count}},
                          .policy = Policy::kReadOnly});
}

// A frame with `boxes` boxes and a payload of `payload` bytes.
void build_frame(typed::CapnpBuilder& b, std::uint64_t seq, int boxes, std::size_t payload) {
  auto f = b.initRoot<TestFrame>();
  f.setSeq(seq);
  f.setCamera("camera/front-left");
  auto list = f.initBoxes(static_cast<unsigned>(boxes));
  for (int i = 0; i < boxes; ++i) {
    list[static_cast<unsigned>(i)].setX(static_cast<float>(i));
    list[static_cast<unsigned>(i)].setY(static_cast<float>(2 * i));
    list[static_cast<unsigned>(i)].setLabel("box-" + std::to_string(i));
  }
  auto data = f.initPayload(static_cast<unsigned>(payload));
  for (std::size_t i = 0; i < payload; ++i) data[i] = static_cast<kj::byte>(i * 7 + seq);
}

// What a reader saw, and whether everything it read lay in the received
// bytes.
struct Seen {
  std::uint64_t seq = 0;
  std::string camera;
  double box_sum = 0;
  std::uint64_t payload_sum = 0;
  std::size_t payload_size = 0;
  bool inside = true;
};

using Received = std::vector<std::span<const std::byte>>;

Received slices_of(const Message& m) {
  Received r;
  for (std::size_t i = 0; i < m.slice_count(); ++i) r.push_back(m.slice(i));
  return r;
}

Seen read_frame(typed::CapnpMessage& m, const Received& received) {
  Seen s;
  auto in = [&](const void* p) {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    for (auto r : received) {
      auto lo = reinterpret_cast<std::uintptr_t>(r.data());
      if (a >= lo && a < lo + r.size()) return;
    }
    s.inside = false;
  };
  // The reader's segments are the received bytes, not a copy.
  if (m.segment_count() != received.size()) s.inside = false;
  for (std::size_t i = 0; i < m.segment_count() && i < received.size(); ++i)
    if (m.segment(i).data() != received[i].data() || m.segment(i).size() != received[i].size())
      s.inside = false;
  auto f = m.root<TestFrame>();
  s.seq = f.getSeq();
  s.camera = f.getCamera();
  in(f.getCamera().begin());
  for (auto box : f.getBoxes()) {
    s.box_sum += box.getX() + box.getY();
    in(box.getLabel().begin());
  }
  auto payload = f.getPayload();
  in(payload.begin());
  s.payload_size = payload.size();
  for (auto byte : payload) s.payload_sum += byte;
  return s;
}

std::uint64_t expected_payload_sum(std::uint64_t seq, std::size_t n) {
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<kj::byte>(i * 7 + seq);
  return s;
}

int run_receiver(const char* service) {
  auto rx = Receiver::connect(service);
  auto msg = rx.receive_message(20s);
  if (!msg) {
    std::printf("receive failed: %s\n", msg.error().message().c_str());
    return 2;
  }
  const Received received = slices_of(*msg);
  typed::TypedStats stats;
  auto m = typed::read_capnp(std::move(*msg), {}, &stats);
  if (!m) {
    std::printf("rejected: %s\n", stats.last_reason);
    return 3;
  }
  Seen s;
  if (m->read([&](typed::CapnpMessage& mm) { s = read_frame(mm, received); }, &stats)) {
    std::printf("read rejected: %s\n", stats.last_reason);
    return 4;
  }
  std::printf("segments %zu seq %llu camera %s boxes %.1f payload %zu sum %llu inside %d\n",
              m->segment_count(), static_cast<unsigned long long>(s.seq), s.camera.c_str(), s.box_sum, s.payload_size,
              static_cast<unsigned long long>(s.payload_sum), s.inside ? 1 : 0);
  std::fflush(stdout);
  return 0;
}

TEST(TypedCapnp, ThreadReadsASingleSegmentInPlace) {
  Pool pool = make_pool("capnp-thread");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  typed::CapnpBuilder b(pool, {.first_segment_bytes = 65536});
  build_frame(b, 7, 20, 10000);
  ASSERT_EQ(b.segment_count(), 1u);
  std::thread reader([&] {
    auto v = rx.receive(20s);
    ASSERT_TRUE(v);
    const Received received{v->bytes()};
    typed::TypedStats stats;
    auto m = typed::read_capnp(std::move(*v), {}, &stats);
    ASSERT_TRUE(m) << stats.last_reason;
    ASSERT_EQ(m->segment_count(), 1u);
    EXPECT_EQ(m->segment(0).data(), received[0].data());
    Seen s;
    EXPECT_FALSE(m->read([&](typed::CapnpMessage& msg) { s = read_frame(msg, received); }, &stats));
    EXPECT_EQ(s.seq, 7u);
    EXPECT_EQ(s.camera, "camera/front-left");
    EXPECT_EQ(s.box_sum, 3 * (19 * 20 / 2));
    EXPECT_EQ(s.payload_size, 10000u);
    EXPECT_EQ(s.payload_sum, expected_payload_sum(7, 10000));
    EXPECT_TRUE(s.inside);
    EXPECT_EQ(stats.accepted, 1u);
    EXPECT_EQ(stats.rejected, 0u);
  });
  ASSERT_FALSE(b.send(tx, 5s));
  reader.join();
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedCapnp, SegmentsStartZeroedInReusedBuffers) {
  Pool pool = make_pool("capnp-zero", 1);
  {  // Dirty every buffer, then give them back.
    std::vector<Buffer> all;
    for (std::size_t size : {4096u, 65536u, 1u << 20}) {
      auto b = pool.try_allocate(size);
      ASSERT_TRUE(b);
      std::memset(b->data(), 0xAB, b->capacity());
      all.push_back(std::move(*b));
    }
  }
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  typed::CapnpBuilder b(pool, {.first_segment_bytes = 4096});
  auto f = b.initRoot<TestFrame>();
  f.setSeq(1);
  f.initBoxes(3);  // boxes left unset must read as zero and empty
  ASSERT_FALSE(b.send(tx, 1s));
  auto v = rx.receive(1s);
  ASSERT_TRUE(v);
  auto m = typed::read_capnp(std::move(*v));
  ASSERT_TRUE(m);
  for (auto box : m->root<TestFrame>().getBoxes()) {
    EXPECT_EQ(box.getX(), 0.0f);
    EXPECT_FALSE(box.hasLabel());
  }
  EXPECT_FALSE(m->root<TestFrame>().hasPayload());
}

TEST(TypedCapnp, ThreadReadsSeveralSegmentsInPlace) {
  Pool pool = make_pool("capnp-multi");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  // 4 KiB first, then as large as all before: the payload needs a third.
  typed::CapnpBuilder b(pool, {.first_segment_bytes = 4096});
  build_frame(b, 9, 300, 30000);
  ASSERT_GT(b.segment_count(), 2u);
  const std::size_t segments = b.segment_count();
  ASSERT_FALSE(b.send(tx, 5s));
  std::thread reader([&] {
    // One unit: plain receive() leaves it for receive_message().
    EXPECT_EQ(rx.receive(1s).error(), make_error_code(Errc::kMessage));
    auto msg = rx.receive_message(1s);
    ASSERT_TRUE(msg);
    ASSERT_EQ(msg->slice_count(), segments);
    const Received received = slices_of(*msg);
    typed::TypedStats stats;
    auto m = typed::read_capnp(std::move(*msg), {}, &stats);
    ASSERT_TRUE(m) << stats.last_reason;
    Seen s;
    EXPECT_FALSE(m->read([&](typed::CapnpMessage& mm) { s = read_frame(mm, received); }, &stats));
    EXPECT_EQ(s.seq, 9u);
    EXPECT_EQ(s.box_sum, 3 * (299 * 300 / 2));
    EXPECT_EQ(s.payload_sum, expected_payload_sum(9, 30000));
    EXPECT_TRUE(s.inside);  // every segment is a received slice; every read lies in one
  });
  reader.join();
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedCapnp, ProcessReadsSeveralSegmentsInPlaceThroughItsMapping) {
  Pool pool = make_pool("capnp-process");
  const std::string service = "fbuf-test/capnp-" + std::to_string(getpid());
  Sender tx(pool, service);
  testing::Child child(g_self, {"--receiver", service});
  ASSERT_TRUE(tx.wait_for_receivers(1, 20s));
  typed::CapnpBuilder b(pool, {.first_segment_bytes = 4096});
  build_frame(b, 42, 100, 200000);
  ASSERT_GT(b.segment_count(), 1u);
  const std::string segments = "segments " + std::to_string(b.segment_count()) + " ";
  ASSERT_FALSE(b.send(tx, 5s));
  auto status = child.wait(30000ms);
  ASSERT_TRUE(status.exited_with(0)) << status.describe() << "\n" << child.output();
  EXPECT_EQ(child.output().rfind(segments, 0), 0u) << child.output();
  char want[160];
  std::snprintf(want, sizeof want, "seq 42 camera camera/front-left boxes %.1f payload 200000 sum %llu inside 1",
                3.0 * (99 * 100 / 2), static_cast<unsigned long long>(expected_payload_sum(42, 200000)));
  EXPECT_NE(child.output().find(want), std::string::npos) << child.output();
  EXPECT_EQ(testing::check_all_buffers_return(pool, 10s), "");
}

// Hand-made pointer words (the Cap'n Proto encoding spec).
std::uint64_t struct_ptr(std::int32_t offset, std::uint16_t data_words, std::uint16_t ptrs) {
  return (static_cast<std::uint32_t>(offset) << 2) |
         (static_cast<std::uint64_t>(data_words) | static_cast<std::uint64_t>(ptrs) << 16) << 32;
}
std::uint64_t list_ptr(std::int32_t offset, unsigned element_size, std::uint32_t count) {
  return ((static_cast<std::uint32_t>(offset) << 2) | 1) |
         (static_cast<std::uint64_t>(element_size) | static_cast<std::uint64_t>(count) << 3) << 32;
}
std::uint64_t far_ptr(std::uint32_t pad_word, std::uint32_t segment) {
  return ((pad_word << 3) | 2) | static_cast<std::uint64_t>(segment) << 32;
}
std::uint64_t cap_ptr(std::uint32_t index) { return 3 | static_cast<std::uint64_t>(index) << 32; }

// Sends `words` (the first `bytes` of them, all by default) as one buffer
// and reads it with `options`.
std::error_code send_raw(Pool& pool, const std::vector<std::uint64_t>& words, typed::TypedStats& stats,
                         capnp::ReaderOptions options = {}, std::size_t bytes = 0) {
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  const std::size_t size = words.size() * 8;
  auto b = pool.try_allocate(size);
  EXPECT_TRUE(b);
  std::memcpy(b->data(), words.data(), size);
  EXPECT_FALSE(tx.send(std::move(*b), bytes ? bytes : size, 1s));
  auto v = rx.receive(1s);
  EXPECT_TRUE(v);
  auto m = typed::read_capnp(std::move(*v), options, &stats);
  return m ? std::error_code{} : m.error();
}

const std::error_code kBad = make_error_code(Errc::kBadDescriptor);

TEST(TypedCapnp, HostileMessagesAreRefusedAndCounted) {
  Pool pool = make_pool("capnp-hostile");
  typed::TypedStats stats;
  // A root struct far past the end of its segment.
  EXPECT_EQ(send_raw(pool, {struct_ptr(1000, 1, 0), 0}, stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "out-of-bounds"), nullptr) << stats.last_reason;
  // A root struct before the segment's start.
  EXPECT_EQ(send_raw(pool, {struct_ptr(-5, 1, 0), 0}, stats), kBad);
  // A list of 2^28 bytes in a segment of three words.
  EXPECT_EQ(send_raw(pool, {struct_ptr(0, 0, 1), list_ptr(0, 2, 1u << 28), 0}, stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "out-of-bounds"), nullptr) << stats.last_reason;
  // A far pointer to segment 7 of a one-segment message, as the root and
  // as a field.
  EXPECT_EQ(send_raw(pool, {far_ptr(0, 7), 0}, stats), kBad);
  EXPECT_EQ(send_raw(pool, {struct_ptr(0, 0, 1), far_ptr(0, 7), 0}, stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "segment"), nullptr) << stats.last_reason;
  // A capability in a message from a pool.
  EXPECT_EQ(send_raw(pool, {struct_ptr(0, 0, 1), cap_ptr(0)}, stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "capability"), nullptr) << stats.last_reason;
  // Segments that are not whole words.
  EXPECT_EQ(send_raw(pool, {struct_ptr(0, 1, 0), 0}, stats, {}, 12), kBad);
  EXPECT_STREQ(stats.last_reason, "segment not a whole number of words");
  EXPECT_EQ(stats.rejected, 7u);
  EXPECT_EQ(stats.accepted, 0u);
  // The well-formed neighbour of the first: accepted.
  EXPECT_EQ(send_raw(pool, {struct_ptr(0, 1, 0), 0}, stats), std::error_code{});
  EXPECT_EQ(stats.accepted, 1u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

// Sends `segments` as one aggregate (slice i: the first lengths[i] bytes of
// segment i, all of it by default) and reads it.
std::error_code send_segments(Pool& pool, const std::vector<std::vector<std::uint64_t>>& segments,
                              typed::TypedStats& stats, std::vector<std::size_t> lengths = {}) {
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  Message m;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    auto b = pool.try_allocate(segments[i].size() * 8);
    EXPECT_TRUE(b);
    std::memcpy(b->data(), segments[i].data(), segments[i].size() * 8);
    EXPECT_FALSE(m.append(std::move(*b), i < lengths.size() ? lengths[i] : segments[i].size() * 8));
  }
  EXPECT_FALSE(tx.send(std::move(m), 1s));
  auto r = typed::receive_capnp(rx, 1s, {}, &stats);
  if (r) {
    EXPECT_EQ(r->root<TestFrame>().getSeq(), 5u);
  }
  return r ? std::error_code{} : r.error();
}

TEST(TypedCapnp, HostileSegmentTablesAreRefused) {
  Pool pool = make_pool("capnp-segments");
  typed::TypedStats stats;
  // The control: a far pointer from segment 0 to a landing pad in segment 1.
  EXPECT_EQ(send_segments(pool, {{far_ptr(0, 1)}, {struct_ptr(0, 1, 0), 5}}, stats), std::error_code{});
  // To segment 2 of two.
  EXPECT_EQ(send_segments(pool, {{far_ptr(0, 2)}, {struct_ptr(0, 1, 0), 5}}, stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "segment"), nullptr) << stats.last_reason;
  // To a landing pad past the end of segment 1.
  EXPECT_EQ(send_segments(pool, {{far_ptr(100, 1)}, {struct_ptr(0, 1, 0), 5}}, stats), kBad);
  // A double-far whose landing pad points at a missing segment.
  EXPECT_EQ(send_segments(pool, {{far_ptr(0, 1) | 4}, {far_ptr(0, 9), struct_ptr(0, 1, 0), 5}}, stats), kBad);
  // A landing pad that points back out of its segment.
  EXPECT_EQ(send_segments(pool, {{far_ptr(0, 1)}, {struct_ptr(50, 1, 0), 5}}, stats), kBad);
  // A segment of 12 bytes.
  EXPECT_EQ(send_segments(pool, {{far_ptr(0, 1)}, {struct_ptr(0, 1, 0), 5}}, stats, {8, 12}), kBad);
  EXPECT_STREQ(stats.last_reason, "segment not a whole number of words");
  {  // A segment that starts 4 bytes into its buffer (a slice is any range).
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    const std::uint64_t words[3] = {0, struct_ptr(0, 1, 0), 5};
    auto b = pool.try_allocate(sizeof words);
    ASSERT_TRUE(b);
    std::memcpy(b->data(), words, sizeof words);
    Message m;
    ASSERT_FALSE(m.append(std::move(*b), 4, 16));
    ASSERT_FALSE(tx.send(std::move(m), 1s));
    EXPECT_EQ(typed::receive_capnp(rx, 1s, {}, &stats).error(), kBad);
    EXPECT_STREQ(stats.last_reason, "segment not word-aligned");
  }
  EXPECT_EQ(stats.rejected, 6u);
  EXPECT_EQ(stats.accepted, 1u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

// Struct k (two pointer words at 1 + 2k) points twice at struct k + 1: a
// message of 2 * depth + 1 words that reads as 2^depth structs.
std::vector<std::uint64_t> amplification_bomb(int depth) {
  std::vector<std::uint64_t> w{struct_ptr(0, 0, 2)};
  for (int k = 0; k < depth; ++k) {
    const bool last = k == depth - 1;
    w.push_back(last ? 0 : struct_ptr(1, 0, 2));
    w.push_back(last ? 0 : struct_ptr(0, 0, 2));
  }
  return w;
}

TEST(TypedCapnp, TraversalBombsStopAtTheTraversalLimit) {
  Pool pool = make_pool("capnp-bomb");
  typed::TypedStats stats;
  // 2^40 structs behind 81 words: refused under the default limit (8 Mi
  // words) and under a small one.
  EXPECT_EQ(send_raw(pool, amplification_bomb(40), stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "traversal limit"), nullptr) << stats.last_reason;
  EXPECT_EQ(send_raw(pool, amplification_bomb(40), stats, {.traversalLimitInWords = 4096, .nestingLimit = 64}), kBad);
  // A shallow one is only 2^10 structs: within the limit.
  EXPECT_EQ(send_raw(pool, amplification_bomb(10), stats, {.traversalLimitInWords = 1 << 20, .nestingLimit = 64}),
            std::error_code{});
  EXPECT_EQ(stats.rejected, 2u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedCapnp, NestingPastTheLimitIsRefused) {
  Pool pool = make_pool("capnp-nest");
  typed::TypedStats stats;
  auto send_chain = [&](int depth, capnp::ReaderOptions options) {
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    typed::CapnpBuilder b(pool);
    auto f = b.initRoot<TestFrame>();
    for (int i = 0; i < depth; ++i) f = f.initChild();
    EXPECT_FALSE(b.send(tx, 1s));
    auto v = rx.receive(1s);
    EXPECT_TRUE(v);
    auto m = typed::read_capnp(std::move(*v), options, &stats);
    return m ? std::error_code{} : m.error();
  };
  EXPECT_EQ(send_chain(100, {}), kBad);  // nestingLimit 64 by default
  EXPECT_NE(std::strstr(stats.last_reason, "nested"), nullptr) << stats.last_reason;
  EXPECT_EQ(send_chain(100, {.traversalLimitInWords = 1 << 20, .nestingLimit = 128}), std::error_code{});
  EXPECT_EQ(send_chain(50, {}), std::error_code{});
  EXPECT_EQ(stats.rejected, 1u);
  EXPECT_EQ(stats.accepted, 2u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedCapnp, WhatOnlyTheSchemaKnowsIsCaughtByRead) {
  Pool pool = make_pool("capnp-schema");
  typed::TypedStats stats;
  // camera (pointer 0) is a byte list of 8 with no NUL at its end.
  std::vector<std::uint64_t> w{struct_ptr(0, 1, 4), 9, list_ptr(3, 2, 8), 0, 0, 0, 0x4141414141414141ull};
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = pool.try_allocate(w.size() * 8);
  std::memcpy(b->data(), w.data(), w.size() * 8);
  ASSERT_FALSE(tx.send(std::move(*b), w.size() * 8, 1s));
  auto v = rx.receive(1s);
  auto m = typed::read_capnp(std::move(*v), {}, &stats);
  ASSERT_TRUE(m) << stats.last_reason;  // structurally sound
  EXPECT_EQ(m->root<TestFrame>().getSeq(), 9u);
  EXPECT_EQ(m->read([](typed::CapnpMessage& msg) { (void)msg.root<TestFrame>().getCamera(); }, &stats), kBad);
  EXPECT_NE(std::strstr(stats.last_reason, "'\\0'"), nullptr) << stats.last_reason;  // capnp's NUL check
  EXPECT_EQ(stats.rejected, 1u);
}

TEST(TypedCapnp, ASegmentLargerThanThePoolThrows) {
  Pool pool(PoolOptions{.name = "capnp-small", .classes = {{4096, 4}}});
  typed::CapnpBuilder b(pool);
  auto f = b.initRoot<TestFrame>();
  EXPECT_THROW(f.initPayload(100000), Error);
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  fbuf::g_self = "/proc/self/exe";
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) fbuf::g_self.assign(exe, static_cast<std::size_t>(n));
  if (argc == 3 && std::strcmp(argv[1], "--receiver") == 0) return fbuf::run_receiver(argv[2]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

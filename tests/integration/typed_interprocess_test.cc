// Boost.Interprocess containers built in place in a pool buffer
// (fbuf/typed/interprocess.h): read in place by a receiver thread and by a
// receiver process through its read-only mapping (the process would die by
// SIGSEGV if anything on its read path wrote), bad headers and corrupt
// inner pointers rejected and counted. The receiver process is this binary
// re-executed with --receiver (see main() below).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "fbuf/typed/interprocess.h"
#include "pool_check.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using Series = typed::FlatMap<typed::String, typed::Vector<float>>;
constexpr std::uint64_t kSeriesTag = 0x5345'5249'4553'0001ull;  // "SERIES" v1

std::string g_self;  // this binary, for re-exec

// The series the tests send: `count` names, each with i + 1 values.
void build_series(typed::InPlaceBuilder& b, int count) {
  auto* sm = b.segment_manager();
  Series& m = b.construct_root<Series>(kSeriesTag, sm);
  for (int i = 0; i < count; ++i) {
    // Long names: the string's bytes live in the segment, not in the
    // string object (short-string optimisation).
    typed::String key("plant/line-4/sensor/temperature/" + std::to_string(i), sm);
    typed::Vector<float> values(sm);
    for (int j = 0; j <= i; ++j) values.push_back(static_cast<float>(i * 100 + j));
    m.emplace(std::move(key), std::move(values));
  }
}

double expected_sum(int count) {
  double s = 0;
  for (int i = 0; i < count; ++i)
    for (int j = 0; j <= i; ++j) s += i * 100 + j;
  return s;
}

// Reads every entry through the checked accessors; counts pointers that
// lie outside [lo, hi). Returns false on a rejected read.
struct Walk {
  double sum = 0;
  std::size_t entries = 0;
  std::size_t outside = 0;
  std::string names;
};
bool walk(const typed::InPlace<Series>& msg, Walk& w) {
  const auto lo = reinterpret_cast<std::uintptr_t>(msg.view().data());
  const auto hi = lo + msg.view().size();
  auto in = [&](const void* p) {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    if (a < lo || a >= hi) ++w.outside;
  };
  auto entries = msg.bounds().entries(msg.root());
  if (!entries) return false;
  for (const auto& [key, values] : *entries) {
    auto name = msg.bounds().text(key);
    auto vals = msg.bounds().elements(values);
    if (!name || !vals) return false;
    in(name->data());
    in(vals->data());
    if (w.entries < 2) w.names += std::string(*name) + ";";
    for (float f : *vals) w.sum += f;
    ++w.entries;
  }
  return true;
}

// The permissions of this process's mapping that holds `p`, as in
// /proc/self/maps ("r--s"), or "" if none does.
std::string mapping_perms(const void* p) {
  std::ifstream maps("/proc/self/maps");
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) == 3 && a >= lo &&
        a < hi)
      return perms;
  }
  return "";
}

// The receiver process: reads one series in place and prints what it saw.
int run_receiver(const char* service) {
  auto rx = Receiver::connect(service);
  auto v = rx.receive(20s);
  if (!v) {
    std::printf("receive failed: %s\n", v.error().message().c_str());
    return 2;
  }
  typed::TypedStats stats;
  auto msg = typed::read_in_place<Series>(std::move(*v), kSeriesTag, &stats);
  if (!msg) {
    std::printf("rejected: %s\n", stats.last_reason);
    return 3;
  }
  Walk w;
  if (!walk(*msg, w)) {
    std::printf("read rejected: %s\n", stats.last_reason);
    return 4;
  }
  std::printf("perms %s entries %zu sum %.1f outside %zu names %s\n",
              mapping_perms(msg->view().data()).c_str(), w.entries, w.sum, w.outside, w.names.c_str());
  std::fflush(stdout);
  return 0;
}

Pool make_pool(const char* name, std::uint32_t count = 4) {
  return Pool(PoolOptions{.name = name, .classes = {{65536, count}}, .policy = Policy::kReadOnly});
}

TEST(TypedInterprocess, ThreadReadsContainersInPlace) {
  Pool pool = make_pool("ip-thread");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  typed::InPlaceBuilder b(std::move(*pool.try_allocate(65536)));
  build_series(b, 40);
  const std::size_t length = b.length();
  std::thread reader([&] {
    auto v = rx.receive(20s);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->size(), length);
    typed::TypedStats stats;
    auto msg = typed::read_in_place<Series>(std::move(*v), kSeriesTag, &stats);
    ASSERT_TRUE(msg) << stats.last_reason;
    Walk w;
    ASSERT_TRUE(walk(*msg, w)) << stats.last_reason;
    EXPECT_EQ(w.entries, 40u);
    EXPECT_EQ(w.sum, expected_sum(40));
    EXPECT_EQ(w.outside, 0u);
    EXPECT_EQ(w.names, "plant/line-4/sensor/temperature/0;plant/line-4/sensor/temperature/1;");
    EXPECT_EQ(stats.accepted, 1u);
    EXPECT_EQ(stats.rejected, 0u);
  });
  ASSERT_FALSE(b.send(tx, 5s));
  reader.join();
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedInterprocess, ProcessReadsContainersInPlaceThroughItsReadOnlyMapping) {
  Pool pool = make_pool("ip-process");
  const std::string service = "fbuf-test/ip-" + std::to_string(getpid());
  Sender tx(pool, service);
  testing::Child child(g_self, {"--receiver", service});
  ASSERT_TRUE(tx.wait_for_receivers(1, 20s));
  typed::InPlaceBuilder b(std::move(*pool.try_allocate(65536)));
  build_series(b, 100);
  ASSERT_FALSE(b.send(tx, 5s));
  auto status = child.wait(30000ms);
  ASSERT_TRUE(status.exited_with(0)) << status.describe() << "\n" << child.output();
  char want[128];
  std::snprintf(want, sizeof want, "entries 100 sum %.1f outside 0 ", expected_sum(100));
  EXPECT_NE(child.output().find(want), std::string::npos) << child.output();
  // The receiver read through a shared mapping it cannot write.
  EXPECT_EQ(child.output().rfind("perms r--s ", 0), 0u) << child.output();
  EXPECT_NE(child.output().find("names plant/line-4/sensor/temperature/0;plant/line-4/sensor/temperature/1;"), std::string::npos);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 10s), "");
}

// Sends `bytes` as they are written into a fresh buffer by `fill`, and
// reads the result as a Series root.
template <class Fill>
std::error_code receive_with(Pool& pool, std::size_t length, Fill fill, typed::TypedStats& stats) {
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  Buffer buf = std::move(*pool.try_allocate(65536));
  std::memset(buf.data(), 0, buf.capacity());
  fill(buf.data());
  EXPECT_FALSE(tx.send(std::move(buf), length, 1s));
  auto v = rx.receive(1s);
  EXPECT_TRUE(v);
  auto msg = typed::read_in_place<Series>(std::move(*v), kSeriesTag, &stats);
  return msg ? std::error_code{} : msg.error();
}

TEST(TypedInterprocess, BadHeadersAreRejectedAndCounted) {
  Pool pool = make_pool("ip-bad");
  typed::TypedStats stats;
  auto header = [](std::uint64_t magic, std::uint64_t tag, std::uint64_t offset, std::uint64_t size) {
    return [=](std::byte* p) {
      typed::InPlaceHeader h{magic, tag, offset, size, {}};
      std::memcpy(p, &h, sizeof h);
    };
  };
  const auto bad = make_error_code(Errc::kBadDescriptor);
  const std::uint64_t m = typed::kInPlaceMagic, t = kSeriesTag, s = sizeof(Series);
  EXPECT_EQ(receive_with(pool, 32, header(m, t, 64, s), stats), bad);  // shorter than the header
  EXPECT_STREQ(stats.last_reason, "shorter than the in-place header");
  EXPECT_EQ(receive_with(pool, 4096, header(m + 1, t, 64, s), stats), bad);
  EXPECT_STREQ(stats.last_reason, "not an in-place message (magic)");
  EXPECT_EQ(receive_with(pool, 4096, header(m, t + 1, 64, s), stats), bad);
  EXPECT_STREQ(stats.last_reason, "root of another type (type tag)");
  EXPECT_EQ(receive_with(pool, 4096, header(m, t, 64, s + 8), stats), bad);
  EXPECT_STREQ(stats.last_reason, "root of another size");
  // Offsets past the end, into the header, wrapping, and ending one byte out.
  for (std::uint64_t off : {std::uint64_t{4096}, std::uint64_t{8}, ~std::uint64_t{0} - 7,
                            std::uint64_t{4096 - s + 8}}) {
    EXPECT_EQ(receive_with(pool, 4096, header(m, t, off, s), stats), bad) << off;
    EXPECT_STREQ(stats.last_reason, "root offset outside the buffer") << off;
  }
  EXPECT_EQ(receive_with(pool, 4096, header(m, t, 68, s), stats), bad);
  EXPECT_STREQ(stats.last_reason, "root offset misaligned");
  EXPECT_EQ(stats.rejected, 9u);
  EXPECT_EQ(stats.accepted, 0u);
  // The largest valid offset is accepted (an empty map of zeros).
  EXPECT_EQ(receive_with(pool, 4096, header(m, t, 4096 - s, s), stats), std::error_code{});
  EXPECT_EQ(stats.accepted, 1u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

// Finds, inside the object at `obj`, the offset_ptr word that points at
// `target`, and moves its target by `delta` bytes. False if none does.
bool move_offset_ptr(void* obj, std::size_t size, const void* target, std::int64_t delta) {
  auto* base = static_cast<std::byte*>(obj);
  for (std::size_t k = 0; k + 8 <= size; k += 8) {
    std::int64_t off;
    std::memcpy(&off, base + k, 8);
    if (reinterpret_cast<std::intptr_t>(base + k) + off == reinterpret_cast<std::intptr_t>(target)) {
      off += delta;
      std::memcpy(base + k, &off, 8);
      return true;
    }
  }
  return false;
}

// Builds the series with `corrupt` applied to the built root, then sends
// and walks it.
template <class Corrupt>
bool walk_corrupted(Pool& pool, Corrupt corrupt, typed::TypedStats& stats) {
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  typed::InPlaceBuilder b(std::move(*pool.try_allocate(65536)));
  build_series(b, 8);
  Buffer buf = std::move(b).release();
  typed::InPlaceHeader h;
  std::memcpy(&h, buf.data(), sizeof h);
  corrupt(*reinterpret_cast<Series*>(buf.data() + h.root_offset));
  EXPECT_FALSE(tx.send(std::move(buf), 65536, 1s));
  auto v = rx.receive(1s);
  EXPECT_TRUE(v);
  auto msg = typed::read_in_place<Series>(std::move(*v), kSeriesTag, &stats);
  EXPECT_TRUE(msg);
  Walk w;
  return walk(*msg, w);
}

TEST(TypedInterprocess, InnerPointersOutsideTheBufferAreRejected) {
  Pool pool = make_pool("ip-inner");
  typed::TypedStats stats;
  // The map's entry array moved 1 GiB away, then 64 KiB (just past the end).
  for (std::int64_t delta : {std::int64_t{1} << 30, std::int64_t{65536}, -(std::int64_t{1} << 20)}) {
    EXPECT_FALSE(walk_corrupted(
        pool,
        [&](Series& m) { ASSERT_TRUE(move_offset_ptr(&m, sizeof m, &*m.nth(0), delta)); },
        stats));
    EXPECT_STREQ(stats.last_reason, "map entries outside the buffer");
  }
  // One entry's values moved out.
  EXPECT_FALSE(walk_corrupted(
      pool,
      [](Series& m) {
        auto& values = m.nth(3)->second;
        ASSERT_TRUE(move_offset_ptr(&values, sizeof values, values.data(), 1 << 20));
      },
      stats));
  EXPECT_STREQ(stats.last_reason, "vector elements outside the buffer");
  // One entry's values misaligned by a byte.
  EXPECT_FALSE(walk_corrupted(
      pool,
      [](Series& m) {
        auto& values = m.nth(3)->second;
        ASSERT_TRUE(move_offset_ptr(&values, sizeof values, values.data(), 1));
      },
      stats));
  EXPECT_STREQ(stats.last_reason, "vector elements outside the buffer");
  // One key's bytes moved out.
  EXPECT_FALSE(walk_corrupted(
      pool,
      [](Series& m) {
        auto& key = m.nth(5)->first;
        ASSERT_TRUE(move_offset_ptr(&key, sizeof key, key.data(), -(1 << 24)));
      },
      stats));
  EXPECT_STREQ(stats.last_reason, "string outside the buffer");
  EXPECT_EQ(stats.rejected, 6u);
  EXPECT_EQ(testing::check_all_buffers_return(pool, 5s), "");
}

TEST(TypedInterprocess, BuilderRefusesBuffersTooSmall) {
  Pool pool = make_pool("ip-small");
  EXPECT_THROW(typed::InPlaceBuilder(std::move(*pool.try_allocate(100)), 100), Error);
  EXPECT_THROW(typed::InPlaceBuilder(std::move(*pool.try_allocate(100)), 65537), Error);
  // A full segment throws (Boost's bad_alloc, or std::length_error for a
  // container larger than the whole segment).
  typed::InPlaceBuilder b(std::move(*pool.try_allocate(100)), 4096);
  auto* sm = b.segment_manager();
  auto& v = b.construct_root<typed::Vector<float>>(kSeriesTag, sm);
  EXPECT_ANY_THROW(v.resize(4096));
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

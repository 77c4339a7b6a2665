// fbuf_typed_interprocess: sensor readings as C++ containers built in place
// in pool buffers with Boost.Interprocess, and read in place by a receiver
// through its read-only mapping. Each message is a flat map from sensor
// name to a vector of readings (fbuf::typed::FlatMap<String, Vector<float>>):
// dynamic sizes, non-trivial types, no serialisation, no copy.
//
//   fbuf_typed_interprocess [--count N] [--threads]
//
// By default the reader is another process (this program re-executed);
// with --threads it is a thread of this one. It finds the root through the
// buffer's header, reads every name and vector through the checked
// accessors (each pointer bounded by the received buffer), checks them
// against what the writer built, and prints where it read them from.
// Exits 1 unless everything matched.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "fbuf/fbuf.h"
#include "fbuf/typed/interprocess.h"
#include "mapping.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
namespace typed = fbuf::typed;

using Readings = typed::FlatMap<typed::String, typed::Vector<float>>;
constexpr std::uint64_t kReadingsTag = 0x5245'4144'494e'4701ull;  // "READING" v1

std::size_t sensors_for(std::uint64_t seq) { return seq % 11 + 5; }
std::string sensor_name(std::size_t i) { return "plant/line-" + std::to_string(i % 4) + "/sensor-" + std::to_string(i); }
std::size_t values_for(std::uint64_t seq, std::size_t i) { return (seq + i) % 50 + 1; }
float value(std::uint64_t seq, std::size_t i, std::size_t j) {
  return static_cast<float>(seq) + static_cast<float>(i) * 0.5f + static_cast<float>(j) * 0.25f;
}

int write_readings(fbuf::Sender& tx, std::uint64_t count) {
  fbuf::Pool pool = tx.pool();
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    auto buf = pool.allocate(65536, 5s);
    if (!buf) {
      std::fprintf(stderr, "writer: allocate: %s\n", buf.error().message().c_str());
      return 1;
    }
    typed::InPlaceBuilder b(std::move(*buf));
    auto* sm = b.segment_manager();
    Readings& readings = b.construct_root<Readings>(kReadingsTag, sm);
    for (std::size_t i = 0; i < sensors_for(seq); ++i) {
      typed::Vector<float> v(sm);
      for (std::size_t j = 0; j < values_for(seq, i); ++j) v.push_back(value(seq, i, j));
      readings.emplace(typed::String(sensor_name(i).c_str(), sm), std::move(v));
    }
    if (auto ec = b.send(tx, 5s)) {
      std::fprintf(stderr, "writer: send: %s\n", ec.message().c_str());
      return 1;
    }
  }
  std::printf("writer: %llu maps of sensor readings built in pool buffers\n", static_cast<unsigned long long>(count));
  return 0;
}

int read_readings(fbuf::Receiver& rx, std::uint64_t count) {
  typed::TypedStats stats;
  std::uint64_t seq = 0, values = 0;
  std::string where;
  for (; seq < count; ++seq) {
    auto v = rx.receive(10s);
    if (!v) {
      std::printf("reader: message %llu: %s\n", static_cast<unsigned long long>(seq), v.error().message().c_str());
      return 1;
    }
    auto msg = typed::read_in_place<Readings>(std::move(*v), kReadingsTag, &stats);
    if (!msg) {
      std::printf("reader: message %llu refused: %s\n", static_cast<unsigned long long>(seq), stats.last_reason);
      return 1;
    }
    // Only the checked accessors: every pointer followed lies in the buffer.
    auto entries = msg->bounds().entries(msg->root());
    bool ok = entries && entries->size() == sensors_for(seq);
    for (std::size_t k = 0; ok && k < entries->size(); ++k) {
      auto name = msg->bounds().text((*entries)[k].first);
      auto vals = msg->bounds().elements((*entries)[k].second);
      if (!name || !vals) {
        ok = false;
        break;
      }
      // Keys are sorted: find the sensor's index from its name.
      const std::string_view digits = name->substr(name->rfind('-') + 1);
      std::size_t i = 0;
      std::from_chars(digits.data(), digits.data() + digits.size(), i);
      ok = *name == sensor_name(i) && vals->size() == values_for(seq, i);
      for (std::size_t j = 0; ok && j < vals->size(); ++j) ok = (*vals)[j] == value(seq, i, j);
      values += vals->size();
    }
    if (!ok) {
      std::printf("reader: message %llu does not match (%s)\n", static_cast<unsigned long long>(seq),
                  stats.last_reason);
      return 1;
    }
    if (where.empty()) where = fbuf_examples::mapping_of(&msg->root());
  }
  std::printf("reader: %llu maps, %llu readings read in place from %s\n", static_cast<unsigned long long>(seq),
              static_cast<unsigned long long>(values), where.c_str());
  std::printf("reader: every map as built, %llu refused\n", static_cast<unsigned long long>(stats.rejected));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t count = 200;
  bool threads = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
      count = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      threads = true;
    } else if (std::strcmp(argv[i], "read") == 0 && i + 2 < argc) {  // the reader process
      auto rx = fbuf::Receiver::connect(argv[i + 1], {.connect_timeout = 10s});
      return read_readings(rx, std::strtoull(argv[i + 2], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: fbuf_typed_interprocess [--count N] [--threads]\n");
      return 2;
    }
  }
  fbuf::Pool pool(fbuf::PoolOptions{.name = "readings", .classes = {{65536, 32}}, .policy = fbuf::Policy::kReadOnly});
  if (threads) {
    fbuf::Sender tx(pool);
    fbuf::Receiver rx = tx.connect_local();
    int got = 1;
    std::thread reader([&] { got = read_readings(rx, count); });
    const int wrote = write_readings(tx, count);
    reader.join();
    return wrote | got;
  }
  std::string service = "fbuf-example/readings-" + std::to_string(getpid());
  fbuf::Sender tx(pool, service);
  std::string counts = std::to_string(count);
  char self[] = "/proc/self/exe";
  char mode[] = "read";
  char* args[] = {self, mode, service.data(), counts.data(), nullptr};
  pid_t pid;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, args, environ) != 0) {
    std::perror("posix_spawn");
    return 1;
  }
  if (!tx.wait_for_receivers(1, 10s)) {
    std::fprintf(stderr, "writer: no reader\n");
    return 1;
  }
  const int wrote = write_readings(tx, count);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return wrote | (WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

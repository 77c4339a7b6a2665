// Writes the seed corpora of the fuzz targets: fuzz_seeds DIR creates
// DIR/handshake, DIR/descriptors, DIR/ring, DIR/owner and DIR/typed with a few inputs
// each that reach deep into the code under test (valid messages, valid
// operation sequences), for libFuzzer to mutate. Built and run by CMake;
// the output is a function of the code alone, so it is not checked in.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <capnp/any.h>

#include "fbuf/fbuf.h"
#include "fbuf/typed/interprocess.h"
#include "bridge/wire.h"
#include "fbuf/base/fd.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/handshake.capnp.h"
#include "ipc/monitor.h"
#include "ipc/layout.h"
#include "fbuf/base/ring.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using fbuf::detail::Descriptor;
using namespace fbuf::fuzz;  // the op codes

void write_file(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

template <class T>
void put(Bytes& b, const T& value) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
  b.insert(b.end(), p, p + sizeof value);
}

void put_bytes(Bytes& b, std::initializer_list<std::uint8_t> bytes) { b.insert(b.end(), bytes); }

Bytes flatten(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return Bytes(bytes.begin(), bytes.end());
}

Bytes hello(std::uint32_t version) {
  capnp::MallocMessageBuilder message;
  auto h = message.initRoot<fbuf::ipc::proto::ControlMessage>().initHello();
  h.setVersion(version);
  h.setPid(4242);
  return flatten(message);
}

struct WelcomeSpec {
  std::string name;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> classes;  // (buffer size, count)
  std::uint8_t policy;
  std::uint32_t send_capacity, return_capacity;
  std::int64_t pool_size_error = 0;  // added to the true pool size
};

Bytes welcome(const WelcomeSpec& spec) {
  capnp::MallocMessageBuilder message;
  auto w = message.initRoot<fbuf::ipc::proto::ControlMessage>().initWelcome();
  w.setVersion(fbuf::ipc::kProtocolVersion);
  w.setPoolName(spec.name.c_str());
  auto classes = w.initClasses(static_cast<unsigned>(spec.classes.size()));
  std::uint64_t total = 0;
  for (unsigned i = 0; i < classes.size(); ++i) {
    classes[i].setBufferSize(spec.classes[i].first);
    classes[i].setCount(spec.classes[i].second);
    total += spec.classes[i].first * spec.classes[i].second;
  }
  w.setPoolSize(total + static_cast<std::uint64_t>(spec.pool_size_error));
  w.setPolicy(spec.policy);
  w.setSendCapacity(spec.send_capacity);
  w.setReturnCapacity(spec.return_capacity);
  w.setRingBytes(fbuf::ipc::ChannelHeader::bytes(spec.send_capacity, spec.return_capacity));
  w.setReceiverId(7);
  return flatten(message);
}

Bytes reject(const char* reason) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<fbuf::ipc::proto::ControlMessage>().initReject();
  r.setVersion(fbuf::ipc::kProtocolVersion);
  r.setReason(reason);
  return flatten(message);
}

Bytes monitor_request(std::uint32_t version) {
  capnp::MallocMessageBuilder message;
  message.initRoot<fbuf::ipc::proto::ControlMessage>().initMonitorRequest().setVersion(version);
  return flatten(message);
}

Bytes monitor_reply(std::size_t receivers) {
  fbuf::ipc::MonitorInfo info;
  info.service = "camera/frames";
  info.pool_name = "frames";
  // A read_only pool whose small class sends sealed copies.
  info.policy = fbuf::Policy::kReadOnly;
  info.classes = {{4096, 64, 10, true, 60}, {1 << 20, 4, 0}};
  info.ring_capacity = 256;
  info.stats.sent = 1000;
  info.sealed_copy_size = 4096;
  info.sealed_total = 64;
  info.sealed_free = 60;
  info.sealed_in_flight = 4;
  info.sealed_copies = 900;
  info.sealed_fallbacks = 2;
  for (std::size_t i = 0; i < receivers; ++i) {
    fbuf::ipc::MonitorReceiver r;
    r.id = static_cast<std::uint32_t>(i + 1);
    r.held = 3;
    r.queued = 5;
    r.ring_capacity = 256;
    r.delivered = 1000;
    info.receivers.push_back(r);
  }
  capnp::MallocMessageBuilder message;
  fbuf::ipc::build_monitor_reply(message, info);
  return flatten(message);
}

// The path's messages.
Bytes pool_announce(std::uint32_t slot, std::uint64_t page) {
  fbuf::ipc::PoolAnnounceInfo a;
  a.slot = slot;
  a.pool.pool_name = "frames";
  a.pool.classes = {{16 * page, 8}, {page, 4}};
  a.pool.pool_size = 16 * page * 8 + page * 4;
  a.pool.return_capacity = fbuf::ipc::return_ring_capacity(12);
  a.pool.ring_bytes = fbuf::ipc::ChannelHeader::bytes(fbuf::ipc::kHolderSendCapacity, a.pool.return_capacity);
  a.token = 3;
  capnp::MallocMessageBuilder message;
  fbuf::ipc::build_pool_announce(message, a);
  return flatten(message);
}

Bytes holder_grant() {
  fbuf::ipc::HolderGrantInfo g;
  g.token = 5;
  g.return_capacity = 64;
  g.ring_bytes = fbuf::ipc::ChannelHeader::bytes(fbuf::ipc::kHolderSendCapacity, 64);
  capnp::MallocMessageBuilder message;
  fbuf::ipc::build_holder_grant(message, g);
  return flatten(message);
}

void handshake_seeds(const fs::path& dir) {
  const std::uint64_t page = fbuf::detail::page_size();
  write_file(dir / "hello", hello(fbuf::ipc::kProtocolVersion));
  write_file(dir / "hello_other_version", hello(fbuf::ipc::kProtocolVersion + 1));
  write_file(dir / "welcome_one_class", welcome({"frames", {{16 * page, 8}}, 1, 16, 8}));
  write_file(dir / "welcome_three_classes",
             welcome({"mixed", {{page, 64}, {16 * page, 16}, {256 * page, 4}}, 2, 64, 128}));
  write_file(dir / "welcome_largest_buffer", welcome({"big", {{(std::uint64_t{1} << 32) - page, 2}}, 0, 1, 2}));
  write_file(dir / "welcome_wrong_pool_size", welcome({"liar", {{page, 4}}, 0, 4, 4, static_cast<std::int64_t>(page)}));
  // Names at and past the 256-byte limit, and the most classes allowed.
  write_file(dir / "welcome_longest_name", welcome({std::string(256, 'n'), {{page, 1}}, 0, 1, 1}));
  write_file(dir / "welcome_name_too_long", welcome({std::string(257, 'n'), {{page, 1}}, 0, 1, 1}));
  WelcomeSpec most{"most", {}, 0, 1, 64};
  for (std::uint64_t i = 0; i < fbuf::ipc::kMaxClasses; ++i) most.classes.emplace_back((i + 1) * page, 1);
  write_file(dir / "welcome_most_classes", welcome(most));
  write_file(dir / "reject", reject("too many receivers"));
  write_file(dir / "monitor_request", monitor_request(fbuf::ipc::kMonitorVersion));
  write_file(dir / "monitor_request_other_version", monitor_request(fbuf::ipc::kMonitorVersion + 1));
  write_file(dir / "monitor_reply", monitor_reply(2));
  write_file(dir / "monitor_reply_most_receivers", monitor_reply(fbuf::ipc::kMaxMonitorReceivers));
  {
    capnp::MallocMessageBuilder m;
    fbuf::ipc::build_holder_request(m);
    write_file(dir / "holder_request", flatten(m));
  }
  {
    capnp::MallocMessageBuilder m;
    fbuf::ipc::build_drain_request(m);
    write_file(dir / "drain_request", flatten(m));
  }
  write_file(dir / "holder_grant", holder_grant());
  write_file(dir / "pool_announce", pool_announce(1, page));
  write_file(dir / "pool_announce_last_slot", pool_announce(fbuf::ipc::kMaxPoolSlots, page));
  write_file(dir / "pool_announce_slot_past_limit", pool_announce(fbuf::ipc::kMaxPoolSlots + 1, page));
}

// Records for fuzz_descriptors: an op byte and a descriptor.
void descriptor_op(Bytes& b, std::uint8_t op, Descriptor d) {
  put(b, op);
  put(b, d);
}

void descriptor_seeds(const fs::path& dir) {
  Bytes b;
  // Two classes: 4 buffers of 1 page, 2 of 16 pages.
  put<std::uint8_t>(b, 1);
  put_bytes(b, {0, 3, 15, 1});
  descriptor_op(b, kLocate, {0, 1, 1, 100, 200, 0, 0});
  descriptor_op(b, kLocate, {0, 5, 1, 0, 65536, 0, 1});
  descriptor_op(b, kLocate, {0, 5, 1, 1, 65536, 0, 2});  // one byte too long
  descriptor_op(b, kLend, {0, 2, 9, 0, 0, 0, 0});
  descriptor_op(b, kLend, {0, 4, 1, 0, 0, 0, 0});
  descriptor_op(b, kTakeBack, {0, 2, 9, 0, 0, 0, 0});
  descriptor_op(b, kTakeBack, {0, 2, 9, 0, 0, 0, 0});  // the same return again
  descriptor_op(b, kTakeBackNear, {0, 4, 0, 0, 0, 0, 0});
  descriptor_op(b, kLend, {0, 0, 3, 0, 0, 0, 0});
  descriptor_op(b, kTakeAll, {});
  write_file(dir / "two_classes", b);

  b.clear();
  // Aggregates: a good chain, one cut by the tail, one naming a buffer
  // twice, one with a reserved flag, one too long, one too large.
  put<std::uint8_t>(b, 1);
  put_bytes(b, {0, 63, 0x80, 3});
  descriptor_op(b, kChainAdd, {0, 0, 1, 0, 16, 1, 0});
  descriptor_op(b, kChainAdd, {0, 1, 1, 0, 16, 0, 0});
  descriptor_op(b, kChainAdd, {0, 2, 1, 0, 16, 1, 0});
  descriptor_op(b, kChainCut, {});
  descriptor_op(b, kChainAdd, {0, 3, 1, 0, 16, 1, 0});
  descriptor_op(b, kChainAdd, {0, 3, 1, 8, 8, 0, 0});
  descriptor_op(b, kChainAdd, {0, 4, 1, 0, 16, 3, 0});
  descriptor_op(b, kChainAdd, {0, 5, 1, 0, 16, 0, 0});
  for (std::uint32_t i = 0; i < 66; ++i) descriptor_op(b, kChainAddNear, {0, i, 1, 0, 0, i < 65 ? 1u : 0u, 0});
  descriptor_op(b, kChainAdd, {0, 64, 1, 0, 0xFFFFF000u, 1, 0});
  descriptor_op(b, kChainAdd, {0, 65, 1, 0, 0xFFFFF000u, 0, 0});
  // The path: a header of the sender's pool and a frame of slot 1, the
  // same index in two slots (two buffers), then slot 2 naming a buffer
  // twice.
  descriptor_op(b, kChainAdd, {0, 7, 1, 0, 64, 1, 0});
  descriptor_op(b, kChainAddSlot, {0, 7, 1, 0, 4096, 0, 0});
  descriptor_op(b, kChainAddSlot, {1, 7, 1, 0, 16, 1, 0});
  descriptor_op(b, kChainAddSlot, {1, 7, 2, 0, 16, 0, 0});
  write_file(dir / "chains", b);

  b.clear();
  // Eight classes, four of them near the 2^32 byte limit.
  put<std::uint8_t>(b, 7);
  put_bytes(b, {0, 63, 0x80, 0, 63, 7, 0x81, 1, 5, 5, 0xbf, 2, 1, 9, 0x90, 3});
  for (std::uint32_t i = 0; i < 24; ++i) {
    descriptor_op(b, kLocateNear, {0, i * 11, 1, i * 4096, 0xffffffffu - i * 4096, 0, i});
    descriptor_op(b, kLend, {0, i * 13, i, 0, 0, 0, 0});
  }
  descriptor_op(b, kTakeAll, {});
  write_file(dir / "eight_classes", b);
}

void ring_seeds(const fs::path& dir) {
  Bytes b;
  // Capacity 8: fill, drain, overfill, then a peer that moves tail ahead.
  put<std::uint8_t>(b, 3);
  put_bytes(b, {kPush, 2, kPop, kPop, kPop, kReadable, kPop, kPush, 7, kPush, 0, kReadable});
  for (int i = 0; i < 9; ++i) put(b, kPop);
  put_bytes(b, {kPush, 4, kPeerTailNear, 3, kPop, kPop, kPop, kPop, kPop, kPop, kPush, 0});
  write_file(dir / "fill_drain_forge_tail", b);

  b.clear();
  // Capacity 1: a full ring, then a consumer-side peer that lies about head.
  put<std::uint8_t>(b, 0);
  put_bytes(b, {kPush, 0, kPush, 0, kPop, kPush, 0, kPeerHead});
  put<std::uint64_t>(b, ~std::uint64_t{0});
  put_bytes(b, {kPush, 0, kPeerHeadNear, 0xff, kPush, 0, kPop});
  write_file(dir / "forge_head", b);

  b.clear();
  // Capacity 4: a peer that rewrites a slot and the waiters words.
  put<std::uint8_t>(b, 2);
  put_bytes(b, {kPush, 3, kPeerSlot, 1});
  put(b, Descriptor{1, 2, 3, 4, 5, 6, 7});
  put_bytes(b, {kPeerWaiters, 1});
  put<std::uint32_t>(b, 1);
  put_bytes(b, {kPop, kPop, kPop, kPop, kPush, 1, kReadable, kPushOne, kPushOne, kPushOne, kPop});
  write_file(dir / "scribble", b);
}

// Records for fuzz_owner: an op byte and its argument bytes.
void owner_ops(Bytes& b, std::initializer_list<std::initializer_list<std::uint8_t>> ops) {
  for (auto op : ops) put_bytes(b, op);
}

void owner_seeds(const fs::path& dir) {
  Bytes b;
  // read_only, ring of 4, 6 + 6 buffers: two honest receivers take, return
  // and detach (one as RemoteReceiver::close() does, one leaving its queue
  // to the owner), with drains in between.
  put_bytes(b, {(2 << 3) | 1, 12});
  owner_ops(b, {{kJoin, 0}, {kJoin, 0}, {kSendBuffers, 0}, {kSendBuffers, 2}, {kSendBuffers, 1},
                {kTakeOne, 0}, {kTakeOne, 0}, {kTakeOne, 1}, {kReturnOne, 0, 0}, {kDrainOwner, 2},
                {kShutWrite, 0x80}, {kControlEvents, 0}, {kDrainOwner, 1}, {kReturnOne, 0, 0},
                {kSendBuffers, 0}, {kShutWrite, 1}, {kControlEvents, 1}, {kCloseReceiver, 0},
                {kControlEvents, 0}, {kCloseReceiver, 1}, {kControlEvents, 0}, {kDrainOwner, 2}});
  write_file(dir / "honest_detach", b);

  b.clear();
  // read_only, ring of 2: two-slice messages (chains) to two receivers
  // until a ring is full (the message is refused whole), a single buffer
  // between them, returns and a detach.
  put_bytes(b, {(1 << 3) | 1, 12});
  owner_ops(b, {{kJoin, 0}, {kJoin, 0}, {kSendBuffers, 0x81}, {kSendBuffers, 0x81}, {kSendBuffers, 0x80},
                {kTakeOne, 0}, {kTakeOne, 0}, {kSendBuffers, 0x83}, {kTakeOne, 1}, {kTakeOne, 1},
                {kTakeOne, 0}, {kTakeOne, 0}, {kReturnOne, 0, 0}, {kReturnOne, 0, 1}, {kDrainOwner, 2},
                {kShutWrite, 0x81}, {kControlEvents, 1}, {kDrainOwner, 1}, {kDrainOwner, 2}});
  write_file(dir / "messages", b);

  b.clear();
  // volatile, ring of 8: receiver 1 forges returns of what receiver 0
  // holds (real index and generation), then rewrites a return slot and its
  // return ring's tail.
  put_bytes(b, {3 << 3, 0});
  owner_ops(b, {{kJoin, 0}, {kJoin, 0}, {kSendBuffers, 1}, {kSendBuffers, 1}, {kTakeOne, 0}, {kTakeOne, 0},
                {kForgeReturn, 1, 7, 0}, {kForgeReturn, 1, 7, 1}, {kForgeReturn, 1, 1, 0},
                {kForgeReturn, 1, 0, 2}, {kDrainOwner, 2}, {kPokeSlot, 1, 0x80, 7, 0},
                {kPokeWord, 1, 10, 0, 10, 1}, {kDrainOwner, 2}, {kSendBuffers, 0}, {kDrainOwner, 1}});
  write_file(dir / "forged_returns", b);

  b.clear();
  // copy_on_write, ring of 2: a receiver rewrites its send ring's head in
  // the window between the Welcome and the first send, and again before
  // its detach is handled; another scribbles on the header and doorbell.
  put_bytes(b, {(1 << 3) | 2, 7});
  owner_ops(b, {{kJoin, 0}, {kPokeWord, 0, 6, 0, 8, 0}, {kPokeWord, 0, 0, 0, 0, 0}, {kPokeWord, 0, 1, 0, 3, 0},
                {kShutWrite, 0}, {kControlEvents, 0}, {kDrainOwner, 2}, {kJoin, 0}, {kJoin, 0},
                {kSendBuffers, 1}, {kPokeWord, 1, 6, 0, 10, 0xfe}, {kShutWrite, 1}, {kControlEvents, 1},
                {kPokeWord, 2, 9, 0, 4, 0}, {kPokeWord, 2, 5, 0, 9, 3}, {kSendBuffers, 0},
                {kDrainOwner, 0}, {kChatter, 0}, {kControlEvents, 0}, {kDrainOwner, 2}});
  write_file(dir / "handshake_window", b);

  b.clear();
  // volatile, ring of 1: full rings (a timed send waits on one), a
  // cut-off, the sender going away while receivers still hold buffers,
  // then a new sender on the pool.
  put_bytes(b, {0, 24});
  owner_ops(b, {{kJoin, 0}, {kJoin, 0}, {kJoin, 0}, {kJoin, 0}, {kSendBuffers, 0}, {kSendBuffers, 0},
                {kTakeOne, 0}, {kTakeOne, 1}, {kSendBuffers, 0}, {kCutOffRemote, 2}, {kSendBuffers, 4},
                {kSendBuffers, 0xc0},
                {kHoldBuffer, 1}, {kCloseSender}, {kReturnOne, 0, 0}, {kDrainOwner, 0}, {kCloseReceiver, 1},
                {kDrainOwner, 2}, {kJoin, 0}, {kSendBuffers, 4}, {kTakeOne, 1}, {kDrainOwner, 1},
                {kShutWrite, 0}, {kCloseReceiver, 2}, {kDrainOwner, 2}});
  write_file(dir / "orphans", b);
}

// Seeds for fuzz_typed (its input format is described there). Cap'n Proto:
// a struct with a text, a list of structs and a nested struct, once in one
// segment and once spread over several; in place: a flat map of two series.
void typed_seeds(const fs::path& dir) {
  auto build = [](capnp::MessageBuilder& mb) {
    auto root = mb.getRoot<capnp::AnyPointer>().initAsAnyStruct(1, 3);
    root.getDataSection()[0] = 7;
    auto ptrs = root.getPointerSection();
    ptrs[0].setAs<capnp::Text>("fbuf typed seed");
    for (auto s : ptrs[1].initAsListOfAnyStruct(1, 1, 3)) s.getPointerSection()[0].setAs<capnp::Text>("box");
    ptrs[2].initAsAnyStruct(2, 0);
  };
  auto segments_seed = [](kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segs) {
    Bytes b{0, static_cast<std::uint8_t>(segs.size() - 1)};  // capnp, that many segments + 1, offsets 0
    for (std::size_t i = 0; i < segs.size(); ++i) {
      const auto bytes = segs[i].asBytes();
      const auto n = static_cast<std::uint16_t>(bytes.size());
      b.push_back(static_cast<std::uint8_t>(n));
      b.push_back(static_cast<std::uint8_t>(n >> 8));
      b.insert(b.end(), bytes.begin(), bytes.end());
    }
    return b;
  };
  capnp::MallocMessageBuilder one;
  build(one);
  write_file(dir / "capnp-one-segment", segments_seed(one.getSegmentsForOutput()));
  for (unsigned words = 6; words < 64; ++words) {  // the smallest segments that make at most 4
    capnp::MallocMessageBuilder several(words, capnp::AllocationStrategy::FIXED_SIZE);
    build(several);
    const auto segs = several.getSegmentsForOutput();
    if (segs.size() >= 2 && segs.size() <= 4) {
      write_file(dir / "capnp-several-segments", segments_seed(segs));
      break;
    }
  }

  fbuf::Pool pool(fbuf::PoolOptions{.name = "fuzz-seeds", .classes = {{65536, 1}}});
  fbuf::typed::InPlaceBuilder ip(std::move(*pool.try_allocate(4096)), 4096);
  auto* sm = ip.segment_manager();
  using Readings = fbuf::typed::FlatMap<fbuf::typed::String, fbuf::typed::Vector<float>>;
  auto& r = ip.construct_root<Readings>(0x5245'4144'494e'4701ull, sm);
  for (int i = 0; i < 2; ++i) {
    fbuf::typed::Vector<float> v(sm);
    for (int j = 0; j < 4; ++j) v.push_back(static_cast<float>(i * 10 + j));
    r.emplace(fbuf::typed::String(("series/with/a/long/name/" + std::to_string(i)).c_str(), sm), std::move(v));
  }
  fbuf::Buffer buf = std::move(ip).release();
  fbuf::typed::InPlaceHeader h;
  std::memcpy(&h, buf.data(), sizeof h);
  Bytes b{1, static_cast<std::uint8_t>(h.root_offset), static_cast<std::uint8_t>(h.root_offset >> 8)};
  const auto* p = reinterpret_cast<const std::uint8_t*>(buf.data());
  b.insert(b.end(), p + sizeof h, p + 4096);
  write_file(dir / "in-place-map", b);
}

// The bridge's header decoder (fuzz_bridge_header): a Hello and Credits to
// an exporter, then Data and End to an importer, each as one record.
void bridge_header_seeds(const fs::path& dir) {
  auto record = [](Bytes& b, bool to_exporter, std::uint32_t data_length, fbuf::bridge::Header h) {
    put<std::uint8_t>(b, static_cast<std::uint8_t>(32 | (to_exporter ? 0x40 : 0)));
    put(b, data_length);
    put(b, h);
  };
  fbuf::bridge::Header hello;
  hello.kind = static_cast<std::uint16_t>(fbuf::bridge::Kind::kHello);
  hello.length = 1 << 20;
  hello.credits = 8;
  fbuf::bridge::Header credit;
  credit.kind = static_cast<std::uint16_t>(fbuf::bridge::Kind::kCredit);
  credit.credits = 4;
  Bytes b;
  record(b, true, 12, hello);
  record(b, true, 0, credit);
  record(b, true, 0, credit);
  write_file(dir / "exporter", b);
  b.clear();
  for (std::uint64_t seq = 0; seq < 10; ++seq) {
    fbuf::bridge::Header data;
    data.kind = static_cast<std::uint16_t>(fbuf::bridge::Kind::kData);
    data.sequence = seq;
    data.length = 4096 * seq;
    record(b, false, static_cast<std::uint32_t>(data.length), data);
  }
  fbuf::bridge::Header end;
  end.kind = static_cast<std::uint16_t>(fbuf::bridge::Kind::kEnd);
  end.sequence = 10;
  record(b, false, 0, end);
  write_file(dir / "importer", b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path root = argv[1];
    for (const char* target : {"handshake", "descriptors", "ring", "owner", "typed", "bridge_header"}) {
      fs::create_directories(root / target);
    }
    handshake_seeds(root / "handshake");
    descriptor_seeds(root / "descriptors");
    ring_seeds(root / "ring");
    owner_seeds(root / "owner");
    typed_seeds(root / "typed");
    bridge_header_seeds(root / "bridge_header");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Malformed aggregates from a lying sender: a chain cut by the published
// tail, longer than the limit, too many bytes, with an invalid slice, a
// reserved flag bit or a buffer named twice. Each is rejected whole with
// kBadDescriptor, counted in ReceiverStats::rejected_messages, every valid
// slice of it goes back to the owner, and the next message still arrives.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using detail::Mapping;
using detail::UniqueFd;
using ipc::Descriptor;
using ipc::kMoreFollows;

struct Geometry {
  std::uint64_t buffer_size = 4096;
  std::uint32_t count = 128;
  std::uint32_t send_capacity = 128;
  std::uint32_t return_capacity = 128;
  std::uint64_t pool_bytes() const { return buffer_size * count; }
  std::size_t ring_bytes() const { return ipc::ChannelHeader::bytes(send_capacity, return_capacity); }
};

// A sender that speaks the protocol by hand: it writes whatever
// descriptors a test gives it into the receiver's ring and reads what the
// receiver returns. The Receiver is connected for real, through the socket.
class LyingSender {
 public:
  LyingSender(const char* what, Geometry g)
      : g_(g),
        pool_(detail::make_sealed_memfd("lying-pool", g.pool_bytes())),
        ring_fd_(detail::make_sealed_memfd("lying-ring", g.ring_bytes())),
        bell_fd_(detail::make_sealed_memfd("lying-bell", detail::page_size())),
        ring_(Mapping::map(ring_fd_.get(), g.ring_bytes(), PROT_READ | PROT_WRITE, "ring")),
        bell_(Mapping::map(bell_fd_.get(), detail::page_size(), PROT_READ | PROT_WRITE, "bell")),
        ready_(detail::make_ready_pair()) {
    header_ = detail::init_channel_header(ring_.data(), g.send_capacity, g.return_capacity);
    auto* d = new (bell_.data()) detail::DoorbellHeader{};
    d->magic = detail::kDoorbellMagic;
    d->version = detail::kDoorbellVersion;
    out_ = detail::RingProducer(&header_->send,
                                reinterpret_cast<Descriptor*>(ring_.data() + ipc::ChannelHeader::send_slots_offset()),
                                g.send_capacity);
    returns_ = detail::RingConsumer(
        &header_->ret,
        reinterpret_cast<const Descriptor*>(ring_.data() + ipc::ChannelHeader::return_slots_offset(g.send_capacity)),
        g.return_capacity);
    const std::string service = std::string("aggregate/") + what + "/" + std::to_string(getpid());
    listen_ = ipc::listen_service(service);
    thread_ = std::thread([this] { serve(); });
    rx = Receiver::connect(service, {.connect_timeout = 3s});
  }
  ~LyingSender() {
    rx = Receiver();
    done_ = true;
    thread_.join();
  }

  // Writes `chain` and publishes it with one tail store.
  void publish(const std::vector<Descriptor>& chain) {
    ASSERT_EQ(out_.reserve(static_cast<std::uint32_t>(chain.size())), detail::RingStatus::kOk);
    for (const Descriptor& d : chain) out_.write(d);
    (void)out_.publish();
  }
  // The indices the receiver has given back since the last call, sorted.
  std::vector<std::uint32_t> returned() {
    std::vector<std::uint32_t> out;
    Descriptor d;
    while (returns_.pop(d) == detail::RingStatus::kOk) out.push_back(d.index);
    std::sort(out.begin(), out.end());
    return out;
  }

  Receiver rx;

 private:
  void serve() {
    pollfd p{listen_.get(), POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return;
    UniqueFd conn(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return;
    ipc::Datagram dg;
    if (ipc::receive_message(conn.get(), dg, 5s)) return;
    capnp::MallocMessageBuilder m;
    auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
    w.setVersion(ipc::kProtocolVersion);
    w.setPoolName("lying");
    w.setPoolSize(g_.pool_bytes());
    auto c = w.initClasses(1);
    c[0].setBufferSize(g_.buffer_size);
    c[0].setCount(g_.count);
    w.setSendCapacity(g_.send_capacity);
    w.setReturnCapacity(g_.return_capacity);
    w.setRingBytes(g_.ring_bytes());
    int fds[4] = {pool_.get(), ring_fd_.get(), bell_fd_.get(), ready_.receiver.get()};
    (void)ipc::send_message(conn.get(), m, fds);
    while (!done_.load()) std::this_thread::sleep_for(1ms);
  }

  Geometry g_;
  UniqueFd pool_, ring_fd_, bell_fd_;
  Mapping ring_, bell_;
  detail::ReadyPair ready_;
  ipc::ChannelHeader* header_ = nullptr;
  detail::RingProducer out_;
  detail::RingConsumer returns_;
  UniqueFd listen_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

Descriptor slice(std::uint32_t index, std::uint32_t length, std::uint32_t flags = kMoreFollows) {
  return Descriptor{0, index, 1, 0, length, flags, 0};
}

// `n` slices of buffers first, first + 1, ..., chained.
std::vector<Descriptor> chain(std::uint32_t first, std::size_t n, std::uint32_t length = 16) {
  std::vector<Descriptor> out;
  for (std::size_t i = 0; i < n; ++i)
    out.push_back(slice(first + static_cast<std::uint32_t>(i), length, i + 1 < n ? kMoreFollows : 0));
  return out;
}

std::vector<std::uint32_t> indices(std::uint32_t first, std::size_t n) {
  std::vector<std::uint32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = first + static_cast<std::uint32_t>(i);
  return out;
}

// The next message is rejected, counted, and its valid slices come back;
// then a good two-slice message still arrives.
void expect_rejected(LyingSender& s, const std::vector<std::uint32_t>& valid, std::uint32_t next) {
  const ReceiverStats before = s.rx.stats();
  Result<Message> m = s.rx.receive_message(1s);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error(), Errc::kBadDescriptor);
  EXPECT_EQ(s.rx.stats().rejected_messages, before.rejected_messages + 1);
  EXPECT_EQ(s.returned(), valid);
  s.publish(chain(next, 2));
  Result<Message> good = s.rx.receive_message(1s);
  ASSERT_TRUE(good) << good.error().message();
  EXPECT_EQ(good->slice_count(), 2u);
  EXPECT_EQ(good->size(), 32u);
  good->clear();
  EXPECT_EQ(s.returned(), indices(next, 2));
  EXPECT_EQ(s.rx.stats().rejected_messages, before.rejected_messages + 1);
}

TEST(MalformedAggregate, AChainCutByThePublishedTailIsRejected) {
  LyingSender s("cut", {});
  s.publish({slice(0, 16), slice(1, 16)});  // "more follows" on the last one published
  expect_rejected(s, {0, 1}, 10);
}

TEST(MalformedAggregate, AChainLongerThanTheLimitIsRejected) {
  LyingSender s("long", {});
  s.publish(chain(0, Message::kMaxSlices + 1));
  expect_rejected(s, indices(0, Message::kMaxSlices + 1), 100);
  // Exactly the limit is a message.
  s.publish(chain(0, Message::kMaxSlices));
  Result<Message> m = s.rx.receive_message(1s);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->slice_count(), Message::kMaxSlices);
}

TEST(MalformedAggregate, AChainLongerThanTheRingEndsWithTheRing) {
  // A ring of 8 full of "more follows": the receiver stops after one
  // ring's worth and rejects what it took.
  LyingSender s("ring", {.count = 16, .send_capacity = 8, .return_capacity = 16});
  std::vector<Descriptor> all;
  for (std::uint32_t i = 0; i < 8; ++i) all.push_back(slice(i, 16));
  s.publish(all);
  expect_rejected(s, indices(0, 8), 10);
}

TEST(MalformedAggregate, AnInvalidSliceRejectsTheWholeMessage) {
  LyingSender s("bad", {});
  s.publish({slice(0, 16), slice(500, 16), slice(1, 16), Descriptor{0, 2, 1, 4000, 200, 0, 0}});
  expect_rejected(s, {0, 1}, 10);
  EXPECT_EQ(s.rx.stats().rejected_descriptors, 2u);
}

TEST(MalformedAggregate, AReservedFlagBitRejectsTheWholeMessage) {
  LyingSender s("flags", {});
  s.publish({slice(0, 16, kMoreFollows | 0x4), slice(1, 16, 0)});
  expect_rejected(s, {0, 1}, 10);
  // Bits 8..15 are forwarding's: not the aggregate's to judge.
  s.publish({slice(3, 16, kMoreFollows | 0x100), slice(4, 16, 0)});
  Result<Message> m = s.rx.receive_message(1s);
  EXPECT_TRUE(m) << m.error().message();
}

TEST(MalformedAggregate, ABufferNamedTwiceRejectsTheWholeMessage) {
  LyingSender s("twice", {});
  s.publish({slice(0, 16), slice(1, 16), slice(0, 8, 0)});
  // Each View made goes back once: buffer 0 twice (the owner's own ledger
  // rejects the second return), buffer 1 once.
  expect_rejected(s, {0, 0, 1}, 10);
}

TEST(MalformedAggregate, MoreBytesThanTheLimitRejectTheWholeMessage) {
  // Two buffers of almost 4 GiB each (the memfd is sparse; nothing is read).
  const std::uint64_t big = (std::uint64_t{1} << 32) - detail::page_size();
  LyingSender s("large", {.buffer_size = big, .count = 16, .send_capacity = 8, .return_capacity = 16});
  const auto length = static_cast<std::uint32_t>(big);
  s.publish({slice(0, length), slice(1, length, 0)});
  expect_rejected(s, {0, 1}, 10);
}

TEST(MalformedAggregate, PlainReceiveRejectsItTooAndLeavesAGoodOneForReceiveMessage) {
  LyingSender s("plain", {});
  s.publish({slice(0, 16), slice(0, 16, 0)});
  Result<View> v = s.rx.receive(1s);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error(), Errc::kBadDescriptor);
  EXPECT_EQ(s.rx.stats().rejected_messages, 1u);
  s.publish(chain(5, 3));
  EXPECT_EQ(s.rx.receive(1s).error(), Errc::kMessage);
  Result<Message> m = s.rx.receive_message(1s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->slice_count(), 3u);
}

}  // namespace
}  // namespace fbuf

// libFuzzer target for descriptor validation (ipc/validate.h): what a
// receiver does with a descriptor popped from the send ring
// (PoolGeometry::locate) and what an owner does with one popped from a
// return ring (LentSet::take_back). Both are compared against a reference
// model written the slow, obvious way.
//
// Input: one byte for the number of size classes (1..8), two bytes per
// class (size, count), then records of one op byte followed by a 32-byte
// Descriptor, until the input ends.
//
// Aggregates: the kChain* ops feed the descriptors of a chain into a
// ChainCheck (ipc/validate.h) as a receiver takes them from its ring, and
// compare its verdict after each with a model that judges the whole chain
// again from scratch. A size byte gives 1..64 pages, or with
// its top bit set one of the 64 largest sizes the handshake admits
// (2^32 - page downwards), so locate()'s arithmetic meets 32-bit limits.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "fbuf/pool.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "fbuf/buffers/lent_set.h"
#include "ipc/handshake.h"
#include "ipc/validate.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fbuf::SizeClass;
using fbuf::detail::Descriptor;
using namespace fbuf::fuzz;  // the op codes

std::vector<SizeClass> read_classes(fbuf::fuzz::Input& in) {
  const std::uint64_t page = fbuf::detail::page_size();
  const std::uint64_t largest = (std::uint64_t{1} << 32) - page;
  std::vector<SizeClass> classes(1 + in.take<std::uint8_t>() % 8);
  for (auto& c : classes) {
    auto size = in.take<std::uint8_t>();
    auto count = in.take<std::uint8_t>();
    std::uint64_t step = size & 0x3f;
    c.buffer_size = static_cast<std::size_t>((size & 0x80) != 0 ? largest - step * page : (1 + step) * page);
    c.count = 1 + count % 64u;
  }
  return classes;
}

// Where a descriptor's bytes lie, computed class by class from scratch.
struct Span {
  std::uint64_t buffer_begin, buffer_end, at;
};

std::optional<Span> reference_locate(const std::vector<SizeClass>& classes, const Descriptor& d) {
  if (d.pool != 0) return std::nullopt;
  std::uint64_t first = 0, offset = 0;
  for (const auto& c : classes) {
    if (d.index < first + c.count) {
      if (std::uint64_t{d.offset} + d.length > c.buffer_size) return std::nullopt;
      std::uint64_t begin = offset + (d.index - first) * std::uint64_t{c.buffer_size};
      return Span{begin, begin + c.buffer_size, begin + d.offset};
    }
    first += c.count;
    offset += std::uint64_t{c.buffer_size} * c.count;
  }
  return std::nullopt;
}

void check_locate(const fbuf::ipc::PoolGeometry& geometry, const std::vector<SizeClass>& classes,
                  const Descriptor& d) {
  std::optional<std::uint64_t> at = geometry.locate(d);
  std::optional<Span> want = reference_locate(classes, d);
  FUZZ_CHECK(at.has_value() == want.has_value());
  if (!at) return;
  FUZZ_CHECK(*at == want->at);
  // The receiver reads [at, at + length) of its pool mapping: it must lie
  // within the pool and within the one buffer the descriptor names.
  FUZZ_CHECK(*at >= want->buffer_begin);
  FUZZ_CHECK(*at + d.length <= want->buffer_end);
  FUZZ_CHECK(*at + d.length <= geometry.bytes());
}

// One descriptor of a chain as the receiver saw it.
struct Fed {
  Descriptor d;
  bool valid;  // the receiver could map its bytes
};

using Fault = fbuf::ipc::ChainCheck::Fault;

// The verdict on a chain, from scratch: the first rule the slices, in
// order, break; kept is how many slices a message of it would have.
struct Verdict {
  Fault fault = Fault::kNone;
  std::size_t kept = 0;
};

Verdict reference_chain(const std::vector<Fed>& chain, bool cut) {
  Verdict v;
  std::set<std::pair<std::uint32_t, std::uint32_t>> named;
  std::uint64_t total = 0;
  for (const Fed& f : chain) {
    if (!f.valid || (f.d.flags & 0xFEu) != 0) return {Fault::kBadSlice, 0};
    if (v.kept == 64) return {Fault::kTooLong, 0};
    total += f.d.length;
    if (total > 0xFFFFFFFFu) return {Fault::kTooLarge, 0};
    if (!named.insert({f.d.pool, f.d.index}).second) return {Fault::kDuplicate, 0};
    ++v.kept;
  }
  if (cut) return {Fault::kCut, 0};
  return v;
}

// The chain under way and its checker.
struct Chain {
  fbuf::ipc::ChainCheck check;
  std::vector<Fed> fed;

  void add(const Descriptor& d, bool valid) {
    const bool kept = check.add(d, valid);
    fed.push_back({d, valid});
    const Verdict want = reference_chain(fed, false);
    FUZZ_CHECK(kept == (want.fault == Fault::kNone));
    FUZZ_CHECK(check.fault() == want.fault);
    FUZZ_CHECK(check.kept() == want.kept);
    FUZZ_CHECK(check.taken() == fed.size());
    FUZZ_CHECK(check.kept() <= fbuf::detail::kMaxMessageSlices);
    FUZZ_CHECK(check.open() == ((d.flags & fbuf::ipc::kMoreFollows) != 0));
    if (!check.open()) reset();
  }
  void cut() {
    const bool open = check.open() && !fed.empty();
    check.cut();
    FUZZ_CHECK(!check.open());
    if (open) {
      const Verdict want = reference_chain(fed, true);
      FUZZ_CHECK(check.fault() == want.fault);
      FUZZ_CHECK(check.kept() == 0);
    }
    reset();
  }
  void reset() {
    check = fbuf::ipc::ChainCheck();
    fed.clear();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fbuf::fuzz::Input in(data, size);
  const std::vector<SizeClass> classes = read_classes(in);
  const fbuf::ipc::PoolGeometry geometry(classes);

  std::uint64_t bytes = 0;
  std::uint32_t count = 0;
  for (const auto& c : classes) {
    bytes += std::uint64_t{c.buffer_size} * c.count;
    count += c.count;
  }
  FUZZ_CHECK(geometry.buffer_count() == count);
  FUZZ_CHECK(geometry.bytes() == bytes);

  fbuf::detail::LentSet lent(count);
  // The reference model: index -> generation of every outstanding loan. A
  // return that take_back() accepts is erased, so accepting the same loan
  // twice shows up as a mismatch with the model.
  std::map<std::uint32_t, std::uint32_t> model;
  Chain chain;
  // The path: a holder's LentSet (count_repeats()) takes the same ops; a
  // loan of what it holds already counts once more and needs a return of
  // its own. Its model: index -> (generation, loans).
  fbuf::detail::LentSet holder(count);
  holder.count_repeats();
  std::map<std::uint32_t, std::pair<std::uint32_t, std::uint32_t>> holder_model;

  while (!in.empty()) {
    auto op = static_cast<DescriptorOp>(in.take<std::uint8_t>() % kDescriptorOpCount);
    auto d = in.take<Descriptor>();
    switch (op) {
      case kLocate:
        check_locate(geometry, classes, d);
        break;
      case kLocateNear:
        d.pool = 0;
        d.index %= count + 1;
        check_locate(geometry, classes, d);
        break;
      case kLend: {
        std::uint32_t index = d.index % count;
        std::uint32_t generation = d.generation != 0 ? d.generation : 1;
        lent.lend(index, generation);
        model[index] = generation;
        holder.lend(index, generation);
        auto [it, fresh] = holder_model.try_emplace(index, generation, 0);
        if (it->second.first != generation) it->second = {generation, 0};
        ++it->second.second;
        FUZZ_CHECK(holder.holds(index, generation));
        break;
      }
      case kTakeBackNear:
        d.pool = 0;
        d.index %= count;
        if ((d.flags & 1) == 0 && model.count(d.index) != 0) d.generation = model[d.index];
        [[fallthrough]];
      case kTakeBack: {
        auto it = model.find(d.index);
        bool valid = d.pool == 0 && it != model.end() && it->second == d.generation;
        FUZZ_CHECK(lent.take_back(d) == valid);
        if (valid) model.erase(it);
        auto h = holder_model.find(d.index);
        const bool held = d.pool == 0 && h != holder_model.end() && h->second.first == d.generation;
        FUZZ_CHECK(holder.take_back(d) == held);
        if (held && --h->second.second == 0) holder_model.erase(h);
        break;
      }
      case kTakeAll: {
        auto expect = model.begin();
        lent.take_all([&](std::uint32_t index, std::uint32_t generation) {
          // Every loan, each once, in index order, then none.
          FUZZ_CHECK(expect != model.end());
          FUZZ_CHECK(index == expect->first && generation == expect->second);
          ++expect;
        });
        FUZZ_CHECK(expect == model.end());
        model.clear();
        // Every loan of the holder, repeats included, then none.
        std::map<std::uint32_t, std::pair<std::uint32_t, std::uint32_t>> seen;
        holder.take_all([&](std::uint32_t index, std::uint32_t generation) {
          auto& e = seen[index];
          FUZZ_CHECK(e.second == 0 || e.first == generation);
          e = {generation, e.second + 1};
        });
        FUZZ_CHECK(seen == holder_model);
        holder_model.clear();
        break;
      }
      case kChainAddNear:
        d.pool = 0;
        d.index %= count + 1;
        d.offset = 0;
        d.length = (d.flags & (1u << 30)) != 0 ? 0xFFFFFFFFu : 16;
        d.flags &= (d.flags & (1u << 31)) != 0 ? 0xFFu : fbuf::ipc::kMoreFollows;
        [[fallthrough]];
      case kChainAdd:
        chain.add(d, geometry.locate(d).has_value());
        break;
      case kChainCut:
        chain.cut();
        break;
      case kChainAddSlot: {
        d.index %= count + 1;
        Descriptor in_slot = d;
        in_slot.pool = 0;  // the slot's pool, located as the receiver does
        d.pool = 1 + d.pool % fbuf::ipc::kMaxPoolSlots;
        chain.add(d, geometry.locate(in_slot).has_value());
        break;
      }
      case kDescriptorOpCount:
        break;
    }
    FUZZ_CHECK(lent.outstanding() == model.size());
    FUZZ_CHECK(holder.outstanding() == holder_model.size());
  }
  return 0;
}

// The fbuf command-line tool against live pipelines: producers and
// consumers are fbuf_it_peer processes, the tool is the installed program
// run as a child, and every test checks what it printed (the numbers, pids
// and bytes the pipeline really has), not only its exit status.
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <capnp/message.h>
#include <sys/socket.h>

#include <atomic>

#include "child_process.h"
#include "fbuf/base/fd.h"
#include "fbuf/fbuf.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/monitor.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string me() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr ? pw->pw_name : std::to_string(::geteuid());
}

// Runs the tool to its end; its output, with the exit status checked.
std::string run_tool(std::vector<std::string> args, int expect_code = 0,
                     std::chrono::milliseconds timeout = 30s) {
  Child tool(FBUF_CLI, std::move(args));
  const ExitStatus st = tool.wait(timeout);
  EXPECT_TRUE(st.exited_with(expect_code)) << tool.command() << ": " << st.describe() << "\n" << tool.output();
  return tool.output();
}

// Runs `fbuf info SERVICE` until its output contains `text` (the pipeline
// takes a moment to reach the state under test); the last output.
std::string info_until(const std::string& service, const std::string& text, std::chrono::seconds timeout = 20s) {
  const auto deadline = Clock::now() + timeout;
  std::string out;
  while (Clock::now() < deadline) {
    Child tool(FBUF_CLI, {"info", service});
    const ExitStatus st = tool.wait(10s);
    out = tool.output();
    if (st.exited_with(0) && out.find(text) != std::string::npos) return out;
    std::this_thread::sleep_for(100ms);
  }
  ADD_FAILURE() << "fbuf info " << service << " never showed '" << text << "'; last output:\n" << out;
  return out;
}

// The receiver row of `fbuf info` for process `pid`, split in words:
// ID PID USER DATE TIME AGE HELD QUEUED RING DELIVERED RETURNED DROPPED REJECTED STATE...
std::vector<std::string> receiver_row(const std::string& info, pid_t pid) {
  for (const std::string& line : lines_of(info)) {
    std::vector<std::string> w = words_of(line);
    if (w.size() >= 14 && w[1] == std::to_string(pid)) return w;
  }
  ADD_FAILURE() << "no receiver row for pid " << pid << " in:\n" << info;
  return std::vector<std::string>(14);
}

Child start_stream(const std::string& service, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"stream", "--service", service};
  args.insert(args.end(), more.begin(), more.end());
  Child c(FBUF_IT_PEER, std::move(args));
  EXPECT_TRUE(c.wait_for_output("listening on", 20s)) << c.output();
  return c;
}

TEST(Cli, ListShowsAStartedServiceWithItsOwner) {
  const std::string service = unique_service("cli-list");
  Child producer = start_stream(service);
  const std::string out = run_tool({"list"});
  bool found = false;
  for (const std::string& line : lines_of(out)) {
    std::vector<std::string> w = words_of(line);
    if (w.size() >= 3 && w[0] == service) {
      found = true;
      EXPECT_EQ(w[1], std::to_string(producer.pid())) << line;
      EXPECT_EQ(w[2], me()) << line;
    }
  }
  EXPECT_TRUE(found) << out;
  const std::string json = run_tool({"list", "--json"});
  EXPECT_NE(json.find("\"service\": \"" + service + "\", \"pid\": " + std::to_string(producer.pid())),
            std::string::npos)
      << json;

  // Gone with its producer.
  producer.kill(SIGKILL);
  producer.wait(10s);
  EXPECT_EQ(run_tool({"list"}).find(service), std::string::npos);
}

TEST(Cli, InfoShowsReceiversHoldingsAndCounters) {
  const std::string service = unique_service("cli-info");
  // Five frames once two receivers are there; one holds all five, the other
  // takes two and leaves three queued in its ring.
  Child producer = start_stream(service, {"--count", "5", "--receivers", "2", "--hz", "0", "--buffers", "8"});
  Child all(FBUF_IT_PEER, {"hold", "--service", service, "--views", "5", "--hold-ms", "-1"});
  Child two(FBUF_IT_PEER, {"hold", "--service", service, "--views", "2", "--hold-ms", "-1"});
  ASSERT_TRUE(all.wait_for_output("holding views=5", 20s)) << all.output();
  ASSERT_TRUE(two.wait_for_output("holding views=2", 20s)) << two.output();
  ASSERT_TRUE(producer.wait_for_output("sent frames=5", 20s)) << producer.output();

  const std::string out = run_tool({"info", service});
  EXPECT_NE(out.find("owner      pid " + std::to_string(producer.pid()) + ", user " + me()), std::string::npos)
      << out;
  EXPECT_NE(out.find("'it-stream', policy volatile, 8 buffers, 3 free"), std::string::npos) << out;
  EXPECT_NE(out.find("counters   sent 5, delivered 10, returned 0, dropped 0"), std::string::npos) << out;
  EXPECT_NE(out.find("receivers  2 now"), std::string::npos) << out;
  EXPECT_EQ(out.find("pool exhausted"), std::string::npos) << out;

  const std::vector<std::string> a = receiver_row(out, all.pid());
  EXPECT_EQ(a[2], me());
  EXPECT_EQ(a[6], "5") << "held";
  EXPECT_EQ(a[7], "0") << "queued";
  EXPECT_EQ(a[8], "0/256") << "ring";
  EXPECT_EQ(a[9], "5") << "delivered";
  EXPECT_EQ(a[10], "0") << "returned";
  EXPECT_EQ(a[13], "active");
  const std::vector<std::string> b = receiver_row(out, two.pid());
  EXPECT_EQ(b[6], "2") << "held";
  EXPECT_EQ(b[7], "3") << "queued";
  EXPECT_EQ(b[8], "3/256") << "ring";
  EXPECT_EQ(b[9], "5") << "delivered";
  // Connected since: today's date, a moment ago.
  char today[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(today, sizeof today, "%Y-%m-%d", std::localtime(&now));
  EXPECT_EQ(a[3], today);

  const std::string json = run_tool({"info", service, "--json"});
  EXPECT_NE(json.find("\"pid\": " + std::to_string(two.pid())), std::string::npos) << json;
  EXPECT_NE(json.find("\"held\": 2, \"queued\": 3"), std::string::npos) << json;
}

TEST(Cli, InfoNamesTheStalledReceiverThatDrainedThePool) {
  const std::string service = unique_service("cli-drained");
  // A producer as fast as buffers come back, a consumer that keeps up and
  // one that takes four buffers and then stops: the pool (16 buffers) ends
  // up lent to the staller, four taken and twelve queued in its ring.
  Child producer = start_stream(service, {"--hz", "0", "--buffers", "16"});
  Child sink(FBUF_IT_PEER, {"sink", "--service", service});
  ASSERT_TRUE(sink.wait_for_output("connected", 20s)) << sink.output();
  Child staller(FBUF_IT_PEER, {"stall", "--service", service, "--views", "4"});
  ASSERT_TRUE(staller.wait_for_output("holding views=4", 20s)) << staller.output();

  const std::string out = info_until(service, "pool exhausted");
  const std::vector<std::string> row = receiver_row(out, staller.pid());
  const std::string expect = "pool exhausted: receiver " + row[0] + " (pid " + std::to_string(staller.pid()) +
                             ", user " + me() + ") holds 16 of 16 buffers (4 taken, 12 queued)";
  EXPECT_NE(out.find(expect), std::string::npos) << out;
  EXPECT_EQ(row[6], "4");
  EXPECT_EQ(row[7], "12");
  const std::vector<std::string> healthy = receiver_row(out, sink.pid());
  EXPECT_EQ(healthy[6], "0") << out;
  EXPECT_EQ(healthy[7], "0") << out;
  const std::string json = run_tool({"info", service, "--json"});
  EXPECT_NE(json.find("\"exhausted_by\": " + row[0]), std::string::npos) << json;
}

TEST(Cli, PeekPrintsTheBytesTheProducerWrote) {
  const std::string service = unique_service("cli-peek");
  Child producer = start_stream(service, {"--hz", "200", "--size", "4096"});
  const std::string out = run_tool({"peek", service, "-n", "3", "--bytes", "24"});
  const std::vector<std::string> lines = lines_of(out);
  int messages = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rfind("message ", 0) != 0) continue;
    ++messages;
    EXPECT_NE(lines[i].find(": 4096 bytes"), std::string::npos) << lines[i];
    ASSERT_LT(i + 2, lines.size()) << out;
    // "FBUF", eight bytes of sequence number, then i & 0xff from byte 12.
    EXPECT_NE(lines[i + 1].find("00000000  46 42 55 46 "), std::string::npos) << lines[i + 1];
    EXPECT_NE(lines[i + 1].find("|FBUF"), std::string::npos) << lines[i + 1];
    EXPECT_NE(lines[i + 2].find("00000010  10 11 12 13 14 15 16 17"), std::string::npos) << lines[i + 2];
  }
  EXPECT_EQ(messages, 3) << out;
  EXPECT_NE(out.find("... 4072 more bytes"), std::string::npos) << out;
}

TEST(Cli, PeekReleasesEachBufferAtOnce) {
  const std::string service = unique_service("cli-peek-release");
  // Two buffers only: the producer can send the third message only after
  // peek gave one back, so peek gets 20 only if it lets each buffer go
  // (a peek that kept its views would wait in vain from the third on).
  Child producer = start_stream(service, {"--hz", "0", "--buffers", "2", "--receivers", "1"});
  const std::string out = run_tool({"peek", service, "-n", "20", "--bytes", "4"});
  EXPECT_NE(out.find("message 20: 4096 bytes"), std::string::npos) << out;
  const std::string info = run_tool({"info", service});
  EXPECT_NE(info.find("dropped 0"), std::string::npos) << info;
}

TEST(Cli, HzReportsTheRate) {
  const std::string service = unique_service("cli-hz");
  Child producer = start_stream(service, {"--hz", "200"});
  const std::string out = run_tool({"hz", service, "-n", "3", "-i", "0.5"});
  int rates = 0;
  for (const std::string& line : lines_of(out)) {
    std::vector<std::string> w = words_of(line);
    if (w.size() < 3 || w[0] != "rate") continue;
    ++rates;
    const double rate = std::strtod(w[1].c_str(), nullptr);
    // At most 200 per second (the producer never catches up in bursts),
    // and well above nothing even on a loaded machine.
    EXPECT_GT(rate, 20.0) << line;
    EXPECT_LT(rate, 300.0) << line;
    EXPECT_NE(line.find("size min 4096 avg 4096 max 4096"), std::string::npos) << line;
  }
  EXPECT_EQ(rates, 3) << out;
  // --duration stops it too.
  const std::string timed = run_tool({"hz", service, "--duration", "0.6", "-i", "0.25"});
  EXPECT_NE(timed.find("total "), std::string::npos) << timed;
}

// The pool's own counters, as the tool must print them.
std::string sealed_line(const PoolStats& st, const std::string& size) {
  return "sealed     copies up to " + size + "; " + std::to_string(st.sealed_total) + " slots, " +
         std::to_string(st.sealed_free) + " free, " + std::to_string(st.sealed_in_flight) + " in flight; " +
         std::to_string(st.sealed_copies) + " copies, " + std::to_string(st.sealed_fallbacks) + " fallbacks";
}

// A read_only pool with sealed copies up to 4 KiB (explicit: no
// calibration), a receiver in another process that holds what it gets,
// and the tool in a third: sealed copies, a fallback and a protected send
// show with the numbers the pool's stats() has.
TEST(Cli, InfoShowsSealedCopiesAsThePoolCountsThem) {
  const std::string service = unique_service("cli-sealed");
  Pool pool(PoolOptions{.name = "cli-sealed",
                        .classes = {{4096, 2}, {65536, 1}},
                        .policy = Policy::kReadOnly,
                        .sealed_copies = SealedCopies::kUpTo,
                        .sealed_copy_limit = 4096});
  ASSERT_EQ(pool.sealed_copy_size(), 4096u);
  Sender sender(pool, service);
  {
    // Before anything is sent: the slots, none used.
    const std::string out = run_tool({"info", service});
    EXPECT_NE(out.find(sealed_line(pool.stats(), "4 KiB")), std::string::npos) << out;
    EXPECT_NE(out.find("sealed     copies up to 4 KiB; 2 slots, 2 free, 0 in flight; 0 copies, 0 fallbacks"),
              std::string::npos)
        << out;
  }
  Child holder(FBUF_IT_PEER, {"hold", "--service", service, "--views", "4", "--hold-ms", "-1"});
  ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << holder.output();
  // Two small sends are copied into the two sealed slots; the third finds
  // none free (the holder keeps them) and protects its buffer instead; the
  // large one is protected, its class has no sealed slots.
  for (std::size_t size : {100, 200, 300, 5000}) {
    Result<Buffer> b = pool.allocate(size, 5s);
    ASSERT_TRUE(b) << b.error().message();
    ASSERT_FALSE(sender.send(std::move(*b), size, 5s));
  }
  ASSERT_TRUE(holder.wait_for_output("holding views=4", 20s)) << holder.output();

  // Nothing comes back while the holder holds: the counters stand still.
  const PoolStats st = pool.stats();
  EXPECT_EQ(st.sealed_total, 2u);
  EXPECT_EQ(st.sealed_copies, 2u);
  EXPECT_EQ(st.sealed_fallbacks, 1u);
  EXPECT_EQ(st.sealed_in_flight, 2u);
  EXPECT_EQ(st.in_flight, 2u);  // the fallback and the large buffer
  const std::string out = run_tool({"info", service});
  EXPECT_NE(out.find(sealed_line(st, "4 KiB")), std::string::npos) << out;
  EXPECT_NE(out.find("'cli-sealed', policy read_only, 3 buffers, " + std::to_string(st.free) + " free"),
            std::string::npos)
      << out;
  bool small = false, large = false;
  for (const std::string& line : lines_of(out)) {
    if (line.find("  class ") != 0) continue;
    if (line.find("4 KiB x 2") != std::string::npos) {
      small = true;
      EXPECT_NE(line.find(", sealed copies: " + std::to_string(st.sealed_free) + " of 2 slots free"),
                std::string::npos)
          << line;
    } else if (line.find("64 KiB x 1") != std::string::npos) {
      large = true;
      EXPECT_EQ(line.find("sealed"), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(small && large) << out;
  // The holder keeps every sealed slot and every buffer sent.
  EXPECT_NE(out.find("pool exhausted: receiver 1 (pid " + std::to_string(holder.pid()) + ", user " + me() +
                     ") holds 4 of 5 buffers and sealed slots (4 taken, 0 queued); class 64 KiB has none of its 1 free"),
            std::string::npos)
      << out;

  const std::string json = run_tool({"info", service, "--json"});
  const std::string expect = "\"sealed\": {\"copy_size\": 4096, \"total\": " + std::to_string(st.sealed_total) +
                             ", \"free\": " + std::to_string(st.sealed_free) +
                             ", \"in_flight\": " + std::to_string(st.sealed_in_flight) +
                             ", \"copies\": " + std::to_string(st.sealed_copies) +
                             ", \"fallbacks\": " + std::to_string(st.sealed_fallbacks) + "}";
  EXPECT_NE(json.find(expect), std::string::npos) << json;
  // The large class's only buffer is in flight: the small class has every free one.
  EXPECT_NE(json.find("\"buffer_size\": 4096, \"count\": 2, \"free\": " + std::to_string(st.free) +
                      ", \"sealed\": true, \"sealed_free\": " + std::to_string(st.sealed_free)),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"buffer_size\": 65536, \"count\": 1, \"free\": 0, \"sealed\": false, \"sealed_free\": 0"),
            std::string::npos)
      << json;
}

TEST(Cli, InfoSaysWhenAPoolHasNoSealedCopies) {
  const std::string service = unique_service("cli-unsealed");
  Child producer = start_stream(service);
  const std::string out = run_tool({"info", service});
  EXPECT_NE(out.find("sealed     none (every send of this pool is shared as it is)"), std::string::npos) << out;
  const std::string json = run_tool({"info", service, "--json"});
  EXPECT_NE(json.find("\"sealed\": {\"copy_size\": 0, \"total\": 0, \"free\": 0, \"in_flight\": 0, "
                      "\"copies\": 0, \"fallbacks\": 0}"),
            std::string::npos)
      << json;
}

// `fbuf top` counts copies and fallbacks per second for a pool with
// sealed slots: a sender in this process copies small buffers to a
// consumer in another that releases each at once.
TEST(Cli, TopShowsTheRateOfSealedCopies) {
  const std::string service = unique_service("cli-top-sealed");
  Pool pool(PoolOptions{.name = "cli-top-sealed",
                        .classes = {{4096, 8}},
                        .policy = Policy::kReadOnly,
                        .sealed_copies = SealedCopies::kUpTo,
                        .sealed_copy_limit = 4096});
  Sender sender(pool, service);
  Child sink(FBUF_IT_PEER, {"sink", "--service", service});
  ASSERT_TRUE(sender.wait_for_receivers(1, 20s)) << sink.output();
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    // relaxed: a stop flag; nothing is published with it.
    while (!stop.load(std::memory_order_relaxed)) {
      if (Result<Buffer> b = pool.allocate(64, 1s); b) (void)sender.send(std::move(*b), 64, 1s);
      std::this_thread::sleep_for(5ms);
    }
  });
  const std::string out = run_tool({"top", "-n", "2", "-d", "0.5"});
  stop.store(true, std::memory_order_relaxed);
  producer.join();
  EXPECT_NE(out.find("COPIED/S  FALLBK/S"), std::string::npos) << out;
  const std::size_t second_block = out.find("iteration 2");
  ASSERT_NE(second_block, std::string::npos) << out;
  bool found = false;
  for (const std::string& line : lines_of(out.substr(second_block))) {
    std::vector<std::string> w = words_of(line);
    if (w.size() < 8 || w[0] != service) continue;
    found = true;
    // SERVICE PID USER RECV SENT/S DELIV/S COPIED/S FALLBK/S ...
    const double sent = std::strtod(w[4].c_str(), nullptr);
    const double copied = std::strtod(w[6].c_str(), nullptr);
    EXPECT_GT(copied, 20.0) << line;
    // Every send of this pool is a copy unless its slots ran out (a send
    // may be counted as a copy a moment before it is counted as sent).
    EXPECT_LE(copied, sent + 5.0) << line;
    EXPECT_NE(w[7], "-") << line;
  }
  EXPECT_TRUE(found) << out;
  const PoolStats st = pool.stats();
  EXPECT_GT(st.sealed_copies, 0u);
}

TEST(Cli, TopInBatchModeShowsEveryServiceAndItsRate) {
  const std::string first = unique_service("cli-top-a");
  const std::string second = unique_service("cli-top-b");
  Child a = start_stream(first, {"--hz", "100"});
  Child b = start_stream(second, {"--hz", "100"});
  Child sink_a(FBUF_IT_PEER, {"sink", "--service", first});
  Child sink_b(FBUF_IT_PEER, {"sink", "--service", second});
  ASSERT_TRUE(sink_a.wait_for_output("connected", 20s));
  ASSERT_TRUE(sink_b.wait_for_output("connected", 20s));
  // Not a terminal (captured): batch output without asking for it.
  const std::string out = run_tool({"top", "-n", "2", "-d", "0.5"});
  EXPECT_EQ(out.find("\x1b["), std::string::npos) << "escape sequences in batch output";
  EXPECT_NE(out.find("iteration 2"), std::string::npos) << out;
  const std::size_t second_block = out.find("iteration 2");
  int rows = 0;
  for (const std::string& line : lines_of(out.substr(second_block == std::string::npos ? 0 : second_block))) {
    std::vector<std::string> w = words_of(line);
    if (w.size() < 6 || (w[0] != first && w[0] != second)) continue;
    ++rows;
    EXPECT_EQ(w[1], std::to_string(w[0] == first ? a.pid() : b.pid())) << line;
    EXPECT_EQ(w[3], "1") << "receivers: " << line;
    const double sent = std::strtod(w[4].c_str(), nullptr);
    EXPECT_GT(sent, 20.0) << line;
    // Volatile pools copy nothing: no rates of copies or fallbacks.
    EXPECT_EQ(w[6], "-") << line;
    EXPECT_EQ(w[7], "-") << line;
  }
  EXPECT_EQ(rows, 2) << out;
}

TEST(Cli, AHostileServiceCannotWriteToTheTerminal) {
  // A fake service whose reply is valid but carries an escape sequence and
  // a newline in its pool name, and times at the ends of their range.
  const std::string service = unique_service("cli-hostile");
  detail::UniqueFd listening = ipc::listen_service(service);
  std::atomic<bool> stop{false};
  std::thread liar([&] {
    // relaxed: a stop flag; nothing is published with it.
    while (!stop.load(std::memory_order_relaxed)) {
      detail::UniqueFd peer(::accept4(listening.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!peer) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      ipc::Datagram request;
      (void)ipc::receive_message(peer.get(), request, 1s);
      ipc::MonitorInfo info;
      info.service = service;
      info.pool_name = "evil\x1b[2J\nname";
      info.classes = {{4096, 4, 0}};
      info.ring_capacity = 16;
      for (std::int64_t t : {INT64_MIN, INT64_MAX}) {
        ipc::MonitorReceiver r;
        r.id = 1;
        r.connected_since_ns = t;
        r.ring_capacity = 16;
        r.held = 4;
        info.receivers.push_back(r);
      }
      capnp::MallocMessageBuilder m;
      ipc::build_monitor_reply(m, info);
      (void)ipc::send_message(peer.get(), m, {});
    }
  });
  const std::string out = run_tool({"info", service});
  const std::string listed = run_tool({"list"});
  stop.store(true, std::memory_order_relaxed);
  liar.join();
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
  EXPECT_NE(out.find("'evil\\x1b[2J\\x0aname'"), std::string::npos) << out;
  EXPECT_NE(out.find("pool exhausted: receiver 1"), std::string::npos) << out;
  EXPECT_EQ(listed.find('\x1b'), std::string::npos) << listed;
}

TEST(Cli, UnknownServiceFailsWithAMessage) {
  const std::string out = run_tool({"--timeout", "0.2", "info", unique_service("cli-nobody")}, 1);
  EXPECT_NE(out.find("fbuf info"), std::string::npos) << out;
}

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* sub : {"list", "info", "top", "hz", "peek"}) {
    const std::string out = run_tool({sub, "--help"});
    EXPECT_NE(out.find("Usage:"), std::string::npos) << sub << ":\n" << out;
  }
  // A missing subcommand or argument is a usage error.
  run_tool({}, 106);
}

}  // namespace
}  // namespace fbuf::testing

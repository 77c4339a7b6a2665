// One measured cell (a transport, a mode, a size), as the producer runs it:
// a warm-up, throughput windows, then ping-pong round trips; and the
// consumer's side of it. Also the memcpy cell, which runs in one thread.
//
// The producer and the consumer also share a control socket (consumer ->
// producer reports, outside the measured path): the consumer reports after
// each message flagged kFlagAck (the end of a throughput window) and after
// kFlagStop (with its counts, which the producer checks).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "ends.h"
#include "message.h"

namespace fbuf::bench::peers {

inline constexpr int kMaxRepeats = 16;

// How long each part of a cell runs.
struct Plan {
  double warmup_s = 0.05;      // streaming warm-up (and at least 2 laps of `depth`)
  int repeats = 5;             // throughput windows, and latency batches
  double window_s = 0.15;      // one throughput window
  double latency_s = 0.3;      // all latency batches together (at most)
  std::uint32_t max_rtts = 20000;  // all latency batches together (at most)
  std::uint32_t min_rtts = 10;     // per batch (at least), whatever the time
};

// What a cell measured. Plain data: the producer process writes it to the
// orchestrator through a pipe.
struct CellResult {
  std::int32_t ok = 0;
  char error[480] = {};

  // Throughput windows: messages and seconds of each.
  std::int32_t windows = 0;
  std::uint64_t window_messages[kMaxRepeats] = {};
  double window_seconds[kMaxRepeats] = {};

  // One-way latency (round trip / 2; memcpy: one operation), microseconds,
  // over all batches; the p50 of each batch shows the spread.
  std::uint32_t samples = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, min_us = 0, max_us = 0;
  std::int32_t batches = 0;
  double batch_p50_us[kMaxRepeats] = {};

  std::uint64_t messages = 0;  // all messages the consumer checked
};

// The producer's side of a cell over `end`. `control_fd` carries the
// consumer's reports. Never throws; failures land in the result.
CellResult run_producer(ProducerEnd& end, int control_fd, const EndConfig& c, const Plan& plan);

// The consumer's side: receives until kFlagStop, replying and reporting as
// flagged. Returns 0, or 1 after printing why to stderr.
int run_consumer(ConsumerEnd& end, int control_fd, const char* label);

// memcpy of `c.size` bytes between two private buffers in this thread (in
// kTouch mode with produce() before and consume() after each copy).
CellResult run_memcpy(const EndConfig& c, const Plan& plan);

}  // namespace fbuf::bench::peers

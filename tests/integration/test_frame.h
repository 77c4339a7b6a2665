/* The frames that the integration-test peers exchange.
 *
 * A frame is a 32-byte header (magic, sequence number, payload size, payload
 * checksum) followed by a payload that is a pure function of the sequence
 * number. The C peer, the C++ peer and the tests all include this header, so
 * any producer can feed any consumer and every consumer can tell a lost,
 * duplicated, reordered or corrupted frame from a good one.
 *
 * Written in the common subset of C11 and C++20 and without casts, so that
 * it compiles cleanly under both the C and the C++ warning sets.
 */
#ifndef FBUF_TESTS_INTEGRATION_TEST_FRAME_H_
#define FBUF_TESTS_INTEGRATION_TEST_FRAME_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* "fbufTFR" in ASCII. */
#define TF_MAGIC UINT64_C(0x0052464654667562)
#define TF_HEADER_SIZE 32u
#define TF_FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define TF_FNV_PRIME UINT64_C(0x00000100000001b3)

typedef struct tf_header {
  uint64_t magic;
  uint64_t sequence;
  uint64_t payload_size;
  uint64_t checksum; /* tf_checksum(TF_FNV_OFFSET, payload) */
} tf_header;

enum {
  TF_OK = 0,
  TF_SHORT = 1,         /* shorter than a header */
  TF_BAD_MAGIC = 2,     /* not a frame at all */
  TF_BAD_SEQUENCE = 3,  /* lost, duplicated or reordered */
  TF_BAD_SIZE = 4,      /* header and received length disagree */
  TF_BAD_CHECKSUM = 5   /* payload corrupted */
};

static inline const char* tf_status_text(int status) {
  switch (status) {
    case TF_OK: return "ok";
    case TF_SHORT: return "shorter than a frame header";
    case TF_BAD_MAGIC: return "bad magic";
    case TF_BAD_SEQUENCE: return "unexpected sequence number";
    case TF_BAD_SIZE: return "payload size disagrees with the received length";
    case TF_BAD_CHECKSUM: return "payload checksum mismatch";
    default: return "unknown status";
  }
}

/* The splitmix64 finaliser: a bijective 64-bit mix. */
static inline uint64_t tf_mix(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* FNV-1a 64 over the bytes taken as native 64-bit words, then over the tail
 * bytes one at a time. Continues from `h`, so it can be chained. */
static inline uint64_t tf_checksum(uint64_t h, const unsigned char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * TF_FNV_PRIME;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * TF_FNV_PRIME;
  return h;
}

/* Folds one frame's checksum into a checksum of the whole stream. */
static inline uint64_t tf_stream_add(uint64_t stream, uint64_t frame_checksum) {
  return (stream ^ frame_checksum) * TF_FNV_PRIME;
}

/* Payload sizes for a mixed stream of frames: mostly small (a frame fits a
 * 4 KiB buffer), one in a hundred medium (64 KiB class), two in ten
 * thousand large (1 MiB class). Frames never exceed `max_frame` bytes. */
static inline size_t tf_mixed_payload_size(uint64_t sequence, size_t max_frame) {
  const uint64_t r = tf_mix(sequence ^ UINT64_C(0x5bd1e9955bd1e995));
  const uint64_t pick = r % 10000u;
  const uint64_t wide = r >> 24;
  uint64_t payload;
  if (pick < 2) {
    payload = 65536 - TF_HEADER_SIZE + 1 + wide % (1048576 - 65536);
  } else if (pick < 102) {
    payload = 4096 - TF_HEADER_SIZE + 1 + wide % (65536 - 4096);
  } else if (((r >> 16) & 3u) != 0) {
    payload = wide % 513u;
  } else {
    payload = wide % (4096 - TF_HEADER_SIZE + 1);
  }
  if (max_frame <= TF_HEADER_SIZE) return 0;
  if (payload > max_frame - TF_HEADER_SIZE) payload %= max_frame - TF_HEADER_SIZE + 1;
  return payload;
}

/* Writes frame `sequence` with `payload_size` payload bytes at `p` (which
 * must hold TF_HEADER_SIZE + payload_size bytes). Returns the frame's
 * payload checksum; the frame's length is TF_HEADER_SIZE + payload_size. */
static inline uint64_t tf_write(unsigned char* p, uint64_t sequence, size_t payload_size) {
  unsigned char* payload = p + TF_HEADER_SIZE;
  const uint64_t seed = tf_mix(sequence);
  uint64_t word_index = 0;
  size_t i = 0;
  tf_header h;
  for (; i + 8 <= payload_size; i += 8, ++word_index) {
    const uint64_t w = (seed + word_index) * UINT64_C(0xff51afd7ed558ccd);
    memcpy(payload + i, &w, 8);
  }
  if (i < payload_size) {
    const uint64_t w = (seed + word_index) * UINT64_C(0xff51afd7ed558ccd);
    memcpy(payload + i, &w, payload_size - i);
  }
  h.magic = TF_MAGIC;
  h.sequence = sequence;
  h.payload_size = payload_size;
  h.checksum = tf_checksum(TF_FNV_OFFSET, payload, payload_size);
  memcpy(p, &h, sizeof h);
  return h.checksum;
}

/* Checks one received frame of `n` bytes against the sequence number the
 * consumer expects next. Fills `*out` with the header as far as it could be
 * read. Returns TF_OK or the first problem found. */
static inline int tf_check(const unsigned char* p, size_t n, uint64_t expected_sequence,
                           tf_header* out) {
  memset(out, 0, sizeof *out);
  if (n < TF_HEADER_SIZE) return TF_SHORT;
  memcpy(out, p, sizeof *out);
  if (out->magic != TF_MAGIC) return TF_BAD_MAGIC;
  if (out->sequence != expected_sequence) return TF_BAD_SEQUENCE;
  if (out->payload_size != n - TF_HEADER_SIZE) return TF_BAD_SIZE;
  if (tf_checksum(TF_FNV_OFFSET, p + TF_HEADER_SIZE, n - TF_HEADER_SIZE) != out->checksum) {
    return TF_BAD_CHECKSUM;
  }
  return TF_OK;
}

#endif /* FBUF_TESTS_INTEGRATION_TEST_FRAME_H_ */

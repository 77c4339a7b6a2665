/* The fbuf C API: the calls of the fbufs design over the C++ core.
 *
 *   uf_allocate(pool)        take a free buffer from the caller's own pool
 *   uf_write(ch, buf, len)   send it; the sender's write access ends here
 *   uf_allocb(ch)            allocate from the pool the channel sends from
 *   uf_get(ch)               receive the next buffer as a read-only view
 *   uf_deallocate(buf)       done with it: it goes back to its owner
 *
 * Timeouts are in nanoseconds: 0 fails fast (UF_EAGAIN), a negative value
 * waits forever. No call here throws; every failure is a uf_error.
 *
 * Handles after their end. uf_pool_destroy, uf_channel_close,
 * uf_deallocate and uf_msg_free end a handle, and so does a uf_write,
 * uf_writev, uf_msg_append or uf_msg_prepend that returns UF_OK (it
 * consumes its buffers). The last 4096 ended handles of
 * each kind are kept, poisoned, so that using one again is caught, every
 * time, from any thread:
 *  - a call that returns uf_error returns UF_EINVAL (for instance a second
 *    uf_write of a consumed buffer, uf_get on a closed channel);
 *  - a call that returns nothing or a pointer or size (uf_pool_destroy,
 *    uf_pool_counts, uf_channel_close, uf_deallocate, uf_data, uf_cdata,
 *    uf_size) prints a message naming the call and the handle to stderr
 *    and aborts, e.g. "fbuf: uf_deallocate: buffer handle 0x5581c0 was
 *    already deallocated".
 * A handle of the wrong kind is treated the same way. A handle ended longer
 * ago has gone back to malloc: using it is undefined, as with free().
 * Destroying, closing or deallocating NULL does nothing.
 */
#ifndef FBUF_UF_H_
#define FBUF_UF_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum uf_error {
  UF_OK = 0,
  UF_EAGAIN = 1,       /* nothing free / ring full / nothing to receive */
  UF_ETIMEDOUT = 2,
  UF_EPEERGONE = 3,    /* the peer closed or died; stream ended */
  UF_ENORECEIVERS = 4,
  UF_EINVAL = 5,
  UF_EBADDESC = 6,     /* a descriptor from the peer failed validation */
  UF_EVERSION = 7,
  UF_EPROTO = 8,
  UF_ECLOSED = 9,
  UF_ETOOLARGE = 10,
  UF_ESYSTEM = 11,     /* an OS call failed; errno holds the reason */
  UF_ENOMEM = 12,
  UF_ECORRUPT = 13,    /* the peer corrupted the channel; reported once, then UF_EPEERGONE */
  UF_ECUTOFF = 14,     /* the sender cut this receiver off (slow-consumer policy) */
  UF_EMSG = 15,        /* uf_get: the next item is a message of several slices (uf_msg_receive) */
  UF_ENOTSUP = 16      /* not supported yet: a received buffer in a message sent on (forwarding) */
} uf_error;

typedef enum uf_policy {
  UF_POLICY_VOLATILE = 0,
  UF_POLICY_READ_ONLY = 1,
  UF_POLICY_COPY_ON_WRITE = 2
} uf_policy;

typedef struct uf_size_class {
  size_t buffer_size;
  uint32_t count;
} uf_size_class;

typedef struct uf_pool uf_pool;       /* an owned pool */
typedef struct uf_channel uf_channel; /* a sending or a receiving end */
typedef struct uf_buf uf_buf;         /* an owned buffer or a received view */

const char* uf_strerror(uf_error e);

uf_error uf_pool_create(const char* name, const uf_size_class* classes, size_t nclasses,
                        uf_policy policy, uf_pool** out);

/* Which size classes of a read_only or copy_on_write pool send a small
 * buffer as a sealed copy instead of protecting it (docs/api.md, "Sealed
 * copies"): AUTO measures at creation which are cheaper copied; NEVER
 * protects every buffer (a late write under read_only then always faults);
 * UP_TO seals classes up to `sealed_copy_limit` bytes. */
typedef enum uf_sealed_copies {
  UF_SEALED_AUTO = 0,
  UF_SEALED_NEVER = 1,
  UF_SEALED_UP_TO = 2
} uf_sealed_copies;

/* What uf_pool_create_with takes beyond the classes. Starts with its size,
 * as the stats structs do: write
 * `struct uf_pool_options o = {.size = sizeof o, .policy = ...};`; a size
 * smaller than this first version returns UF_EINVAL. Zeroed fields are the
 * defaults (volatile, lazy restore, AUTO). */
struct uf_pool_options {
  size_t size;
  uf_policy policy;
  int eager_restore;                 /* nonzero: restore write access when the last receiver returns */
  uf_sealed_copies sealed_copies;
  size_t sealed_copy_limit;          /* UF_SEALED_UP_TO only */
};
uf_error uf_pool_create_with(const char* name, const uf_size_class* classes, size_t nclasses,
                             const struct uf_pool_options* options, uf_pool** out);
void uf_pool_destroy(uf_pool* pool);
/* Buffers free to allocate and buffers in all. Either pointer may be NULL. */
void uf_pool_counts(const uf_pool* pool, uint32_t* free_count, uint32_t* total);

/* Counters, as the C++ API reports them. Each struct starts with its size:
 * the caller sets `size` to sizeof the struct it was compiled with (older,
 * shorter versions keep working; fields fbuf does not know read 0). A size
 * smaller than this first version, a NULL pointer or a channel of the
 * wrong end returns UF_EINVAL. Like POSIX stat, each struct shares its name
 * with its function: write `struct uf_pool_stats s = {.size = sizeof s};`. */
struct uf_pool_stats {
  size_t size;
  uint32_t total;              /* buffers in the pool */
  uint32_t free;               /* ready to allocate */
  uint32_t allocated;          /* held by the owner, not yet sent */
  uint32_t in_flight;          /* sent, awaiting return from some receiver */
  uint64_t rejected_returns;   /* forged, duplicate or foreign returns */
  /* Sealed copies of small protected sends (docs/api.md), not counted
   * above; the second version of the struct. */
  uint64_t sealed_copies;      /* sends made by copying into a sealed slot */
  uint64_t sealed_fallbacks;   /* sends of such a class that protected instead */
  uint32_t sealed_total;       /* sealed slots in the pool */
  uint32_t sealed_free;        /* ready for a send's copy */
  uint32_t sealed_in_flight;   /* copies sent, awaiting return */
};
struct uf_sender_stats {
  size_t size;
  uint64_t sent;               /* buffers published (once per write) */
  uint64_t delivered;          /* descriptors pushed (once per receiver) */
  uint64_t returned;           /* valid returns */
  uint64_t rejected_returns;
  uint64_t rejected_handshakes;
  uint64_t receivers_connected;
  uint64_t receivers_lost;     /* hung up or died; their buffers reclaimed */
  uint64_t dropped;            /* buffers skipped for slow receivers */
  uint64_t receivers_cut_off;  /* receivers cut off by the slow-consumer policy */
};
struct uf_receiver_stats {
  size_t size;
  uint64_t received;
  uint64_t returned;
  uint64_t rejected_descriptors; /* failed validation; skipped */
  uint64_t dropped;              /* buffers the sender skipped for this receiver */
  uint64_t rejected_messages;    /* malformed messages rejected whole (uf_msg_receive) */
};
#if defined(__cplusplus) && defined(__GNUC__)
/* Legal C++ (as `struct stat` and stat()); only -Wshadow objects. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#endif
uf_error uf_pool_stats(const uf_pool* pool, struct uf_pool_stats* out);
/* `sender` is a sending end (uf_channel_listen). */
uf_error uf_sender_stats(const uf_channel* sender, struct uf_sender_stats* out);
/* `receiver` is a receiving end (uf_channel_connect, uf_channel_connect_local). */
uf_error uf_receiver_stats(const uf_channel* receiver, struct uf_receiver_stats* out);
#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* A sending end that listens under `service` for receivers in other
 * processes; `service` NULL makes an in-process-only channel, and an
 * empty `service` is UF_EINVAL. */
uf_error uf_channel_listen(uf_pool* pool, const char* service, uf_channel** out);
/* What a sending end does about a receiver that falls behind (docs/api.md,
 * "Slow receivers"), from the least to the most lenient to the others. */
typedef enum uf_slow_receiver {
  UF_SLOW_BLOCK = 0,      /* the write waits for ring space up to its timeout */
  UF_SLOW_FAIL_FAST = 1,  /* a full ring fails the write at once (UF_EAGAIN) */
  UF_SLOW_SKIP = 2,       /* over budget or full: that receiver misses the buffer (counted) */
  UF_SLOW_CUT_OFF = 3     /* over budget or full: that receiver is cut off (UF_ECUTOFF) */
} uf_slow_receiver;

/* Options of a sending end; `size` = sizeof, set by the caller. A zero
 * field keeps the default (ring 256, 64 receivers, no budget, no hold
 * timeout). */
typedef struct uf_sender_options {
  size_t size;
  uint32_t ring_capacity;          /* descriptors per receiver, a power of two */
  uint32_t max_receivers;
  uf_slow_receiver slow_receiver;
  uint32_t receiver_budget;        /* SKIP / CUT_OFF: buffers held or queued per receiver */
  int64_t hold_timeout_ns;         /* a receiver holding one buffer longer is cut off */
} uf_sender_options;
/* uf_channel_listen with options; `options` NULL is uf_channel_listen. */
uf_error uf_channel_listen_with(uf_pool* pool, const char* service, const uf_sender_options* options,
                                uf_channel** out);
/* A receiving end connected to `service`. */
uf_error uf_channel_connect(const char* service, int64_t timeout_ns, uf_channel** out);
/* A receiving end in this process for a sending end (thread handoff). */
uf_error uf_channel_connect_local(uf_channel* sender, uf_channel** out);
uf_error uf_channel_wait_receivers(uf_channel* sender, size_t n, int64_t timeout_ns);
void uf_channel_close(uf_channel* ch);

uf_error uf_allocate(uf_pool* pool, size_t size, int64_t timeout_ns, uf_buf** out);
uf_error uf_allocb(uf_channel* sender, size_t size, int64_t timeout_ns, uf_buf** out);
/* On UF_OK `buf` is consumed (the handle has ended: a second uf_write of
 * it returns UF_EINVAL, a uf_deallocate of it aborts); on any error the
 * caller still owns it. */
uf_error uf_write(uf_channel* sender, uf_buf* buf, size_t len, int64_t timeout_ns);
/* A batch, all or nothing: on UF_OK every buffer is consumed; on any error
 * the caller still owns all of them. At most 64 buffers, and no more than
 * the channel's ring holds. Contiguous buffers are protected with one call. */
uf_error uf_writev(uf_channel* sender, uf_buf* const* bufs, const size_t* lens, size_t n, int64_t timeout_ns);
/* The path: forwards a received view (from uf_get on a receiving end) to
 * every receiver of `sender` without a copy; they read the upstream pool
 * through their own read-only mapping of it. The view stays the caller's
 * (uf_deallocate it as usual); each receiver's hold is counted at the
 * pool's owner. UF_EINVAL for an owned buffer (send it with uf_write) or a
 * view of another pool of this process (a view of `sender`'s own pool is
 * sent on, each receiver one more holder); as uf_write otherwise. */
uf_error uf_forward(uf_channel* sender, const uf_buf* view, int64_t timeout_ns);
uf_error uf_get(uf_channel* receiver, int64_t timeout_ns, uf_buf** out);
/* Event loops (poll, epoll, ...). uf_channel_fd is a channel end's
 * readiness fd, -1 for a handle that is not a live channel. Before each
 * wait, call uf_channel_arm: 1 means armed, wait for the fd to poll
 * readable (POLLIN); 0 means do not wait, try again now (or the handle is
 * not a live channel: the call then says UF_EINVAL).
 *  - A receiving end, after uf_get(..., 0, ...) said UF_EAGAIN: readable
 *    once a buffer or the end of the stream is waiting.
 *  - A sending end, after uf_write(..., 0) said UF_EAGAIN (a receiver's
 *    ring is full): readable once a receiver made room. After
 *    uf_allocb(..., 0, ...) said UF_EAGAIN, arm with
 *    uf_channel_arm_alloc(sender, size) instead: readable once a buffer of
 *    `size` came back too.
 * The peer signals the fd once per arming and never while both keep up; a
 * wake-up may be spurious (try again, arm again). The fd is closed by
 * uf_channel_close; do not read it. */
int uf_channel_fd(const uf_channel* ch);
int uf_channel_arm(uf_channel* ch);
int uf_channel_arm_alloc(uf_channel* sender, size_t size);
/* Returns an unsent buffer to its pool, or a received one to its owner.
 * Aborts with a message for a buffer already deallocated or consumed. */
void uf_deallocate(uf_buf* buf);

/* Writable bytes of an owned buffer; NULL for a received view. */
void* uf_data(uf_buf* buf);
/* Readable bytes of either kind. */
const void* uf_cdata(const uf_buf* buf);
/* Capacity of an owned buffer, valid length of a received view. */
size_t uf_size(const uf_buf* buf);

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "fbuf/uf_msg.h" /* aggregates: uf_msg_* */

#endif /* FBUF_UF_H_ */

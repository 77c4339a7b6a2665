/* The fbuf C API for aggregates (fbuf::Message): a message made of several
 * slices, each a range of an owned buffer or a received view, sent and
 * received as one unit. Included by fbuf/uf.h; see docs/api.md.
 *
 *   uf_msg_create                 an empty message
 *   uf_msg_append / _prepend      add a range of a uf_buf (the handle is consumed)
 *   uf_msg_join / _split / _clip  rearrange without copying
 *   uf_msg_slice / _iovecs        read in place (writev, sendmsg, vmsplice)
 *   uf_msg_copy_to                the explicit copy, for contiguity
 *   uf_msg_send / _receive        all slices or none
 *   uf_msg_free                   drops every slice
 *
 * A message handle is ended by uf_msg_free only; using it afterwards is
 * caught as for the other handles (UF_EINVAL, or a message and abort for
 * the calls that return no uf_error). Not thread-safe: one thread uses a
 * message at a time. */
#ifndef FBUF_UF_MSG_H_
#define FBUF_UF_MSG_H_

#include <stddef.h>
#include <stdint.h>

#include "fbuf/uf.h"

#ifdef __cplusplus
extern "C" {
#endif

struct iovec;
typedef struct uf_msg uf_msg;

/* At most this many slices and bytes per message (protocol limits). */
#define UF_MSG_MAX_SLICES 64u
#define UF_MSG_MAX_BYTES UINT64_C(0xFFFFFFFF)

uf_error uf_msg_create(uf_msg** out);
/* Drops every slice (owned buffers go back to their pool unsent, views to
 * their owner) and ends the handle. NULL does nothing. */
void uf_msg_free(uf_msg* msg);

/* Adds bytes [offset, offset + len) of `buf`, an owned buffer (up to its
 * capacity) or a received view (up to its size), at the end or the front.
 * On UF_OK `buf` is consumed (the handle has ended, as after uf_write); on
 * error the caller still owns it: UF_EINVAL (a range outside it, or past
 * UF_MSG_MAX_SLICES / UF_MSG_MAX_BYTES), UF_ENOMEM. */
uf_error uf_msg_append(uf_msg* msg, uf_buf* buf, size_t offset, size_t len);
uf_error uf_msg_prepend(uf_msg* msg, uf_buf* buf, size_t offset, size_t len);
/* Moves every slice of `other` to the end of `msg`; `other` stays a live,
 * empty message. On error both are unchanged. */
uf_error uf_msg_join(uf_msg* msg, uf_msg* other);
/* `msg` keeps bytes [0, at); `*out` is a new message of the rest. A slice
 * cut in two is shared by both (its buffer goes back when both are done). */
uf_error uf_msg_split(uf_msg* msg, size_t at, uf_msg** out);
/* Keeps bytes [offset, offset + len) only. */
uf_error uf_msg_clip(uf_msg* msg, size_t offset, size_t len);

size_t uf_msg_size(const uf_msg* msg);
size_t uf_msg_slice_count(const uf_msg* msg);
/* Slice `i`'s bytes, read in place, and its length in `*len`; NULL (and
 * *len 0) if i >= uf_msg_slice_count(msg). */
const void* uf_msg_slice(const uf_msg* msg, size_t i, size_t* len);
/* Fills iov[0 .. slice count) and returns the slice count; 0 (nothing
 * written) if `max` is smaller. The iovecs are valid while `msg` holds its
 * slices. */
size_t uf_msg_iovecs(const uf_msg* msg, struct iovec* iov, size_t max);
/* Copies bytes [offset, offset + len) (fewer at the end) into `dst`;
 * returns how many. */
size_t uf_msg_copy_to(const uf_msg* msg, size_t offset, void* dst, size_t len);

/* Sends `msg` as one unit. On UF_OK `msg` is empty and still the caller's
 * (free or reuse it); on error it is untouched: UF_EAGAIN / UF_ETIMEDOUT
 * (a ring full or a budget exhausted), UF_EINVAL (empty, more slices than
 * the ring holds, a buffer of another pool or in two slices, two ranges of
 * one received view, a receiver in this process for a message with a
 * received view), UF_ENOTSUP (a view of this process's own pool), as
 * uf_write. A received view in `msg` is forwarded (uf_forward): receivers
 * read it in their mapping of its owner's pool. */
uf_error uf_msg_send(uf_channel* sender, uf_msg* msg, int64_t timeout_ns);
/* The next item as a message of views (a single buffer comes as one
 * slice). UF_EBADDESC: a malformed message was rejected whole (counted);
 * the next call continues. uf_get returns UF_EMSG when the next item is a
 * message of several slices and leaves it for this call. */
uf_error uf_msg_receive(uf_channel* receiver, int64_t timeout_ns, uf_msg** out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FBUF_UF_MSG_H_ */

/* The C API of kernel I/O (fbuf/io.h): the I/O stage that fills a
 * channel's pool buffers from a file or a socket, and the writer that sends
 * buffers and received views to a socket without a CPU copy, or writes
 * them to a file with O_DIRECT. docs/api.md, "Kernel I/O". */
#ifndef FBUF_UF_IO_H
#define FBUF_UF_IO_H

#include <stddef.h>
#include <stdint.h>

#include "fbuf/uf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uf_io_reader uf_io_reader;
typedef struct uf_io_writer uf_io_writer;

/* How a reader moves bytes in, best first (fbuf::ReadPath). */
typedef enum uf_read_path {
  UF_READ_URING_FIXED = 0, /* io_uring READ_FIXED into the registered pool */
  UF_READ_URING = 1,       /* io_uring into unregistered pool buffers */
  UF_READ_PLAIN = 2        /* pread / recv into pool buffers */
} uf_read_path;

/* How a writer sends, best first (fbuf::WritePath). */
typedef enum uf_write_path {
  UF_WRITE_URING_SEND_ZC = 0,
  UF_WRITE_MSG_ZEROCOPY = 1,
  UF_WRITE_COPY = 2,
  UF_WRITE_DIRECT_FILE = 3,
  UF_WRITE_FILE = 4
} uf_write_path;

/* Reader options. Zero-initialise, set .size = sizeof, change what you
 * need; a zero field takes its default. */
typedef struct uf_io_reader_options {
  size_t size;
  size_t chunk;          /* bytes per buffer; 0: the pool's largest class */
  uint32_t queue_depth;  /* reads in flight; 0: 8 */
  uint32_t flags;        /* UF_IO_* below */
} uf_io_reader_options;

#define UF_IO_NO_DIRECT 1u   /* read through the page cache */
#define UF_IO_NO_URING 2u    /* plain pread / recv (and plain send for writers) */
#define UF_IO_NO_FIXED 4u    /* io_uring without registering the pool */
#define UF_IO_QUIET 8u       /* no line on stderr per fallback (still queryable) */

/* A reader publishing on `sender` (a sending end, which must outlive it)
 * from the file at `path`, or from `fd` (a file or a connected stream
 * socket; owned by the reader from this call on, even when it fails).
 * `options` may be NULL. */
uf_error uf_io_reader_open(uf_channel* sender, const char* path, const uf_io_reader_options* options,
                           uf_io_reader** out);
uf_error uf_io_reader_adopt(uf_channel* sender, int fd, const uf_io_reader_options* options,
                            uf_io_reader** out);
/* Reads to the end, publishing every filled buffer; `*bytes` (may be NULL)
 * gets what this call published. */
uf_error uf_io_reader_run(uf_io_reader* reader, uint64_t* bytes);
uf_read_path uf_io_reader_path(const uf_io_reader* reader);
int uf_io_reader_direct(const uf_io_reader* reader);
/* Why the path is not the best one; "" when it is. Valid while the reader lives. */
const char* uf_io_reader_fallback(const uf_io_reader* reader);
void uf_io_reader_destroy(uf_io_reader* reader);

/* A writer to a connected TCP socket (owned from this call on), or to a
 * new file at `path`. `flags`: UF_IO_NO_URING, UF_IO_QUIET. */
uf_error uf_io_writer_socket(int fd, uint32_t flags, uf_io_writer** out);
uf_error uf_io_writer_file(const char* path, uint32_t flags, uf_io_writer** out);
/* Sends the first `len` bytes of a buffer, or a whole received view (`len`
 * ignored). On UF_OK the handle is consumed: the writer holds it until the
 * kernel is done with its pages. Otherwise it stays the caller's, errno
 * set for UF_ESYSTEM. */
uf_error uf_io_send(uf_io_writer* writer, uf_buf* buf, size_t len);
/* Sends an aggregate, its slices in order, each in place. On UF_OK `msg` is
 * empty and still the caller's (free or reuse it): the writer holds its
 * slices until the kernel is done with them. On error with nothing sent
 * it is untouched. */
uf_error uf_io_send_msg(uf_io_writer* writer, uf_msg* msg);
/* Held buffers go back to their pool only inside the writer's calls: a
 * producer allocating from that pool calls uf_io_wait when allocation says
 * UF_EAGAIN. uf_io_poll collects notifications without waiting;
 * uf_io_wait waits until one held handle is released (at once if none
 * is held). Both return how many are still held. */
uint32_t uf_io_poll(uf_io_writer* writer);
uint32_t uf_io_wait(uf_io_writer* writer);
/* Waits until the kernel is done with every buffer sent. */
uf_error uf_io_flush(uf_io_writer* writer);
uf_write_path uf_io_writer_path(const uf_io_writer* writer);
const char* uf_io_writer_fallback(const uf_io_writer* writer);
/* Counters (fbuf::IoWriterStats); any pointer may be NULL. */
void uf_io_writer_counts(const uf_io_writer* writer, uint64_t* bytes, uint64_t* zc_sent, uint64_t* zc_copied,
                         uint32_t* held);
/* Flushes, then frees the writer and closes its fd. */
void uf_io_writer_destroy(uf_io_writer* writer);

#ifdef __cplusplus
}
#endif

#endif /* FBUF_UF_IO_H */

// The C API of kernel I/O: wrappers over fbuf::IoReader and fbuf::IoWriter
// that never let an exception cross the C boundary.
#include "fbuf/uf_io.h"

#include <unistd.h>

#include <new>
#include <optional>

#include "capi/errors.h"
#include "capi/handles.h"
#include "fbuf/io.h"

using namespace fbuf::capi;

struct uf_io_reader {
  explicit uf_io_reader(fbuf::IoReader r) : reader(std::move(r)) {}
  fbuf::IoReader reader;
};

struct uf_io_writer {
  explicit uf_io_writer(fbuf::IoWriter w) : writer(std::move(w)) {}
  fbuf::IoWriter writer;
};

namespace {

fbuf::IoReaderOptions reader_options(const uf_io_reader_options* o) noexcept {
  fbuf::IoReaderOptions r;
  if (o == nullptr) return r;
  r.chunk = o->chunk;
  if (o->queue_depth != 0) r.queue_depth = o->queue_depth;
  r.direct = (o->flags & UF_IO_NO_DIRECT) == 0;
  r.use_io_uring = (o->flags & UF_IO_NO_URING) == 0;
  r.register_buffers = (o->flags & UF_IO_NO_FIXED) == 0;
  r.log_fallbacks = (o->flags & UF_IO_QUIET) == 0;
  return r;
}

fbuf::IoWriterOptions writer_options(uint32_t flags) noexcept {
  fbuf::IoWriterOptions w;
  w.use_io_uring = (flags & UF_IO_NO_URING) == 0;
  w.log_fallbacks = (flags & UF_IO_QUIET) == 0;
  return w;
}

bool options_ok(const uf_io_reader_options* o) noexcept {
  // The first version of the struct is all there is.
  return o == nullptr || o->size >= sizeof(uf_io_reader_options);
}

}  // namespace

extern "C" {

uf_error uf_io_reader_open(uf_channel* sender, const char* path, const uf_io_reader_options* options,
                           uf_io_reader** out) {
  if (live(sender) == nullptr || !sender->sender || path == nullptr || out == nullptr || !options_ok(options))
    return UF_EINVAL;
  return guarded([&] {
    *out = new uf_io_reader(fbuf::IoReader::open_file(*sender->sender, path, reader_options(options)));
    return UF_OK;
  });
}

uf_error uf_io_reader_adopt(uf_channel* sender, int fd, const uf_io_reader_options* options, uf_io_reader** out) {
  if (live(sender) == nullptr || !sender->sender || fd < 0 || out == nullptr || !options_ok(options)) {
    if (fd >= 0) ::close(fd);
    return UF_EINVAL;
  }
  return guarded([&] {
    *out = new uf_io_reader(fbuf::IoReader::adopt_fd(*sender->sender, fd, reader_options(options)));
    return UF_OK;
  });
}

uf_error uf_io_reader_run(uf_io_reader* reader, uint64_t* bytes) {
  if (reader == nullptr) return UF_EINVAL;
  auto r = reader->reader.run();
  if (!r) return to_uf(r.error());
  if (bytes != nullptr) *bytes = *r;
  return UF_OK;
}

uf_read_path uf_io_reader_path(const uf_io_reader* reader) {
  return reader == nullptr ? UF_READ_PLAIN : static_cast<uf_read_path>(reader->reader.path());
}

int uf_io_reader_direct(const uf_io_reader* reader) { return reader != nullptr && reader->reader.direct() ? 1 : 0; }

const char* uf_io_reader_fallback(const uf_io_reader* reader) {
  return reader == nullptr ? "" : reader->reader.fallback_reason().c_str();
}

void uf_io_reader_destroy(uf_io_reader* reader) { delete reader; }

uf_error uf_io_writer_socket(int fd, uint32_t flags, uf_io_writer** out) {
  if (fd < 0 || out == nullptr) {
    if (fd >= 0) ::close(fd);
    return UF_EINVAL;
  }
  return guarded([&] {
    *out = new uf_io_writer(fbuf::IoWriter::adopt_socket(fd, writer_options(flags)));
    return UF_OK;
  });
}

uf_error uf_io_writer_file(const char* path, uint32_t flags, uf_io_writer** out) {
  if (path == nullptr || out == nullptr) return UF_EINVAL;
  return guarded([&] {
    *out = new uf_io_writer(fbuf::IoWriter::create_file(path, writer_options(flags)));
    return UF_OK;
  });
}

uf_error uf_io_send(uf_io_writer* writer, uf_buf* buf, size_t len) {
  if (writer == nullptr || live(buf) == nullptr) return UF_EINVAL;
  std::error_code ec;
  if (auto* b = std::get_if<fbuf::Buffer>(&buf->v)) {
    if (!*b) return UF_EINVAL;
    ec = writer->writer.send(std::move(*b), len);
  } else {
    auto& v = std::get<fbuf::View>(buf->v);
    if (!v) return UF_EINVAL;
    ec = writer->writer.send(std::move(v));
  }
  if (ec) {
    // A failure after part was sent consumed the handle (the writer holds
    // it for the kernel): the handle ends either way then.
    const bool kept = std::visit([](const auto& h) { return static_cast<bool>(h); }, buf->v);
    if (kept) return to_uf(ec);
    const uf_error e = to_uf(ec);
    end_handle("uf_io_send", buf, kBufIoSent);
    return e;
  }
  end_handle("uf_io_send", buf, kBufIoSent);
  return UF_OK;
}

uf_error uf_io_send_msg(uf_io_writer* writer, uf_msg* msg) {
  if (writer == nullptr || live(msg) == nullptr) return UF_EINVAL;
  // On success the C++ call leaves the Message moved from: empty, reusable.
  return to_uf(writer->writer.send(std::move(msg->m)));
}

uint32_t uf_io_poll(uf_io_writer* writer) { return writer == nullptr ? 0 : writer->writer.poll(); }

uint32_t uf_io_wait(uf_io_writer* writer) { return writer == nullptr ? 0 : writer->writer.wait(); }

uf_error uf_io_flush(uf_io_writer* writer) {
  if (writer == nullptr) return UF_EINVAL;
  return to_uf(writer->writer.flush());
}

uf_write_path uf_io_writer_path(const uf_io_writer* writer) {
  return writer == nullptr ? UF_WRITE_COPY : static_cast<uf_write_path>(writer->writer.path());
}

const char* uf_io_writer_fallback(const uf_io_writer* writer) {
  return writer == nullptr ? "" : writer->writer.fallback_reason().c_str();
}

void uf_io_writer_counts(const uf_io_writer* writer, uint64_t* bytes, uint64_t* zc_sent, uint64_t* zc_copied,
                         uint32_t* held) {
  fbuf::IoWriterStats s{};
  if (writer != nullptr) s = writer->writer.stats();
  if (bytes != nullptr) *bytes = s.bytes;
  if (zc_sent != nullptr) *zc_sent = s.zc_sent;
  if (zc_copied != nullptr) *zc_copied = s.zc_copied;
  if (held != nullptr) *held = s.held;
}

void uf_io_writer_destroy(uf_io_writer* writer) { delete writer; }

}  // extern "C"

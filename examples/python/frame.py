"""The synthetic video frames of examples/frame.h, in Python.

A frame is a 48-byte header followed by a YUYV 4:2:2 image (two bytes per
pixel): a scrolling diagonal gradient with a 64x64 box that bounces around.
The header carries the sequence number, the geometry, the capture time
(CLOCK_MONOTONIC, ns) and a checksum of the image, so a consumer can tell a
lost, repeated or damaged frame. Frames made here and frames made by the
C++ fbuf_producer are byte for byte the same (but for the capture time), so
Python and C++ peers check each other's.
"""

import struct
import time

import numpy as np

MAGIC = 0x31565559  # "YUV1"
# magic, width, height, reserved, sequence, image_size, capture_ns, checksum
HEADER = struct.Struct("=IIIIQQqQ")
assert HEADER.size == 48

CHECKSUM_SEED = 0xCBF29CE484222325  # FNV-1a 64 offset basis
_PRIME = 0x00000100000001B3
_MASK = (1 << 64) - 1


def frame_size(width, height):
    return HEADER.size + width * height * 2


def checksum(h, data):
    """FNV-1a 64 over `data` (any buffer) taken as native 64-bit words, then
    the tail bytes one at a time; chains from `h` (frame.h's checksum())."""
    mv = memoryview(data).cast("B")
    n8 = len(mv) & ~7
    for w in mv[:n8].cast("Q"):
        h = ((h ^ w) * _PRIME) & _MASK
    for b in mv[n8:]:
        h = ((h ^ b) * _PRIME) & _MASK
    return h


def add_to_stream(stream, frame_checksum):
    """Folds one frame's checksum into the checksum of a whole stream."""
    return checksum(stream, struct.pack("=Q", frame_checksum))


def _bounce(t, span):
    if span == 0:
        return 0
    period = 2 * span
    p = t % period
    return p if p < span else period - p


def render_frame(out, sequence, width, height):
    """Renders frame `sequence` into `out` (a writable buffer of at least
    frame_size(width, height) bytes: an fbuf.Buffer renders in place, in the
    pool) and writes its header. Returns the image checksum."""
    image_size = width * height * 2
    dst = np.frombuffer(out, dtype=np.uint8, count=image_size, offset=HEADER.size)
    image = dst.reshape(height, width * 2)
    box = 64
    bx = _bounce(sequence * 2, width - box if width > box else 0)
    by = _bounce(sequence * 3, height - box if height > box else 0)
    shift = (sequence * 4) & 0xFFFFFFFF

    y = np.arange(height, dtype=np.int64)[:, None]
    x = np.arange(width, dtype=np.int64)[None, :]
    luma = (x + y + shift) & 0xFF
    pair = x & ~1  # both pixels of a YUYV pair follow the pair's first
    in_box = (y >= by) & (y < by + box) & (pair >= bx) & (pair < bx + box)
    image[:, 0::2] = np.where(in_box, 235, luma)
    u = (128 + (y >> 2)) & 0xFF
    v = (128 - (y >> 3)) & 0xFF
    image[:, 1::4] = u
    image[:, 3::4] = v
    del image

    image_checksum = checksum(CHECKSUM_SEED, dst)
    del dst
    header = HEADER.pack(MAGIC, width, height, 0, sequence, image_size,
                         time.monotonic_ns(), image_checksum)
    memoryview(out)[:HEADER.size] = header
    return image_checksum


def check_frame(data, expected_sequence):
    """Checks a received frame (any buffer, e.g. an fbuf.View). Returns
    (problem, header, image_checksum): problem is None when the frame is the
    one expected next and intact, else what is wrong."""
    mv = memoryview(data)
    try:
        if len(mv) < HEADER.size:
            return "shorter than a frame header", None, 0
        header = HEADER.unpack_from(mv)
        magic, width, height, _, sequence, image_size, _, expected = header
        if magic != MAGIC:
            return "not a frame (bad magic)", header, 0
        if sequence != expected_sequence:
            return "out of sequence (lost, repeated or reordered)", header, 0
        if image_size != width * height * 2 or image_size != len(mv) - HEADER.size:
            return "image size disagrees with the geometry or the received length", header, 0
        image_checksum = checksum(CHECKSUM_SEED, mv[HEADER.size:])
        if image_checksum != expected:
            return "image checksum mismatch (damaged)", header, image_checksum
        return None, header, image_checksum
    finally:
        mv.release()  # the export ends here, so the caller may release `data`


def summary(who, frames, nbytes, seconds, stream_checksum):
    """The line the C++ examples print; demo scripts compare its checksum."""
    gbps = nbytes / seconds / 1e9 if seconds > 0 else 0.0
    return (f"{who}: frames={frames} bytes={nbytes} seconds={seconds:.3f} "
            f"GB/s={gbps:.2f} checksum={stream_checksum:016x}")

#!/usr/bin/python3
"""A "detector" in Python: connects to a video producer's service (the C++
fbuf_producer or producer.py), reads each frame in place through a read-only
fbuf.View (numpy sees the pool's memory, nothing is copied), checks it,
measures its brightness and capture-to-read latency, and gives it back.

    consumer.py --service NAME [--connect-timeout SECONDS]

Runs until the producer closes the stream, then prints what it received and
a checksum that must match the producer's. Exits 1 on any lost, repeated or
damaged frame.
"""

import argparse
import sys
import time

import numpy as np

import fbuf
import frame


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    args = parser.parse_args()

    rx = fbuf.Receiver.connect(args.service, timeout=args.connect_timeout)
    print(f"consumer: connected to '{args.service}'", flush=True)
    frames = nbytes = 0
    stream = frame.CHECKSUM_SEED
    latency_us = 0.0
    brightest, brightest_frame = -1.0, 0
    start = None
    # Iteration ends when the producer has closed and everything it sent
    # has been received (fbuf.PeerGone).
    for view in rx:
        with view:  # the buffer goes back to the producer at the end
            if start is None:
                start = time.monotonic()
            problem, header, image_checksum = frame.check_frame(view, frames)
            if problem:
                sequence = header[4] if header else -1
                print(f"consumer: frame {frames}: {problem} (header says sequence {sequence})",
                      file=sys.stderr)
                return 1
            latency_us += (time.monotonic_ns() - header[6]) / 1e3
            # Every 16th pixel's luma, read straight from the pool.
            image = np.frombuffer(view, dtype=np.uint8, offset=frame.HEADER.size)
            luma = float(image[::32].mean())
            del image  # the export ends before the view is released
            if luma > brightest:
                brightest, brightest_frame = luma, header[4]
            stream = frame.add_to_stream(stream, image_checksum)
            nbytes += len(view)
            frames += 1
    if frames == 0:
        print("consumer: the stream ended before any frame arrived", file=sys.stderr)
        return 1
    seconds = time.monotonic() - start
    print(f"consumer: mean capture-to-read latency {latency_us / frames:.1f} us; "
          f"brightest frame {brightest_frame} (luma {brightest:.1f})")
    print(frame.summary("consumer", frames, nbytes, seconds, stream), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except fbuf.Error as e:
        print(f"consumer: {e}", file=sys.stderr)
        sys.exit(1)

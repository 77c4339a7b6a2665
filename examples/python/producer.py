#!/usr/bin/python3
"""A "camera" in Python: renders synthetic video frames straight into pool
buffers (numpy writes the pool's memory) and publishes them to every
consumer connected to its service: the C++ fbuf_consumer or consumer.py.

    producer.py --service NAME [--count N] [--receivers K]
                [--width W] [--height H]
                [--policy volatile|read-only|copy-on-write]

Waits for K consumers, sends N frames, closes the channel (the consumers
drain what was sent and see the end of the stream) and prints what it moved
and a checksum that every consumer's must match.
"""

import argparse
import sys
import time

import fbuf
import frame


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--policy", default="volatile",
                        choices=["volatile", "read-only", "copy-on-write"])
    args = parser.parse_args()
    width = args.width & ~1
    if width <= 0 or args.height <= 0 or args.receivers <= 0:
        parser.error("width, height and receivers must be positive")

    size = frame.frame_size(width, args.height)
    # Sixteen frames in flight, as the C++ producer.
    pool = fbuf.Pool("camera-frames", classes=[(size, 16)], policy=args.policy)
    with fbuf.Sender(pool, args.service) as tx:
        print(f"producer: {width}x{args.height} YUYV frames ({size} bytes), policy "
              f"{pool.policy}, waiting for {args.receivers} consumer(s) on '{args.service}'",
              flush=True)
        if not tx.wait_for_receivers(args.receivers, timeout=30):
            print(f"producer: only {tx.receiver_count} of {args.receivers} consumer(s) "
                  "connected in 30 s", file=sys.stderr)
            return 1
        stream = frame.CHECKSUM_SEED
        nbytes = 0
        start = time.monotonic()
        for seq in range(args.count):
            buf = tx.allocate(size, timeout=10)
            # The frame is rendered in place, in the buffer the consumers read.
            image_checksum = frame.render_frame(buf, seq, width, args.height)
            tx.send(buf, timeout=10)
            stream = frame.add_to_stream(stream, image_checksum)
            nbytes += size
        seconds = time.monotonic() - start
        stats = tx.stats()
        print(f"producer: delivered {stats.delivered} descriptors to {tx.receiver_count} "
              "consumer(s)")
        print(frame.summary("producer", args.count, nbytes, seconds, stream), flush=True)
    # Leaving the `with` block closed the sender: the consumers see the end
    # of the stream once they have read everything.
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except fbuf.Error as e:
        print(f"producer: {e}", file=sys.stderr)
        sys.exit(1)

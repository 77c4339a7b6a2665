"""fbuf: move buffers between threads and processes without copying them.

A producer fills buffers of its own pool and sends them; receivers, in
other processes or threads, read the same memory through read-only views.
Only a small descriptor travels.

    import fbuf, numpy as np

    pool = fbuf.Pool("frames", classes=[(1 << 20, 16)])
    with fbuf.Sender(pool, "camera/frames") as tx:      # listens on @fbuf/camera/frames
        tx.wait_for_receivers(1, timeout=5)
        buf = tx.allocate(640 * 480)
        np.frombuffer(buf, dtype=np.uint8)[:] = 7        # writes the pool itself
        tx.send(buf)                                      # buf is consumed

    rx = fbuf.Receiver.connect("camera/frames")           # another process
    for view in rx:                                       # until the sender closes
        with view:                                        # returns the buffer on exit
            frame = np.frombuffer(view, dtype=np.uint8)   # read-only, no copy
            ...
            del frame

Timeouts are seconds (float); None waits for ever. Errors are exceptions
named as fbuf's error codes, all subclasses of fbuf.Error (an OSError):
WouldBlock, TimedOut, PeerGone (the end of the stream), NoReceivers,
InvalidArgument, BadDescriptor, VersionMismatch, Protocol, Closed,
TooLarge, Corrupt, CutOff, MessageWaiting (receive() met a message of
several slices, which this binding does not receive yet), Unsupported.
docs/api.md ("Python") has the whole API.
"""

import collections as _collections

from ._fbuf import (  # noqa: F401  (re-exported)
    BadDescriptor,
    Buffer,
    Closed,
    Corrupt,
    CutOff,
    Error,
    InvalidArgument,
    MessageWaiting,
    NoReceivers,
    PeerGone,
    Pool,
    PoolStats,
    Protocol,
    Receiver,
    ReceiverStats,
    Sender,
    SenderStats,
    TimedOut,
    TooLarge,
    Unsupported,
    VersionMismatch,
    View,
    WouldBlock,
    __version__,
)

__all__ = [
    "Pool", "Sender", "Receiver", "Buffer", "View",
    "PoolStats", "SenderStats", "ReceiverStats",
    "Error", "WouldBlock", "TimedOut", "PeerGone", "NoReceivers", "InvalidArgument",
    "BadDescriptor", "VersionMismatch", "Protocol", "Closed", "TooLarge", "Corrupt", "CutOff",
    "MessageWaiting", "Unsupported",
    "Mapping", "mapping_of",
]

# The classes are defined in the extension; they are the package's.
for _cls in (Pool, Sender, Receiver, Buffer, View, PoolStats, SenderStats, ReceiverStats):
    _cls.__module__ = "fbuf"
del _cls

Mapping = _collections.namedtuple("Mapping", "start end perms offset path")
Mapping.__doc__ = """One line of /proc/self/maps: [start, end), permissions
('r--s': read-only and shared), file offset of start, and the path
('/memfd:fbuf:<pool name> (deleted)' for a pool)."""


def _address_of(obj):
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "address"):  # fbuf.View, fbuf.Buffer
        return obj.address
    interface = getattr(obj, "__array_interface__", None)  # numpy arrays
    if interface is not None:
        return interface["data"][0]
    raise TypeError("mapping_of() takes an address, an fbuf.View or fbuf.Buffer, or a numpy array")


def mapping_of(obj):
    """The mapping of this process that holds `obj`'s first byte, as the
    kernel reports it (/proc/self/maps): a Mapping, or None.

    `obj` is an address, an fbuf.View or fbuf.Buffer, or a numpy array. For
    the memory of a View, the mapping is the sender's pool, mapped read-only
    and shared: this is how a program (or a test) can see for itself that
    nothing was copied.
    """
    address = _address_of(obj)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].rstrip("\n") if len(fields) > 5 else ""
                return Mapping(start, end, fields[1], int(fields[2], 16), path)
    return None

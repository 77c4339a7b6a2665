# The control-plane messages a receiver and a sender exchange over the
# service's Unix socket (SOCK_SEQPACKET: one datagram per message).
#
#   receiver -> sender   Hello
#   sender -> receiver   Welcome, with four fds attached in this order:
#                          0: the pool memfd, re-opened O_RDONLY
#                          1: the connection's ring memfd (send + return rings)
#                          2: the pool's doorbell memfd
#                          3: the receiver's end of its readiness socket pair
#                             (AF_UNIX, SOCK_SEQPACKET; ipc/readiness.h)
#                        or Reject, with no fds.
#
# Every field is input from a peer that may be buggy or hostile: the
# decoder (ipc/control.cc) checks each against protocol limits and against
# the fds themselves (fstat size, seals, access mode) before use.
@0x9353f857479166b6;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("fbuf::ipc::proto");

struct Hello {
  version @0 :UInt32;
  pid @1 :UInt32;
  # What the receiver asks for itself when it falls behind (fbuf::
  # SlowReceiverPolicy, SenderOptions). The sender takes each only where it
  # is more lenient to its other receivers than its own options; zero asks
  # for nothing, so a Hello without these fields means the same.
  slowPolicy @2 :UInt8;       # 0 block, 1 fail fast, 2 skip, 3 cut off
  receiverBudget @3 :UInt32;  # buffers held or queued; 0: the sender's
  holdTimeoutNs @4 :UInt64;   # 0: the sender's; at most 2^63 - 1
}

struct SizeClass {
  bufferSize @0 :UInt64;
  count @1 :UInt32;
}

struct Welcome {
  version @0 :UInt32;
  poolName @1 :Text;
  poolSize @2 :UInt64;
  classes @3 :List(SizeClass);
  policy @4 :UInt8;
  sendCapacity @5 :UInt32;
  returnCapacity @6 :UInt32;
  ringBytes @7 :UInt64;
  receiverId @8 :UInt32;
}

struct Reject {
  version @0 :UInt32;
  reason @1 :Text;
}

struct ControlMessage {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    reject @2 :Reject;
  }
}

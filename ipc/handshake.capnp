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
#   The path (docs/design.md, "The path"), after the handshake:
#   stage -> owner       HolderRequest, on its receiver socket or on a
#                        holder socket the owner granted; no fds
#   owner -> stage       HolderGrant, with two fds: 0: the holder's ring
#                        memfd, 1: the far end of the holder socket
#                        (AF_UNIX, SOCK_SEQPACKET); or Reject
#   stage -> owner       DrainRequest, no fds: the stage waits for room in
#                        its return ring for a lend record
#   stage -> downstream  PoolAnnounce, on the downstream's receiver socket,
#                        with four fds: 0: the upstream pool (O_RDONLY),
#                        1: its owner's doorbell memfd, 2: the holder's
#                        ring memfd, 3: the holder socket
#
#   monitor -> sender    MonitorRequest (instead of a Hello)
#   sender -> monitor    MonitorReply or Reject, with no fds; then the
#                        sender closes the connection.
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

# A request for the service's state, as `fbuf info` shows it. A sender
# that predates it reads an unknown union member and answers with a Reject
# ("expected Hello"), never with silence. `version` is the monitoring
# protocol's own (kMonitorVersion), apart from the handshake's.
struct MonitorRequest {
  version @0 :UInt32;
}

struct MonitorClass {
  bufferSize @0 :UInt64;
  count @1 :UInt32;
  free @2 :UInt32;
  # Sealed copies (docs/design.md, "Sealed copies"): whether the class
  # sends small buffers by copying them into sealed slots (as many as
  # `count`), and how many of those are free. False and 0 from a sender
  # that does not report them.
  sealed @3 :Bool;
  sealedFree @4 :UInt32;
}

struct MonitorReceiver {
  id @0 :UInt32;
  pid @1 :UInt32;              # SO_PEERCRED at connect (the owner's, if local)
  uid @2 :UInt32;
  connectedSinceNs @3 :Int64;  # wall clock, ns since the Unix epoch
  local @4 :Bool;              # a receiver thread of the owner's process
  held @5 :UInt32;             # taken from its ring and not returned
  queued @6 :UInt32;           # in its ring, not taken yet
  ringCapacity @7 :UInt32;
  delivered @8 :UInt64;
  returned @9 :UInt64;
  dropped @10 :UInt64;
  rejectedReturns @11 :UInt64;
  cutOff @12 :Bool;
  detached @13 :Bool;          # no more sends to it; it may still hold views
  slowPolicy @14 :UInt8;       # its terms, after its Hello's requests
  receiverBudget @15 :UInt32;
  holdTimeoutNs @16 :UInt64;
}

struct MonitorReply {
  version @0 :UInt32;          # kMonitorVersion
  protocolVersion @1 :UInt32;  # the handshake's (kProtocolVersion)
  service @2 :Text;
  ownerPid @3 :UInt32;
  ownerUid @4 :UInt32;
  poolName @5 :Text;
  policy @6 :UInt8;
  classes @7 :List(MonitorClass);
  slowPolicy @8 :UInt8;
  receiverBudget @9 :UInt32;
  holdTimeoutNs @10 :UInt64;
  ringCapacity @11 :UInt32;
  maxReceivers @12 :UInt32;
  # SenderStats
  sent @13 :UInt64;
  delivered @14 :UInt64;
  returned @15 :UInt64;
  rejectedReturns @16 :UInt64;
  rejectedHandshakes @17 :UInt64;
  receiversConnected @18 :UInt64;
  receiversLost @19 :UInt64;
  dropped @20 :UInt64;
  receiversCutOff @21 :UInt64;
  monitorRequests @22 :UInt64;  # answered, this one included
  receivers @23 :List(MonitorReceiver);
  receiversOmitted @24 :UInt32;  # past the reply's limit, not listed
  # Returned by receivers and not collected by the pool yet (it collects
  # when a class runs empty): free in all but name.
  returnsWaiting @25 :UInt64;
  # Sealed copies (PoolStats' sealed_* counters, Pool::sealed_copy_size):
  # all 0 from a pool without them and from a sender that does not report
  # them, which decode the same ("none").
  sealedCopySize @26 :UInt64;   # the largest buffer size sent by copy
  sealedTotal @27 :UInt32;      # sealed slots
  sealedFree @28 :UInt32;
  sealedInFlight @29 :UInt32;   # copies sent and not returned
  sealedCopies @30 :UInt64;     # sends made by copy
  sealedFallbacks @31 :UInt64;  # sends of a sealed class that protected instead
}

# The path. Versions are kPathVersion (ipc/layout.h).
struct HolderRequest {
  version @0 :UInt32;
}

struct HolderGrant {
  version @0 :UInt32;
  token @1 :UInt32;            # the holder inlet's name at the owner
  returnCapacity @2 :UInt32;   # the holder's return ring (send ring: 1 slot)
  ringBytes @3 :UInt64;
}

struct DrainRequest {
  version @0 :UInt32;
}

struct PoolAnnounce {
  version @0 :UInt32;
  slot @1 :UInt32;             # Descriptor::pool on this connection, >= 1
  poolName @2 :Text;
  poolSize @3 :UInt64;
  classes @4 :List(SizeClass);
  policy @5 :UInt8;
  returnCapacity @6 :UInt32;   # the holder ring, as in HolderGrant
  ringBytes @7 :UInt64;
  token @8 :UInt32;
}

struct ControlMessage {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    reject @2 :Reject;
    monitorRequest @3 :MonitorRequest;
    monitorReply @4 :MonitorReply;
    holderRequest @5 :HolderRequest;
    holderGrant @6 :HolderGrant;
    drainRequest @7 :DrainRequest;
    poolAnnounce @8 :PoolAnnounce;
  }
}

# What a detector found in one camera frame: the schema of
# examples/typed_capnp.cc, a Cap'n Proto message built in pool buffers and
# read in place by the recorder.
@0xc625ee39c57bfaf0;

struct FrameMeta {
  seq @0 :UInt64;
  camera @1 :Text;
  captureNs @2 :Int64;
  detections @3 :List(Detection);
  # A preview of the frame; every fifth one is large enough that the
  # message grows past its first segment.
  thumbnail @4 :Data;

  struct Detection {
    label @0 :Text;
    score @1 :Float32;
    x @2 :UInt16;
    y @3 :UInt16;
    w @4 :UInt16;
    h @5 :UInt16;
  }
}

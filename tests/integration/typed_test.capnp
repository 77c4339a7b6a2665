# The schema of typed_capnp_test: a frame's metadata, with a payload large
# enough to need several segments and a child link for nesting.
@0xe2431e9918aa8e56;

struct TestFrame {
  seq @0 :UInt64;
  camera @1 :Text;
  boxes @2 :List(Box);
  payload @3 :Data;
  child @4 :TestFrame;

  struct Box {
    x @0 :Float32;
    y @1 :Float32;
    label @2 :Text;
  }
}

// fbuf::typed, Cap'n Proto: a capnp::MessageBuilder whose segments are pool
// buffers, sent without serialising into a separate array, and read in
// place by receivers through a capnp reader over the received bytes.
// Header-only; a program that includes it links Cap'n Proto itself
// (CapnProto::capnp, or `pkg-config capnp`); nothing else in fbuf does.
//
// Sender: CapnpBuilder takes its first segment from the pool (sized by a
// hint) and one more buffer per further segment as the message grows; each
// segment is zeroed before capnp sees it (capnp builds on zeroed words),
// and only it: the rest of the buffer is neither zeroed nor sent.
//
// Receiver: read_capnp() checks what capnp cannot (each segment word-aligned,
// a whole number of words, at most kMaxCapnpSegments), then walks the whole
// message once through a capnp reader with the caller's ReaderOptions:
// every pointer bounds-checked against its segment, far pointers to
// segments that are not there, nesting past nestingLimit, and reads past
// traversalLimitInWords (which is what stops a message that points at the
// same object many times) are refused there, as a kj::Exception caught at
// this boundary. A refused message is Errc::kBadDescriptor, counted in
// TypedStats; its buffers go back to their owner. docs/api.md, "Typed
// messages", has what a passed message may still throw.
#pragma once

#include "fbuf/typed/capnp_builder.h"
#include "fbuf/typed/capnp_reader.h"

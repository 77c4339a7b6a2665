// fbuf::typed, Boost.Interprocess: containers (vectors, strings, flat maps of
// them) built in place in a pool buffer by its owner, sent as a plain
// buffer, and read in place by receivers through their read-only mapping.
// Header-only; needs Boost's headers (libboost-dev), nothing else.
//
// Layout of the buffer: an InPlaceHeader (64 bytes) naming the root object
// by its offset, then a boost::interprocess::managed_external_buffer over
// the rest, in which the root and everything it holds is allocated. Its
// pointers are offset_ptrs (relative to their own address), so the bytes
// mean the same at every mapping address.
//
// A receiver never touches the segment manager: its name index is a tree
// of pointers in the buffer that nothing checks, its allocator writes. It
// finds the root through the header (read_in_place: magic, type tag, size,
// offset in bounds and aligned) and then reads only through InPlaceBounds,
// whose accessors read a container's pointer and size once, check that
// every byte they name lies inside the received bytes, and hand out a
// span or string_view over them. Nothing there allocates, locks or writes.
// Node-based containers (map, list) cannot be read this way: their
// iterators follow pointers no one checked. docs/api.md, "Typed messages".
#pragma once

#include "fbuf/typed/in_place_builder.h"
#include "fbuf/typed/in_place_reader.h"

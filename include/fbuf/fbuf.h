// The whole C++ API of fbuf.
#pragma once

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/pool.h"
#include "fbuf/receiver.h"
#include "fbuf/sender.h"
#include "fbuf/wait_set.h"

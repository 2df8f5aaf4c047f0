// Transitional: Stateful and StateDict moved to runtime/base/stateful.h (namespace
// dtrain). These aliases keep `checkpoint::StateDict` compiling in the files that still
// spell it so (runtime/engine/default_trainer.cpp); include runtime/base/stateful.h and
// write dtrain::StateDict instead, and delete this header when nothing includes it.
#pragma once

#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

using ::dtrain::StateDict;
using ::dtrain::Stateful;
using ::dtrain::StateValue;

}  // namespace dtrain::checkpoint

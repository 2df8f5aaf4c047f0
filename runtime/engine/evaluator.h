// Distributed evaluation of a model on a dataset: accuracy and loss for classifiers,
// loss and perplexity for language models.
//
//   auto metrics = evaluate(model, *test_set, comm, /*global_batch=*/256);  // collective
//
// Not thread-safe: call from the training thread of every rank (the Communicator's
// contract, communicator.h), with no other thread using the model meanwhile.
#pragma once

#include <map>
#include <string>

#include "models/model.h"
#include "runtime/data/dataset.h"
#include "runtime/dist/communicator.h"

namespace dtrain::engine {

// Evaluates `model` (switched to eval mode, restored to train mode afterwards) on all
// of `dataset`: rank r takes samples r, r+W, r+2W, ... in batches of
// ceil(global_batch / W); sums are all-reduced so every rank returns the same metrics:
// {"loss", "accuracy"} for classification, {"loss", "perplexity", "accuracy"} (token
// accuracy) for language models. Collective.
std::map<std::string, double> evaluate(models::Model& model, const data::Dataset& dataset,
                                       dist::Communicator& comm, int64_t global_batch);

}  // namespace dtrain::engine

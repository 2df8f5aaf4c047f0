// TensorboardXWriter: the EventStorage's scalars as TensorBoard event files in
// OUTPUT_DIR (detectron2's utils/events.py TensorboardXWriter).
//
//   writers.push_back(std::make_shared<TensorboardXWriter>(out_dir));   // rank 0 only
//   // then `tensorboard --logdir OUTPUT_DIR`
//
// Not thread-safe: used from the training thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/engine/events.h"

namespace dtrain::tensorboard {
class EventFileWriter;
}

namespace dtrain::engine {

// Writes every scalar put into the storage since its last write, each at the iteration
// it was put and unsmoothed (TensorBoard smooths on display), so its curves hold every
// value of metrics.json and, with LOG.PERIOD > 1, the iterations in between too.
// (detectron2's writer logs only the latest, median-smoothed value at each write.)
//
// The event file (events.out.tfevents.<seconds>.<host>.<pid>) is created at the first
// start() or write(), so a writer that never writes leaves no file. Each run begins its
// file with a SessionLog START at its first iteration (start_iter after a resume, else
// 0): TensorBoard then drops what an interrupted run logged at or after that iteration,
// and a resumed run continues the same curves (docs/DESIGN.md).
class TensorboardXWriter : public EventWriter {
 public:
  // `log_dir` must exist (OUTPUT_DIR, created by default_setup).
  explicit TensorboardXWriter(std::string log_dir);
  ~TensorboardXWriter() override;

  // Opens the event file and logs a session START at `start_iter`; scalars put before
  // `start_iter` are not written.
  void start(int64_t start_iter) override;
  // Writes the new scalars, grouped by iteration, then flushes the file.
  void write(const EventStorage& storage) override;
  // Flushes and closes the file; later writes do nothing.
  void close() override;
  // The event file's path ("" before the first start() or write()).
  std::string path() const;

 private:
  void open(int64_t start_iter);

  std::string log_dir_;
  std::unique_ptr<tensorboard::EventFileWriter> file_;
  bool closed_ = false;
  int64_t last_written_ = -1;  // scalars put at iterations <= this are written
};

}  // namespace dtrain::engine

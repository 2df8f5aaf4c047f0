// Preemption watcher (Boost.Asio signal_set on its own thread) and hook.
#include "runtime/engine/preemption.h"

#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"

namespace dtrain::engine {

int signal_from_name(const std::string& name) {
  std::string n = name;
  for (char& c : n) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n.rfind("SIG", 0) == 0) n = n.substr(3);
  static const std::pair<const char*, int> kSignals[] = {
      {"TERM", SIGTERM}, {"INT", SIGINT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
      {"HUP", SIGHUP},   {"QUIT", SIGQUIT}, {"XCPU", SIGXCPU}};
  for (const auto& [s, v] : kSignals) {
    if (n == s) return v;
  }
  throw ConfigError(fmt::format(
      "CHECKPOINT.PREEMPT_SIGNALS: unknown or unsupported signal '{}' (use SIGTERM, SIGINT, "
      "SIGUSR1, SIGUSR2, SIGHUP, SIGQUIT or SIGXCPU)",
      name));
}

struct PreemptionWatcher::Impl {
  boost::asio::io_context io;
  boost::asio::signal_set signals{io};
  boost::asio::steady_timer deadline{io};
  std::thread thread;
  std::function<void(const boost::system::error_code&, int)> on_signal;
  std::chrono::steady_clock::time_point first_at;  // when the first signal arrived
};

namespace {

[[noreturn]] void exit_now(const char* why) {
  // Async-signal-safe enough: we are on the watcher thread, not in a signal handler.
  std::fprintf(stderr, "dtrain: %s; exiting now with status %d (committed checkpoints are "
                       "untouched)\n", why, kExitPreempted);
  std::fflush(stderr);
  std::_Exit(kExitPreempted);
}

}  // namespace

PreemptionWatcher::PreemptionWatcher(const std::vector<int>& signals, double deadline_s)
    : impl_(std::make_unique<Impl>()), deadline_s_(deadline_s) {
  for (int s : signals) impl_->signals.add(s);
  // The handler re-arms itself; the first signal starts the deadline, the second exits.
  // Only this thread runs it, so impl_->first_at needs no lock.
  impl_->on_signal = [this](const boost::system::error_code& ec, int sig) {
    if (ec) return;  // cancelled
    int expected = 0;
    if (first_signal_.compare_exchange_strong(expected, sig)) {
      impl_->first_at = std::chrono::steady_clock::now();
      // Long blocking operations (a download of MODEL.WEIGHTS) poll this and give up.
      request_stop(sig);
      DTRAIN_LOG_WARN_RANK("Received signal {} ({}): saving a checkpoint at the next iteration "
                      "boundary, then exiting with status {}", sig, strsignal(sig), kExitPreempted);
      if (deadline_s_ > 0) {
        impl_->deadline.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(deadline_s_)));
        impl_->deadline.async_wait([this](const boost::system::error_code& e) {
          if (!e) exit_now(fmt::format("preemption deadline of {} s passed before the checkpoint "
                                       "was committed", deadline_s_).c_str());
        });
      }
    } else if (sig == expected && std::chrono::steady_clock::now() - impl_->first_at <
                                      std::chrono::duration<double>(kRepeatWindowS)) {
      // One event delivered twice (SLURM signals the tasks and srun, which forwards it):
      // not a request to hurry.
      DTRAIN_LOG_WARN_RANK("Ignoring signal {} repeated within {} s of the first", sig,
                      kRepeatWindowS);
    } else {
      exit_now(fmt::format("second signal {} received", sig).c_str());
    }
    impl_->signals.async_wait(impl_->on_signal);
  };
  impl_->signals.async_wait(impl_->on_signal);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

PreemptionWatcher::~PreemptionWatcher() {
  boost::system::error_code ec;
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->signals.cancel(ec);
  impl_->signals.clear(ec);  // restores the default dispositions
}

void PreemptionHook::after_step() {
  const int64_t iter = trainer_->iter();
  if (iter + 1 >= trainer_->max_iter()) {
    // The last iteration: the run completes now (model_final is being saved), so there
    // is nothing to resume; finish normally (status 0) instead of asking for a requeue.
    // Every rank takes this branch together, so skipping the all-reduce is safe.
    if (watcher_.requested()) {
      DTRAIN_LOG_WARN_RANK("Signal {} arrived during the last iteration; finishing normally",
                      watcher_.signal());
    }
    return;
  }
  const int64_t local = watcher_.requested() ? 1 : 0;
  if (comm_.all_reduce_int(local, dist::ReduceOp::kMax) == 0) return;
  const std::string name = fmt::format("model_{:07d}", iter);
  // An asynchronous save in flight is committed first; it, or a synchronous periodic
  // save, may be of this very iteration already.
  checkpointer_.finish_async();
  const std::string last = checkpointer_.get_checkpoint_file();
  if (std::filesystem::path(last).filename() != name) {
    checkpointer_.save(name, {{"iteration", iter}});
  }
  // Every rank says where it stopped (operators and tests check they agree).
  DTRAIN_LOG_WARN_RANK("Preempted after iteration {}: checkpoint {} committed; exiting with status {}",
                  iter, name, kExitPreempted);
  throw Preempted(fmt::format("preempted after iteration {} (checkpoint {})", iter, name));
}

}  // namespace dtrain::engine

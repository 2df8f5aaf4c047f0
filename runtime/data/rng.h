// Platform-stable pseudo-random numbers for data generation and sample order.
//
// std::shuffle, std::uniform_int_distribution and std::normal_distribution are
// implementation-defined, so orders and synthetic data would differ between standard
// libraries. dtrain uses std::mt19937_64 (whose output the standard fixes) and its own
// bounded integers, Fisher-Yates shuffle and Box-Muller normals:
//
//   dtrain::data::Rng rng(dtrain::data::mix_seed(seed, kMyStream));
//   dtrain::data::shuffle(order, rng);           // identical on every platform
//   double z = rng.normal();                     // identical up to libm rounding
//
// Never touches the global torch RNG. Not thread-safe (one Rng per thread).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace dtrain::data {

// A seed for the independent stream `stream` derived from `seed` (splitmix64 mixing), so
// that e.g. the train split, the test split and each epoch's order are unrelated.
uint64_t mix_seed(uint64_t seed, uint64_t stream);

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // 64 random bits.
  uint64_t next() { return engine_(); }
  // Uniform integer in [0, n) without modulo bias (n >= 1).
  uint64_t below(uint64_t n);
  // Uniform double in [0, 1) with 53 random bits.
  double uniform();
  // Standard normal (Box-Muller; both values of a pair are used).
  double normal();

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// Fisher-Yates shuffle of `values` in place (i from n-1 down to 1 swaps with below(i+1)).
void shuffle(std::vector<int64_t>& values, Rng& rng);

}  // namespace dtrain::data

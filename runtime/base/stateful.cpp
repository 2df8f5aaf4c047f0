// Typed accessors for StateDict entries.
#include "runtime/base/stateful.h"

#include "runtime/base/error.h"

namespace dtrain {
namespace {

template <typename T>
const T& get_typed(const StateDict& state, const std::string& key, const std::string& owner,
                   const char* type_name) {
  auto it = state.find(key);
  DTRAIN_CHECK(it != state.end(), "{} state: missing entry '{}'", owner, key);
  const T* v = std::get_if<T>(&it->second);
  DTRAIN_CHECK(v != nullptr, "{} state: entry '{}' is not {}", owner, key, type_name);
  return *v;
}

}  // namespace

int64_t state_int(const StateDict& s, const std::string& key, const std::string& owner) {
  return get_typed<int64_t>(s, key, owner, "an integer");
}
double state_double(const StateDict& s, const std::string& key, const std::string& owner) {
  auto it = s.find(key);
  if (it != s.end()) {
    if (const int64_t* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  }
  return get_typed<double>(s, key, owner, "a float");
}
const std::string& state_string(const StateDict& s, const std::string& key,
                                const std::string& owner) {
  return get_typed<std::string>(s, key, owner, "a string");
}
const at::Tensor& state_tensor(const StateDict& s, const std::string& key,
                               const std::string& owner) {
  return get_typed<at::Tensor>(s, key, owner, "a tensor");
}

}  // namespace dtrain

// The one place where reference models are registered by name (MODEL.NAME).
#include <string>

#include <fmt/format.h>

#include "models/cnn.h"
#include "models/gpt.h"
#include "models/mlp.h"
#include "models/model.h"
#include "models/resnet.h"
#include "runtime/base/error.h"

namespace dtrain::models {

const std::map<std::string, ModelBuilder>& model_registry() {
  static const std::map<std::string, ModelBuilder> registry = {
      {"cnn", [](const Config& cfg) { return make_cnn(CnnOptions::from_config(cfg)); }},
      {"gpt", [](const Config& cfg) { return make_gpt(GptOptions::from_config(cfg)); }},
      {"mlp", [](const Config& cfg) { return make_mlp(MlpOptions::from_config(cfg)); }},
      {"resnet",
       [](const Config& cfg) { return make_resnet(ResNetOptions::from_config(cfg)); }},
  };
  return registry;
}

std::shared_ptr<Model> build_model(const Config& cfg) {
  const std::string& name = cfg.get_string("MODEL.NAME");
  const auto& registry = model_registry();
  auto it = registry.find(name);
  if (it == registry.end()) {
    std::string names;
    for (const auto& entry : registry) names += (names.empty() ? "" : ", ") + entry.first;
    throw ConfigError(
        fmt::format("unknown MODEL.NAME '{}'; registered models: {}", name, names));
  }
  return it->second(cfg);
}

}  // namespace dtrain::models

#include "model/kv_cache.h"

namespace dsv3 {

KvCache::KvCache(const ModelConfig& config, int64_t num_layers, int64_t capacity)
    : capacity_(capacity), values_per_token_layer_(config.kv_cache_values_per_token_layer()) {
  layers_.resize(static_cast<size_t>(num_layers));
  for (auto& layer : layers_) {
    layer.latent.assign(static_cast<size_t>(capacity * config.kv_lora_rank), 0.0f);
    layer.rope_key.assign(static_cast<size_t>(capacity * config.qk_rope_head_dim), 0.0f);
  }
}

int64_t KvCache::BytesPerToken() const {
  return values_per_token_layer_ * num_layers() * static_cast<int64_t>(sizeof(float));
}

}  // namespace dsv3

// Per-request attention state: the latent KV cache of MLA (spec §5.4). Per token and layer it
// holds the normalised latent c [kv_lora_rank] and the rotated rope key k_pe [qk_rope_head_dim],
// nothing else: 576 values for DeepSeek-V3 instead of 40,960 for naive attention.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "util/huge_pages.h"

namespace dsv3 {

// Cache-line aligned: the attention kernels stream these rows with full-width loads; from 1 MiB
// on in 2 MiB pages (util/huge_pages.h): bench-medium q4_0 tg16 @ d4096 (9.4 MB of cache a
// layer), two runs each, alternating, busy host: 40.8 / 41.6 tok/s in 4 KiB pages, 46.9 / 43.9.
struct LayerKvCache {
  LargeVector<float> latent;    // [capacity, kv_lora_rank]
  LargeVector<float> rope_key;  // [capacity, qk_rope_head_dim]
};

class KvCache {
 public:
  // Caches for num_layers layers of capacity tokens each, allocated once here.
  KvCache(const ModelConfig& config, int64_t num_layers, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // tokens already cached
  void set_length(int64_t length) { length_ = length; }
  void Clear() { length_ = 0; }
  LayerKvCache& layer(int64_t i) { return layers_[static_cast<size_t>(i)]; }
  const LayerKvCache& layer(int64_t i) const { return layers_[static_cast<size_t>(i)]; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  // Bytes one token occupies in the cache across all layers (f32 storage).
  int64_t BytesPerToken() const;

 private:
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  int64_t values_per_token_layer_ = 0;
  std::vector<LayerKvCache> layers_;
};

}  // namespace dsv3

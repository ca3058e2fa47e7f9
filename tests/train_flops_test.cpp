// The training FLOPs accounting (MFU's numerator) against the decode accounting of
// model/param_count (written separately): the same linear multiply-adds per token.
#include <gtest/gtest.h>

#include "model/param_count.h"
#include "model/presets.h"
#include "train/flops.h"

namespace dsv3::train {
namespace {

TEST(TrainFlops, LinearAndHeadMatchTheDecodeAccounting) {
  for (const char* name : {"tiny-v3", "tiny-v2-lite", "tiny-dense", "tiny-kimi", "bench-small"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = *PresetConfig(name);
    const TrainingFlops f = CountTrainingFlops(c, 64);
    const TokenMacs decode = CountTokenMacs(c);
    EXPECT_EQ(f.linear_macs, decode.layers);
    EXPECT_EQ(f.head_macs, decode.lm_head);
    EXPECT_DOUBLE_EQ(f.PerToken(), 6.0 * static_cast<double>(f.linear_macs + f.attention_macs +
                                                             f.head_macs + f.mtp_macs));
  }
}

TEST(TrainFlops, AttentionAndMtp) {
  ModelConfig c = *PresetConfig("tiny-v3");
  c.num_nextn_predict_layers = 1;
  const int64_t T = 9;  // token i attends to i + 1 keys: 45 keys in all, 5 per token on average
  const TrainingFlops f = CountTrainingFlops(c, T);
  const int64_t per_key = c.num_attention_heads *
                          (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim);  // q·k + p·v
  EXPECT_EQ(f.attention_macs, c.num_hidden_layers * per_key * 5);
  // The MTP layer is a MoE layer like the last main layer: its linear part is the difference the
  // last layer makes to the decode accounting.
  ModelConfig shorter = c;
  shorter.num_hidden_layers -= 1;
  ASSERT_TRUE(c.IsMoeLayer(c.num_hidden_layers - 1));
  const int64_t last_layer = CountTokenMacs(c).layers - CountTokenMacs(shorter).layers;
  EXPECT_EQ(f.mtp_macs, 2 * c.hidden_size * c.hidden_size + last_layer + per_key * 5 +
                            c.hidden_size * c.vocab_size);
}

}  // namespace
}  // namespace dsv3::train

#include "tokenizer/decode_stream.h"

#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {

size_t DecodeStream::NextTo(int32_t id, std::string* out) {
  if (!tokenizer_->IsKnown(id) || (skip_special_ && tokenizer_->IsSpecial(id))) return 0;
  pending_ += tokenizer_->TokenBytes(id);
  const size_t before = out->size();
  // Invalid bytes are replaced now, exactly as the one-shot lossy decode would; only a tail that
  // later bytes could still complete is kept.
  const size_t consumed = AppendUtf8Lossy(pending_, /*final=*/false, out);
  pending_.erase(0, consumed);
  return out->size() - before;
}

std::string DecodeStream::Next(int32_t id) {
  std::string text;
  NextTo(id, &text);
  return text;
}

std::string DecodeStream::Finish() {
  std::string text;
  AppendUtf8Lossy(pending_, /*final=*/true, &text);
  pending_.clear();
  return text;
}

}  // namespace dsv3::tokenizer

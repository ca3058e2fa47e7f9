// dsv3 chat: an interactive conversation through the model's chat template. Each turn re-renders
// the conversation; the session's KV cache keeps the prefix, so only the new turn is prefilled.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "engine/generate.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/decode_stream.h"
#include "tokenizer/tokenizer_config.h"

namespace dsv3::cli {

namespace {

struct ChatCliOptions {
  RunOptions run;
  std::string system;
  int64_t max_new_tokens = 512;
  int64_t context = 4096;
  SamplingOptions sampling;
  bool thinking = false;
  bool stats = false;
};

Status RunChat(const ChatCliOptions& o) {
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  auto loaded = tokenizer::LoadModelTokenizer(o.run.model_dir);
  if (!loaded.ok()) return loaded.status().WithContext("chat needs the model's tokenizer");
  const tokenizer::ModelTokenizer& tok = *loaded;
  if (tok.config.chat_template.empty())
    return Err("{}: tokenizer_config.json has no chat_template", o.run.model_dir);
  DSV3_ASSIGN_OR_RETURN(auto chat_template, tokenizer::ChatTemplate::FromJinja(
                                                tok.config.chat_template, tok.config.bos_token));
  const ModelConfig& c = rt.model->config();
  const int64_t context = std::min(o.context, c.max_position_embeddings);
  if (context < 1) return Status::Error("--ctx-size must be >= 1");
  Session session(*rt.model, rt.ctx, context);

  std::vector<tokenizer::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system, std::nullopt, false});
  GenerateOptions options;
  DSV3_ASSIGN_OR_RETURN(options.sampling, ResolveSampling(o.sampling, o.run.model_dir));
  options.forward.experts_per_token = o.run.experts_per_token;
  options.stop_tokens.push_back(static_cast<int32_t>(c.eos_token_id));
  if (tok.eos_id >= 0 && tok.eos_id != c.eos_token_id) options.stop_tokens.push_back(tok.eos_id);
  tokenizer::ChatOptions chat_options;
  chat_options.thinking = o.thinking;

  fmt::print(stderr, "dsv3 chat ({} template); an empty line or EOF ends it\n",
             chat_template.name());
  std::string line;
  while (true) {
    fmt::print(stderr, "> ");
    if (!std::getline(std::cin, line) || line.empty()) break;
    messages.push_back({"user", line, std::nullopt, false});
    DSV3_ASSIGN_OR_RETURN(std::string rendered, chat_template.Render(messages, chat_options));
    DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, tok.tokenizer.Encode(rendered));
    const int64_t room = context - static_cast<int64_t>(prompt.size());
    if (room < 1)
      return Err("the conversation ({} tokens) fills the context {}", prompt.size(), context);
    options.max_new_tokens = std::min(o.max_new_tokens, room);
    tokenizer::DecodeStream stream(tok.tokenizer, /*skip_special=*/true);
    std::string reply;
    std::vector<int32_t> output;
    auto print = [&](int32_t token) {
      const std::string piece = stream.Next(token);
      reply += piece;
      fmt::print("{}", piece);
      std::fflush(stdout);
      return true;
    };
    DSV3_ASSIGN_OR_RETURN(GenerateStats stats, session.Generate(prompt, options, print, &output));
    const std::string tail = stream.Finish();
    reply += tail;
    fmt::print("{}\n", tail);
    if (o.stats) PrintGenerateStats(stats);
    messages.push_back({"assistant", reply, std::nullopt, false});
  }
  return Status::Ok();
}

}  // namespace

Command RegisterChat(CLI::App& root) {
  auto o = std::make_shared<ChatCliOptions>();
  CLI::App* app = root.add_subcommand("chat", "interactive chat through the chat template");
  AddRunOptions(app, &o->run);
  app->add_option("--system", o->system, "system prompt");
  app->add_option("-n,--max-tokens", o->max_new_tokens, "most tokens per reply (default 512)");
  app->add_option("-c,--ctx-size", o->context, "context size in tokens (default 4096)");
  AddSamplingOptions(app, &o->sampling);
  app->add_flag("--think", o->thinking, "thinking mode (V3.1 templates)");
  app->add_flag("--stats", o->stats, "print speed after each reply");
  return {app, [o] { return RunChat(*o); }};
}

}  // namespace dsv3::cli

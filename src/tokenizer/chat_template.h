// DeepSeek chat templates rendered natively (no Jinja engine): the V3 family (V3, R1 and its
// revisions) and V3.1 (thinking / non-thinking). Which one, and the details that differ between
// revisions of the V3 family, are read off the Jinja source in tokenizer_config.json; a template
// that is not recognisably one of these is an error, never a silently different prompt.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace dsv3::tokenizer {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, inserted verbatim
};

struct ChatMessage {
  std::string role;                                 // system, user, assistant, tool
  std::optional<std::string> content;               // nullopt: JSON null or absent
  std::optional<std::vector<ToolCall>> tool_calls;  // nullopt: absent or null
  bool prefix = false;  // V3.1: an assistant prefix to continue (prefix completion)
};

// Parses an OpenAI-style "messages" array. Tool-call arguments must be strings (as the templates
// concatenate them); errors name the message index and field.
Result<std::vector<ChatMessage>> ChatMessagesFromJson(const nlohmann::json& messages);

struct ChatOptions {
  bool add_generation_prompt = true;
  bool thinking = false;  // V3.1 only: <think> instead of </think> after the generation prompt
};

class ChatTemplate {
 public:
  enum class Family { kV3, kV31 };

  // Recognises the Jinja source (tokenizer_config.json's chat_template). bos_token is what the
  // template's {{bos_token}} expands to.
  static Result<ChatTemplate> FromJinja(std::string_view raw_source, std::string bos_token);

  Result<std::string> Render(std::span<const ChatMessage> messages,
                             const ChatOptions& options) const;

  Family family() const { return family_; }
  // "deepseek-v3", "deepseek-r1", "deepseek-v3.1", for messages and logs.
  std::string name() const;

 private:
  Result<std::string> RenderV3(std::span<const ChatMessage> messages,
                               const ChatOptions& options) const;
  Result<std::string> RenderV31(std::span<const ChatMessage> messages,
                                const ChatOptions& options) const;

  Family family_ = Family::kV3;
  std::string bos_token_;
  // Revisions of the V3 family differ in these details.
  bool join_system_prompts_ = true;      // all system messages joined by "\n\n" (else: last wins)
  bool tool_branch_by_key_ = false;      // "'tool_calls' in message" (else: content is none)
  bool close_calls_after_loop_ = false;  // calls-end emitted once after the loop (else V3 quirk)
  bool newline_between_outputs_ = true;  // "\n" before the second and later tool outputs
  bool strip_think_ = false;             // assistant content: only what follows the last </think>
  std::string generation_prompt_ = "<｜Assistant｜>";
};

}  // namespace dsv3::tokenizer

#include "tokenizer/chat_template.h"

namespace dsv3::tokenizer {
namespace {

constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kToolSep = "<｜tool▁sep｜>";
constexpr std::string_view kOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kOutputEnd = "<｜tool▁output▁end｜>";

bool Has(std::string_view source, std::string_view marker) {
  return source.find(marker) != std::string_view::npos;
}

Result<std::string_view> Content(const ChatMessage& m, size_t index) {
  if (!m.content.has_value()) {
    return Err("messages[{}] ({}): content must be a string here, not null", index, m.role);
  }
  return std::string_view(*m.content);
}

// Tool call as the V3 family writes it: type, name and the arguments in a json code block.
std::string V3ToolCall(const ToolCall& call) {
  std::string out;
  out += kCallBegin;
  out += call.type;
  out += kToolSep;
  out += call.name;
  out += "\n```json\n";
  out += call.arguments;
  out += "\n```";
  out += kCallEnd;
  return out;
}

}  // namespace

Result<std::vector<ChatMessage>> ChatMessagesFromJson(const nlohmann::json& messages) {
  if (!messages.is_array()) return Err("messages: expected an array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Err("messages[{}]: expected an object with a string \"role\"", i);
    }
    ChatMessage message;
    message.role = m["role"].get<std::string>();
    if (m.contains("content") && !m["content"].is_null()) {
      if (!m["content"].is_string()) return Err("messages[{}].content: expected a string", i);
      message.content = m["content"].get<std::string>();
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      const auto& calls = m["tool_calls"];
      if (!calls.is_array()) return Err("messages[{}].tool_calls: expected an array", i);
      message.tool_calls.emplace();
      for (size_t k = 0; k < calls.size(); ++k) {
        const auto& c = calls[k];
        const std::string where = fmt::format("messages[{}].tool_calls[{}]", i, k);
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) {
          return Err("{}: expected an object with a \"function\" object", where);
        }
        const auto& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string()) {
          return Err("{}.function.name: expected a string", where);
        }
        if (!f.contains("arguments") || !f["arguments"].is_string()) {
          return Err("{}.function.arguments: expected a string (JSON text)", where);
        }
        ToolCall call;
        if (c.contains("type")) {
          if (!c["type"].is_string()) return Err("{}.type: expected a string", where);
          call.type = c["type"].get<std::string>();
        }
        call.name = f["name"].get<std::string>();
        call.arguments = f["arguments"].get<std::string>();
        message.tool_calls->push_back(std::move(call));
      }
    }
    if (m.contains("prefix") && m["prefix"].is_boolean()) message.prefix = m["prefix"].get<bool>();
    out.push_back(std::move(message));
  }
  return out;
}

Result<ChatTemplate> ChatTemplate::FromJinja(std::string_view raw_source, std::string bos_token) {
  // Jinja string literals may spell a newline as an escape or contain it raw (DeepSeek's own files
  // do both); match markers on one spelling.
  std::string unescaped;
  for (size_t i = 0; i < raw_source.size(); ++i) {
    if (raw_source[i] == '\\' && i + 1 < raw_source.size() && raw_source[i + 1] == 'n') {
      unescaped += '\n';
      ++i;
    } else {
      unescaped += raw_source[i];
    }
  }
  const std::string_view source = unescaped;
  ChatTemplate t;
  t.bos_token_ = std::move(bos_token);
  if (source.empty()) return Err("chat template: none given (tokenizer_config.json has none)");
  const bool has_bos = Has(source, "{{bos_token}}") || Has(source, "{{ bos_token }}");
  const bool common = has_bos && Has(source, "'<｜User｜>' + message['content']") &&
                      Has(source, "<｜tool▁call▁begin｜>") && Has(source, "<｜tool▁sep｜>");
  if (common && Has(source, "ns.is_last_user") &&
      Has(source, "{%- if not thinking %}{{'</think>'}}") &&
      Has(source, "{{'<｜Assistant｜></think>'}}")) {
    t.family_ = Family::kV31;
    return t;
  }
  if (common && Has(source, "ns.is_output_first") && !Has(source, "is_last_user") &&
      Has(source, "<｜tool▁outputs▁begin｜>")) {
    t.family_ = Family::kV3;
    t.join_system_prompts_ = Has(source, "is_first_sp");
    t.tool_branch_by_key_ = Has(source, "'tool_calls' in message");
    t.close_calls_after_loop_ =
        Has(source, "{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}");
    t.newline_between_outputs_ = Has(source, "{{'\n<｜tool▁output▁begin｜>'");
    t.strip_think_ = Has(source, "content.split('</think>')[-1]");
    if (Has(source, "{{'<｜Assistant｜><think>\n'}}")) {
      t.generation_prompt_ = "<｜Assistant｜><think>\n";
    } else if (Has(source, "{{'<｜Assistant｜>'}}")) {
      t.generation_prompt_ = "<｜Assistant｜>";
    } else {
      return Err("chat template: a DeepSeek-V3-style template with an unknown generation prompt");
    }
    return t;
  }
  return Err(
      "chat template not recognised (supported: DeepSeek-V3, DeepSeek-R1, DeepSeek-V3.1); it "
      "starts with: {}",
      std::string(source.substr(0, 120)));
}

std::string ChatTemplate::name() const {
  if (family_ == Family::kV31) return "deepseek-v3.1";
  return Has(generation_prompt_, "<think>") || strip_think_ ? "deepseek-r1" : "deepseek-v3";
}

Result<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                         const ChatOptions& options) const {
  return family_ == Family::kV31 ? RenderV31(messages, options) : RenderV3(messages, options);
}

Result<std::string> ChatTemplate::RenderV3(std::span<const ChatMessage> messages,
                                           const ChatOptions& options) const {
  std::string system;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(messages[i], i));
    if (join_system_prompts_ && !first_system) {
      system += "\n\n";
    } else if (!join_system_prompts_) {
      system.clear();
    }
    system += content;
    first_system = false;
  }
  std::string out = bos_token_;
  out += system;
  // The template's namespace flags. is_first and is_output_first are never reset (so a second
  // tool-call turn continues the first's numbering): reproduced on purpose.
  bool is_first = false, is_tool = false, is_output_first = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      is_tool = false;
      out += kUser;
      out += content;
    }
    const bool tool_call_branch =
        m.role == "assistant" &&
        (tool_branch_by_key_ ? m.tool_calls.has_value() : !m.content.has_value());
    if (tool_call_branch) {
      is_tool = false;
      const std::vector<ToolCall> no_calls;
      for (const ToolCall& call : m.tool_calls.has_value() ? *m.tool_calls : no_calls) {
        if (!is_first) {
          out += kAssistant;
          if (m.content.has_value()) out += *m.content;
          out += kCallsBegin;
          out += V3ToolCall(call);
          is_first = true;
        } else {
          out += '\n';
          out += V3ToolCall(call);
          if (!close_calls_after_loop_) {
            out += kCallsEnd;
            out += kEos;
          }
        }
      }
      if (close_calls_after_loop_) {
        out += kCallsEnd;
        out += kEos;
      }
    } else if (m.role == "assistant") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      if (is_tool) {
        out += kOutputsEnd;
        out += content;
        out += kEos;
        is_tool = false;
      } else {
        if (strip_think_) {
          const size_t end_think = content.rfind("</think>");
          if (end_think != std::string_view::npos) content = content.substr(end_think + 8);
        }
        out += kAssistant;
        out += content;
        out += kEos;
      }
    }
    if (m.role == "tool") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      is_tool = true;
      if (is_output_first) {
        out += kOutputsBegin;
        is_output_first = false;
      } else if (newline_between_outputs_) {
        out += "\n";
      }
      out += kOutputBegin;
      out += content;
      out += kOutputEnd;
    }
  }
  if (is_tool) out += kOutputsEnd;
  if (options.add_generation_prompt && !is_tool) out += generation_prompt_;
  return out;
}

Result<std::string> ChatTemplate::RenderV31(std::span<const ChatMessage> messages,
                                            const ChatOptions& options) const {
  std::string system;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(messages[i], i));
    if (!first_system) system += "\n\n";
    system += content;
    first_system = false;
  }
  std::string out = bos_token_;
  out += system;
  bool is_first = false, is_tool = false, is_last_user = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      is_tool = false;
      is_first = false;
      is_last_user = true;
      out += kUser;
      out += content;
    }
    if (m.role == "assistant" && m.tool_calls.has_value()) {
      if (is_last_user) {
        out += kAssistant;
        out += "</think>";
      }
      is_last_user = false;
      is_first = false;
      is_tool = false;
      for (const ToolCall& call : *m.tool_calls) {
        if (!is_first) {
          if (m.content.has_value()) out += *m.content;
          out += kCallsBegin;
          is_first = true;
        }
        out += kCallBegin;
        out += call.name;
        out += kToolSep;
        out += call.arguments;
        out += kCallEnd;
      }
      out += kCallsEnd;
      out += kEos;
    } else if (m.role == "assistant") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      if (is_last_user) {
        out += kAssistant;
        out += m.prefix && options.thinking ? "<think>" : "</think>";
      }
      is_last_user = false;
      if (is_tool) {
        is_tool = false;
      } else {
        // Only what follows the first </think> is kept: earlier turns' reasoning is dropped.
        const size_t end_think = content.find("</think>");
        if (end_think != std::string_view::npos) content = content.substr(end_think + 8);
      }
      out += content;
      out += kEos;
    }
    if (m.role == "tool") {
      DSV3_ASSIGN_OR_RETURN(std::string_view content, Content(m, i));
      is_last_user = false;
      is_tool = true;
      out += kOutputBegin;
      out += content;
      out += kOutputEnd;
    }
  }
  if (options.add_generation_prompt && is_last_user && !is_tool) {
    out += kAssistant;
    out += options.thinking ? "<think>" : "</think>";
  }
  return out;
}

}  // namespace dsv3::tokenizer

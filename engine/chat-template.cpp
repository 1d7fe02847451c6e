// The Qwen3 chat template, statement by statement; comments quote the Jinja construct each block mirrors.
#include "engine/chat-template.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "engine/base/error.h"

namespace evident::engine {

namespace {

// Python's str.lstrip('\n') / rstrip('\n') / strip('\n').
std::string_view lstrip_nl(std::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
std::string_view rstrip_nl(std::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}
std::string_view strip_nl(std::string_view s) {
  return rstrip_nl(lstrip_nl(s));
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

}  // namespace

chat_template_variant parse_chat_template_variant(const std::string& name) {
  if (name == "thinking") return chat_template_variant::thinking;
  if (name == "hybrid") return chat_template_variant::hybrid;
  EV_THROW(invalid_input, "chat template variant \"", name, "\": expected \"thinking\" or \"hybrid\"");
}

chat_template_variant detect_chat_template_variant(const std::string& src) {
  // The source spells newlines inside Jinja string literals as the two characters '\' 'n'.
  const bool qwen_turns = src.find("<|im_start|>") != std::string::npos && src.find("</think>") != std::string::npos;
  EV_THROW_IF_NOT_MSG(qwen_turns,
                      "chat template: expected a Qwen3 template (<|im_start|> turns with <think> handling)");
  if (src.find(R"(<|im_start|>assistant\n<think>\n)") != std::string::npos) return chat_template_variant::thinking;
  if (src.find("enable_thinking") != std::string::npos) return chat_template_variant::hybrid;
  EV_THROW(invalid_input,
           "chat template: a Qwen3 template whose generation prompt is neither the Thinking one nor the "
           "enable_thinking switch");
}

chat_template_variant load_chat_template_variant(const std::filesystem::path& config_path) {
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) EV_THROW(not_found, p.string(), ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read(config_path));
  } catch (const nlohmann::json::parse_error& e) {
    EV_THROW(corrupt, config_path.string(), ": not valid JSON: ", e.what());
  }
  auto it = config.find("chat_template");
  if (it != config.end() && it->is_string()) return detect_chat_template_variant(it->get<std::string>());
  if (it != config.end() && it->is_array()) {
    for (const auto& t : *it)
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
        return detect_chat_template_variant(t["template"].get<std::string>());
    EV_THROW(corrupt, config_path.string(), ": chat_template: expected a string or a list with a \"default\" entry");
  }
  const auto jinja = config_path.parent_path() / "chat_template.jinja";
  if (std::filesystem::exists(jinja)) return detect_chat_template_variant(read(jinja));
  EV_THROW(corrupt, config_path.string(), ": chat_template: missing (and no chat_template.jinja beside it)");
}

std::string render_chat(std::span<const chat_message> messages, const chat_template_options& options,
                        std::vector<size_t>* message_ends) {
  EV_THROW_IF_NOT_MSG(!messages.empty(), "chat template: expected at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    EV_THROW_IF_NOT_MSG(r == "system" || r == "user" || r == "assistant" || r == "tool", "chat template: message ", i,
                        ": role \"", r, "\": expected system, user, assistant or tool");
  }
  if (message_ends != nullptr) message_ends->assign(messages.size(), 0);
  const size_t n = messages.size();
  std::string out;

  // {%- if messages[0].role == 'system' %} '<|im_start|>system\n' + content + '<|im_end|>\n'
  if (messages[0].role == "system") out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";

  // The last "real" user query: scanning backwards, the first user message that is not a wrapped tool response.
  size_t last_query_index = n - 1;
  for (size_t k = n; k-- > 0;) {
    const chat_message& m = messages[k];
    if (m.role == "user" && !(starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>"))) {
      last_query_index = k;
      break;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    const chat_message& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      // content.split('</think>')[-1].lstrip('\n') and
      // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
      std::string_view content = m.content;
      std::string_view reasoning;
      const std::string_view full = m.content;
      if (full.find("</think>") != std::string_view::npos) {
        content = lstrip_nl(full.substr(full.rfind("</think>") + 8));
        std::string_view before = rstrip_nl(full.substr(0, full.find("</think>")));
        const size_t open = before.rfind("<think>");
        if (open != std::string_view::npos) before = before.substr(open + 7);
        reasoning = lstrip_nl(before);
      }
      out += "<|im_start|>assistant\n";
      if (i > last_query_index && (i == n - 1 || !reasoning.empty())) {
        out += "<think>\n";
        out += strip_nl(reasoning);
        out += "\n</think>\n\n";
        out += lstrip_nl(content);
      } else {
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i == n - 1 || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }
    if (message_ends != nullptr) (*message_ends)[i] = out.size();
  }

  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (options.variant == chat_template_variant::thinking)
      out += "<think>\n";
    else if (options.enable_thinking.has_value() && !*options.enable_thinking)
      out += "<think>\n\n</think>\n\n";
  }
  return out;
}

}  // namespace evident::engine

// engine::render_chat: the Qwen3 chat template in C++, producing exactly the text the Jinja template in the
// checkpoint's tokenizer_config.json renders (as transformers' apply_chat_template does) for string messages.
//
// Two variants:
//   thinking  Qwen3-Next-80B-A3B-Thinking (and the Qwen3 *-Thinking-2507 models): the generation prompt is always
//             "<|im_start|>assistant\n<think>\n" (the model's reasoning starts inside an open <think> block).
//   hybrid    the original Qwen3 template (the one in ../shared/models/qwen3-tokenizer/tokenizer_config.json): the
//             generation prompt is "<|im_start|>assistant\n", plus an empty "<think>\n\n</think>\n\n" when
//             enable_thinking is false.
// The two agree on everything before the generation prompt:
//   - a first message with role "system" becomes "<|im_start|>system\n{content}<|im_end|>\n"; later system and all
//     user messages become "<|im_start|>{role}\n{content}<|im_end|>\n";
//   - an assistant message's reasoning is given inline as "<think>...</think>answer" in its content (the template
//     splits at the last "</think>"); it is kept, as "<think>\n{reasoning}\n</think>\n\n{answer}", only for assistant
//     turns after the last real user query (the current agentic turn), and dropped from earlier turns;
//   - "tool" messages are wrapped in <tool_response> blocks inside one user turn per run of tool messages.
// Tool definitions and assistant tool_calls are not supported (evident does not use function calling).
//
// Checked against the Jinja renderings in tests/fixtures/tokenizer/chat.jsonl
// (tools/reference/make_tokenizer_fixtures.py). Pure function, thread-safe.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/generator.h"  // engine::chat_message {role, content}

namespace evident::engine {

enum class chat_template_variant {
  thinking,  // Qwen3-Next-80B-A3B-Thinking: generation prompt opens <think>
  hybrid,    // original Qwen3: enable_thinking switch
};

struct chat_template_options {
  bool add_generation_prompt = true;  // end with the assistant's opening
  chat_template_variant variant = chat_template_variant::thinking;
  std::optional<bool> enable_thinking;  // hybrid only; unset behaves as true
};

// Renders the conversation. `message_ends`, when given, receives for each message the byte offset in the returned
// text where that message's rendering ends, its "<|im_end|>\n" included (for prefix-cache boundaries; a tool message
// followed by another tool message ends before the next "\n<tool_response>").
// Throws evident::error (invalid_input) for an empty conversation or a role other than system/user/assistant/tool.
std::string render_chat(std::span<const chat_message> messages, const chat_template_options& options = {},
                        std::vector<size_t>* message_ends = nullptr);

// Parses a variant name ("thinking" | "hybrid"); throws evident::error (invalid_input) otherwise.
chat_template_variant parse_chat_template_variant(const std::string& name);

// Recognises which variant a Jinja chat template (its source text) is: thinking when its generation prompt opens
// "<think>\n", hybrid when it has the enable_thinking switch. Throws evident::error (invalid_input) for a template
// that is not a Qwen3 one (no <|im_start|> turns or no </think> handling): render_chat would not reproduce it.
chat_template_variant detect_chat_template_variant(const std::string& jinja_source);

// Reads a checkpoint's template: `chat_template` of tokenizer_config.json (a string, or a list of {name, template}
// where the one named "default" is used), else chat_template.jinja beside it; then detect_chat_template_variant().
// Throws evident::error naming the file and field when neither holds a template.
chat_template_variant load_chat_template_variant(const std::filesystem::path& tokenizer_config_json);

}  // namespace evident::engine

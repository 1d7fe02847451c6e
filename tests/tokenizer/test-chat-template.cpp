// engine::render_chat against the Jinja chat template rendered by jinja2 the way transformers does
// (tests/fixtures/tokenizer/chat.jsonl, made by tools/reference/make_tokenizer_fixtures.py), and the ids of the
// rendered prompt against the `tokenizers` package.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/chat-template.h"
#include "engine/tokenizer.h"
#include "tests/test-util.h"

namespace {

using namespace evident::engine;
using json = nlohmann::json;

std::vector<json> chat_rows() {
  const auto path = evident::test::source_path("tests/fixtures/tokenizer/chat.jsonl");
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "fixture missing: " << path;
  std::vector<json> rows;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::vector<chat_message> messages_of(const json& row) {
  std::vector<chat_message> m;
  for (const json& j : row["messages"]) m.push_back({j["role"].get<std::string>(), j["content"].get<std::string>()});
  return m;
}

chat_template_options options_of(const json& row) {
  chat_template_options o;
  o.add_generation_prompt = row["add_generation_prompt"].get<bool>();
  o.variant = parse_chat_template_variant(row["variant"].get<std::string>());
  if (row.contains("enable_thinking")) o.enable_thinking = row["enable_thinking"].get<bool>();
  return o;
}

std::string label(const json& row) {
  return row["name"].get<std::string>() + " [" + row["variant"].get<std::string>() +
         ", add_generation_prompt=" + (row["add_generation_prompt"].get<bool>() ? "true" : "false") +
         ", enable_thinking=" + (row.contains("enable_thinking") ? row["enable_thinking"].dump() : "undefined") + "]";
}

TEST(chat_template, renders_exactly_what_the_jinja_template_renders) {
  const auto rows = chat_rows();
  ASSERT_GE(rows.size(), 100u);
  for (const json& row : rows) {
    const auto msgs = messages_of(row);
    EXPECT_EQ(render_chat(msgs, options_of(row)), row["text"].get<std::string>()) << label(row);
  }
}

TEST(chat_template, rendered_prompts_encode_to_reference_ids) {
  const tokenizer tok = tokenizer::from_file(evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json"));
  for (const json& row : chat_rows()) {
    const auto msgs = messages_of(row);
    EXPECT_EQ(tok.encode(render_chat(msgs, options_of(row))), row["ids"].get<std::vector<token_id>>()) << label(row);
  }
}

TEST(chat_template, thinking_generation_prompt_opens_think) {
  const std::vector<chat_message> msgs = {{"user", "hi"}};
  EXPECT_EQ(render_chat(msgs), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST(chat_template, message_ends_mark_each_message) {
  const std::vector<chat_message> msgs = {
      {"system", "S"}, {"user", "U"}, {"assistant", "<think>r</think>A"}, {"user", "V"}};
  std::vector<size_t> ends;
  const std::string text = render_chat(msgs, {}, &ends);
  ASSERT_EQ(ends.size(), 4u);
  EXPECT_EQ(text.substr(0, ends[0]), "<|im_start|>system\nS<|im_end|>\n");
  EXPECT_EQ(text.substr(ends[0], ends[1] - ends[0]), "<|im_start|>user\nU<|im_end|>\n");
  EXPECT_EQ(text.substr(ends[1], ends[2] - ends[1]),
            "<|im_start|>assistant\nA<|im_end|>\n");  // history: reasoning dropped
  EXPECT_EQ(text.substr(ends[2], ends[3] - ends[2]), "<|im_start|>user\nV<|im_end|>\n");
}

TEST(chat_template, detects_the_variant_of_a_checkpoint_template) {
  // The shared tokenizer_config.json carries the hybrid Qwen3 template.
  EXPECT_EQ(load_chat_template_variant(evident::test::shared_path("models/qwen3-tokenizer/tokenizer_config.json")),
            chat_template_variant::hybrid);
  // The Thinking template's generation prompt, as its Jinja source spells it.
  const std::string thinking =
      R"({%- for message in messages %}{{- '<|im_start|>' + message.role }}{%- if '</think>' in )"
      R"(content %}{% endif %}{%- endfor %}{%- if add_generation_prompt %})"
      R"({{- '<|im_start|>assistant\n<think>\n' }}{%- endif %})";
  EXPECT_EQ(detect_chat_template_variant(thinking), chat_template_variant::thinking);
  EXPECT_THROW(detect_chat_template_variant("{{ messages }}"), evident::error);
  const auto dir = evident::test::scratch_dir("chat-template-detect");
  std::ofstream(dir / "tokenizer_config.json") << "{\"eos_token\": \"<|im_end|>\"}";
  EXPECT_THROW(load_chat_template_variant(dir / "tokenizer_config.json"), evident::error);
  std::ofstream(dir / "chat_template.jinja") << thinking;
  EXPECT_EQ(load_chat_template_variant(dir / "tokenizer_config.json"), chat_template_variant::thinking);
}

TEST(chat_template, rejects_empty_conversations_and_unknown_roles) {
  EXPECT_THROW(render_chat(std::vector<chat_message>{}), evident::error);
  try {
    render_chat(std::vector<chat_message>{{"user", "a"}, {"robot", "b"}});
    FAIL() << "no error";
  } catch (const evident::error& e) {
    EXPECT_NE(std::string(e.what()).find("\"robot\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_chat_template_variant("instruct"), evident::error);
}

}  // namespace

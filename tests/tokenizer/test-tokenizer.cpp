// engine::tokenizer against ids from the Hugging Face `tokenizers` package (tests/fixtures/tokenizer/encode.jsonl,
// made by tools/reference/make_tokenizer_fixtures.py with ../shared/models/qwen3-tokenizer/tokenizer.json).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/base/error.h"
#include "engine/tokenizer-split.h"
#include "engine/tokenizer.h"
#include "tests/test-util.h"

namespace {

using evident::engine::incremental_decoder;
using evident::engine::special_mode;
using evident::engine::token_id;
using evident::engine::tokenizer;
using json = nlohmann::json;

struct encode_case {
  std::string text, nfc;
  std::vector<token_id> ids;
};

std::vector<json> read_jsonl(const std::string& rel) {
  const auto path = evident::test::source_path(rel);
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "fixture missing: " << path;
  std::vector<json> rows;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

const std::vector<encode_case>& cases() {
  static const std::vector<encode_case> all = [] {
    std::vector<encode_case> v;
    for (const json& r : read_jsonl("tests/fixtures/tokenizer/encode.jsonl"))
      v.push_back({r["text"].get<std::string>(), r["nfc"].get<std::string>(), r["ids"].get<std::vector<token_id>>()});
    return v;
  }();
  return all;
}

const tokenizer& qwen3() {
  static const tokenizer tok =
      tokenizer::from_file(evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json"));
  return tok;
}

std::string ids_str(const std::vector<token_id>& ids) {
  std::ostringstream os;
  for (size_t i = 0; i < ids.size(); ++i) os << (i ? "," : "") << ids[i];
  return os.str();
}

TEST(tokenizer, fixtures_are_present_and_many) {
  ASSERT_GE(cases().size(), 250u);
}

TEST(tokenizer, loads_qwen3_vocabulary) {
  const tokenizer& tok = qwen3();
  EXPECT_EQ(tok.vocab_size(), 151669u);
  EXPECT_EQ(tok.added_tokens().size(), 26u);
  EXPECT_EQ(tok.find("<|im_start|>"), 151644);
  EXPECT_EQ(tok.find("<|im_end|>"), 151645);
  EXPECT_EQ(tok.find("<think>"), 151667);
  EXPECT_TRUE(tok.is_special(151645));
  EXPECT_FALSE(tok.is_special(151667));  // <think> is an added token but not special in Qwen3
  EXPECT_FALSE(tok.is_special(0));
}

TEST(tokenizer, every_fixture_encodes_to_reference_ids) {
  const tokenizer& tok = qwen3();
  size_t failures = 0;
  for (const auto& c : cases()) {
    const auto ids = tok.encode(c.text);
    if (ids != c.ids) {
      ++failures;
      ADD_FAILURE() << "text " << json(c.text).dump() << "\n  expected " << ids_str(c.ids) << "\n  got      "
                    << ids_str(ids);
    }
    EXPECT_EQ(tok.count(c.text), c.ids.size()) << json(c.text).dump();
  }
  EXPECT_EQ(failures, 0u);
}

TEST(tokenizer, every_fixture_decodes_to_its_nfc_form) {
  const tokenizer& tok = qwen3();
  for (const auto& c : cases()) EXPECT_EQ(tok.decode(c.ids), c.nfc) << json(c.text).dump();
}

// A chunk is valid UTF-8 exactly when lossy conversion leaves it unchanged.
bool valid_utf8(const std::string& s) {
  std::string copy;
  evident::engine::append_utf8_lossy(s, copy);
  return copy == s;
}

TEST(tokenizer, incremental_decoding_equals_full_decoding) {
  const tokenizer& tok = qwen3();
  for (const auto& c : cases()) {
    incremental_decoder dec(tok);
    std::string streamed;
    for (token_id id : c.ids) {
      const std::string piece = dec.push(id);
      EXPECT_TRUE(valid_utf8(piece)) << "split code point while streaming " << json(c.text).dump();
      streamed += piece;
    }
    streamed += dec.finish();
    EXPECT_EQ(streamed, tok.decode(c.ids)) << json(c.text).dump();
  }
}

TEST(tokenizer, incremental_decoder_holds_back_partial_code_points) {
  const tokenizer& tok = qwen3();
  // "😀" is four bytes; in byte tokens the first three must produce nothing, the fourth the whole emoji.
  const std::string emoji = "\xF0\x9F\x98\x80";
  incremental_decoder dec(tok);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(dec.push(tok.find(emoji.substr(i, 1)).value()), "");
  EXPECT_EQ(dec.push(tok.find(emoji.substr(3, 1)).value()), emoji);
  // A truncated sequence at the end of the stream is flushed as one U+FFFD, as full decoding does.
  EXPECT_EQ(dec.push(tok.find(emoji.substr(0, 1)).value()), "");
  EXPECT_EQ(dec.finish(), "\xEF\xBF\xBD");
  const std::vector<token_id> truncated = {tok.find(emoji.substr(0, 1)).value(), tok.find("a").value()};
  EXPECT_EQ(tok.decode(truncated),
            "\xEF\xBF\xBD"
            "a");
}

TEST(tokenizer, decode_can_skip_special_tokens) {
  const tokenizer& tok = qwen3();
  const auto ids = tok.encode("<|im_start|>user\nhi<think>x</think><|im_end|>");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "user\nhi<think>x</think>");
  EXPECT_THROW(tok.decode(std::vector<token_id>{-1}), evident::error);
  EXPECT_THROW(tok.decode(std::vector<token_id>{151669}), evident::error);
}

TEST(tokenizer, as_text_mode_spells_out_added_tokens) {
  const tokenizer& tok = qwen3();
  const std::string text = "a <|im_end|> b <think>";
  const auto ids = tok.encode(text, special_mode::as_text);
  for (token_id id : ids) EXPECT_LT(id, 151643) << "added token id in as_text mode";
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_GT(ids.size(), tok.encode(text).size());
}

TEST(tokenizer, concurrent_encoding_gives_the_same_ids) {
  const tokenizer& tok = qwen3();
  std::vector<std::thread> threads;
  std::vector<size_t> mismatches(4, 0);
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t round = 0; round < 3; ++round)
        for (size_t i = t; i < cases().size() + t; ++i) {
          const auto& c = cases()[i % cases().size()];
          if (tok.encode(c.text) != c.ids) ++mismatches[t];
        }
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0u) << "thread " << t;
}

// --- malformed tokenizer.json ----------------------------------------------------------------------------------------

// A minimal valid byte-level tokenizer: the 256 byte symbols, one merge ("a" "b" -> "ab"), one special token.
json tiny_tokenizer() {
  json vocab = json::object();
  int id = 0;
  // Spell bytes the way GPT-2's table does (printable Latin-1 as themselves, the rest from U+0100 on).
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(char(cp));
    } else {
      s.push_back(char(0xC0 | (cp >> 6)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    }
    vocab[s] = id++;
  }
  vocab["ab"] = id++;
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({json{{"id", id},
                                         {"content", "<|end|>"},
                                         {"special", true},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"single_word", false}}})},
      {"normalizer", json{{"type", "NFC"}}},
      {"pre_tokenizer",
       json{{"type", "Sequence"},
            {"pretokenizers",
             json::array({json{{"type", "Split"},
                               {"pattern", json{{"Regex", "\\p{L}+|\\s+|[^\\s\\p{L}]+"}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                          json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"decoder", json{{"type", "ByteLevel"}}},
      {"model", json{{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({json::array({"a", "b"})})}}},
  };
}

TEST(tokenizer, tiny_tokenizer_loads_and_merges) {
  const tokenizer tok = tokenizer::from_json(tiny_tokenizer().dump());
  EXPECT_EQ(tok.encode("abab<|end|>"), (std::vector<token_id>{256, 256, 257}));
  EXPECT_EQ(tok.decode(tok.encode("xab ab")), "xab ab");
}

// Each malformed variant must fail with an evident::error whose message names the offending field.
TEST(tokenizer, malformed_tokenizer_json_names_the_field) {
  struct bad {
    const char* what;
    std::function<void(json&)> mutate;
    const char* expect_in_message;
  };
  const std::vector<bad> cases = {
      {"not json", nullptr, "not valid JSON"},
      {"no model", [](json& j) { j.erase("model"); }, "model"},
      {"wrong model type", [](json& j) { j["model"]["type"] = "WordPiece"; }, "model.type"},
      {"vocab not object", [](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab"},
      {"negative id", [](json& j) { j["model"]["vocab"]["ab"] = -3; }, "model.vocab[\"ab\"]"},
      {"missing byte", [](json& j) { j["model"]["vocab"].erase("a"); }, "model.vocab"},
      {"merges not array", [](json& j) { j["model"]["merges"] = "a b"; }, "model.merges"},
      {"bad merge", [](json& j) { j["model"]["merges"][0] = 7; }, "model.merges[0]"},
      {"merge result unknown", [](json& j) { j["model"]["merges"][0] = "b a"; }, "model.merges[0]"},
      {"added token without content", [](json& j) { j["added_tokens"][0].erase("content"); },
       "added_tokens[0].content"},
      {"added token id string", [](json& j) { j["added_tokens"][0]["id"] = "x"; }, "added_tokens[0].id"},
      {"bad regex", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
       "pre_tokenizer.pretokenizers[0].pattern.Regex"},
      {"unknown normalizer", [](json& j) { j["normalizer"]["type"] = "Lowercase"; }, "normalizer.type"},
      {"unknown decoder", [](json& j) { j["decoder"]["type"] = "WordPiece"; }, "decoder.type"},
      {"byte fallback", [](json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
  };
  for (const auto& c : cases) {
    std::string text = "{\"model\": ";
    if (c.mutate) {
      json j = tiny_tokenizer();
      c.mutate(j);
      text = j.dump();
    }
    try {
      (void)tokenizer::from_json(text, "bad.json");
      ADD_FAILURE() << c.what << ": no error";
    } catch (const evident::error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("bad.json"), std::string::npos) << c.what << ": " << msg;
      EXPECT_NE(msg.find(c.expect_in_message), std::string::npos) << c.what << ": " << msg;
      EXPECT_EQ(e.kind(), evident::error_kind::corrupt) << c.what;
    }
  }
}

TEST(tokenizer, missing_file_is_not_found) {
  try {
    (void)tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL() << "no error";
  } catch (const evident::error& e) {
    EXPECT_EQ(e.kind(), evident::error_kind::not_found);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json"), std::string::npos);
  }
}

}  // namespace

// --- the hand-written Qwen3 splitter against ICU regex
// -----------------------------------------------------------------

// Random strings over characters chosen to hit every branch and class boundary of the split pattern: letters of several
// scripts, numbers of every N category, each kind of white space (incl. \v, \f, U+0085, U+00A0, U+2028, U+3000) and
// non-white controls (U+001C..U+001F, U+200B, U+FEFF), combining marks (neither L nor N), contraction letters
// including U+017F (folds to s), emoji, and invalid UTF-8 bytes (replaced by U+FFFD before splitting).
TEST(tokenizer, fast_splitter_matches_icu_regex) {
  const auto path = evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json");
  const tokenizer& fast = qwen3();
  evident::engine::tokenizer_options opts;
  opts.force_icu_regex = true;
  const tokenizer icu = tokenizer::from_file(path, opts);
  for (const auto& c : cases()) EXPECT_EQ(icu.encode(c.text), c.ids) << "ICU path: " << json(c.text).dump();

  const std::vector<std::string> pool = {"a",
                                         "Z",
                                         "s",
                                         "S",
                                         "t",
                                         "T",
                                         "r",
                                         "R",
                                         "e",
                                         "E",
                                         "v",
                                         "V",
                                         "m",
                                         "M",
                                         "l",
                                         "L",
                                         "d",
                                         "D",
                                         "\xC5\xBF",
                                         "'",
                                         "'",
                                         "\xE2\x80\x99",
                                         "0",
                                         "7",
                                         "\xC2\xB2",
                                         "\xC2\xBD",
                                         "\xE2\x85\xAB",
                                         "\xD9\xA3",
                                         " ",
                                         " ",
                                         " ",
                                         "\t",
                                         "\n",
                                         "\n",
                                         "\r",
                                         "\x0B",
                                         "\x0C",
                                         "\x1C",
                                         "\x1F",
                                         "\xC2\x85",
                                         "\xC2\xA0",
                                         "\xE1\x9A\x80",
                                         "\xE2\x80\x83",
                                         "\xE2\x80\xA8",
                                         "\xE2\x80\xA9",
                                         "\xE3\x80\x80",
                                         "\xE2\x80\x8B",
                                         "\xEF\xBB\xBF",
                                         "\xCC\x81",
                                         "\xE0\xA4\xBE",
                                         "\xE2\x83\x9D",
                                         "\xD0\x96",
                                         "\xCE\xBB",
                                         "\xE4\xB8\xAD",
                                         "\xE0\xB8\x81",
                                         "\xD8\xB9",
                                         "\xF0\x9F\x98\x80",
                                         "\xE2\x80\x8D",
                                         "\xEF\xB8\x8F",
                                         "!",
                                         ".",
                                         ",",
                                         "-",
                                         "_",
                                         "(",
                                         "<",
                                         "$",
                                         "#",
                                         "\xFF",
                                         "\x80",
                                         "\xE4\xB8",
                                         "<|im_end|>",
                                         "<think>"};
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  size_t mismatches = 0;
  for (int k = 0; k < 4000 && mismatches < 10; ++k) {
    std::string s;
    const size_t len = 1 + next() % 24;
    for (size_t i = 0; i < len; ++i) s += pool[next() % pool.size()];
    const auto a = fast.encode(s), b = icu.encode(s);
    if (a != b) {
      ++mismatches;
      ADD_FAILURE() << "text " << json(s).dump(-1, ' ', false, json::error_handler_t::replace) << "\n  fast "
                    << ids_str(a) << "\n  icu  " << ids_str(b);
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(tokenizer, splitting_in_batches_gives_the_same_pieces) {
  std::string all;
  for (const auto& c : cases()) all += c.nfc + "\n";
  std::vector<uint32_t> one, batched;
  evident::engine::split_qwen3(all, 0, one);
  uint32_t from = 0;
  while (from < all.size()) {
    const size_t before = batched.size();
    evident::engine::split_qwen3(all, from, batched, 7);
    ASSERT_GT(batched.size(), before);
    from = batched.back();
  }
  EXPECT_EQ(batched, one);
  EXPECT_EQ(one.back(), all.size());
}

TEST(tokenizer, count_of_a_long_text_equals_the_number_of_ids) {
  // Long enough for many batches of pieces in both modes.
  std::string all;
  for (int r = 0; r < 3; ++r)
    for (const auto& c : cases()) all += c.text + "\n";
  const tokenizer& tok = qwen3();
  EXPECT_EQ(tok.count(all), tok.encode(all).size());
  EXPECT_EQ(tok.count(all, special_mode::as_text), tok.encode(all, special_mode::as_text).size());
}

// --- added-token flags ---------------------------------------------------------------------------------------------

// The Qwen3 tokenizer plus extra added tokens with lstrip / rstrip / single_word / normalized set, against the ids the
// `tokenizers` package gives for the same tokenizer (tests/fixtures/tokenizer/flags.json).
TEST(tokenizer, added_token_flags_match_the_reference) {
  const auto fixture_path = evident::test::source_path("tests/fixtures/tokenizer/flags.json");
  std::ifstream fin(fixture_path);
  ASSERT_TRUE(fin.good()) << "fixture missing: " << fixture_path;
  const json fixture = json::parse(fin);
  std::ifstream tin(evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json"));
  ASSERT_TRUE(tin.good());
  json tj = json::parse(tin);
  for (const json& t : fixture["added_tokens"]) tj["added_tokens"].push_back(t);
  const tokenizer tok = tokenizer::from_json(tj.dump(), "tokenizer.json + flags.json");
  ASSERT_GE(fixture["cases"].size(), 40u);
  for (const json& c : fixture["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<token_id>>();
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids, expected) << json(text).dump() << "\n  expected " << ids_str(expected) << "\n  got      "
                             << ids_str(ids);
  }
}

// --- real prose at scale -------------------------------------------------------------------------------------------

// Every document of the shared BEIR SciFact corpus (5183 abstracts, 7.8 MB), encoded one by one as the chunker does,
// against digests of the reference ids (tests/fixtures/tokenizer/corpus-digest.json): FNV-1a-64 over the ids as
// little-endian uint32, a 0xFFFFFFFF separator after each document, one digest per block of 100 documents.
TEST(tokenizer, scifact_corpus_matches_reference_digests) {
  std::ifstream din(evident::test::source_path("tests/fixtures/tokenizer/corpus-digest.json"));
  ASSERT_TRUE(din.good()) << "fixture missing: corpus-digest.json";
  const json digest = json::parse(din);
  std::ifstream cin(evident::test::shared_path(digest["source"].get<std::string>()));
  ASSERT_TRUE(cin.good());
  const tokenizer& tok = qwen3();
  const size_t block = digest["block"].get<size_t>();
  auto fnv = [](uint64_t h, uint32_t v) {
    for (int b = 0; b < 4; ++b) h = (h ^ ((v >> (8 * b)) & 0xFF)) * 0x100000001B3ull;
    return h;
  };
  std::vector<std::string> got;
  uint64_t h = 0xCBF29CE484222325ull;
  size_t docs = 0, tokens = 0;
  std::string line;
  std::vector<token_id> ids;
  auto close_block = [&] {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    got.push_back(hex);
    h = 0xCBF29CE484222325ull;
  };
  while (std::getline(cin, line)) {
    const json d = json::parse(line);
    ids.clear();
    tok.encode_into(d.value("title", "") + "\n" + d.value("text", ""), ids);
    for (token_id id : ids) h = fnv(h, uint32_t(id));
    h = fnv(h, 0xFFFFFFFFu);
    tokens += ids.size();
    if (++docs % block == 0) close_block();
  }
  if (docs % block != 0) close_block();
  EXPECT_EQ(docs, digest["documents"].get<size_t>());
  EXPECT_EQ(tokens, digest["tokens"].get<size_t>());
  const auto expected = digest["fnv1a64"].get<std::vector<std::string>>();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t b = 0; b < got.size(); ++b)
    EXPECT_EQ(got[b], expected[b]) << "documents " << b * block << ".." << (b + 1) * block - 1 << " differ";
}

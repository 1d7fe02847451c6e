// Loading tokenizer.json and the encode pipeline (added tokens -> NFC -> split regex -> BPE); see engine/tokenizer.h.
#include "engine/tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "engine/base/error.h"
#include "engine/tokenizer-bpe.h"
#include "engine/tokenizer-split.h"

namespace evident::engine {

using json = nlohmann::json;

namespace {

// GPT-2's byte <-> printable code point table: bytes that are printable Latin-1 map to themselves, the other 68 bytes
// map to U+0100.. in byte order. The vocabulary spells every token in these code points.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next++;
  }
  return map;
}

// Field-checked access into tokenizer.json; every failure names the field path.
struct json_reader {
  std::string origin;

  [[noreturn]] void fail(const std::string& field, const std::string& expected, const json* found) const {
    std::string what = found == nullptr ? "missing" : std::string("found ") + found->type_name();
    if (found != nullptr && found->is_string()) what = "found \"" + found->get<std::string>() + "\"";
    EV_THROW(corrupt, origin, ": ", field, ": expected ", expected, ", ", what);
  }
  const json& get(const json& obj, const char* key, const std::string& path) const {
    auto it = obj.find(key);
    if (it == obj.end()) fail(path, "a value", nullptr);
    return *it;
  }
  std::string str(const json& obj, const char* key, const std::string& path) const {
    const json& v = get(obj, key, path);
    if (!v.is_string()) fail(path, "a string", &v);
    return v.get<std::string>();
  }
  bool flag(const json& obj, const char* key, const std::string& path, bool def) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_boolean()) fail(path, "true or false", &*it);
    return it->get<bool>();
  }
};

// Decodes one code point at `i` (advancing i); returns -1 for an invalid sequence (i advances past it).
inline int32_t next_codepoint(std::string_view s, size_t& i) {
  int32_t c;
  int32_t idx = int32_t(i);
  U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), idx, int32_t(s.size()), c);
  i = size_t(idx);
  return c;
}

inline int32_t prev_codepoint(std::string_view s, size_t& i) {
  int32_t c;
  int32_t idx = int32_t(i);
  U8_PREV(reinterpret_cast<const uint8_t*>(s.data()), 0, idx, c);
  i = size_t(idx);
  return c;
}

bool is_word_char(int32_t c) {
  return c == '_' || (c >= 0 && u_isalnum(c));
}
bool is_space(int32_t c) {
  return c >= 0 && u_isUWhiteSpace(c);
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const int32_t n = int32_t(s.size());
  for (int32_t i = 0; i < n;) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    int32_t c;
    U8_NEXT(p, i, n, c);
    if (c < 0) return false;
  }
  return true;
}

bool all_ascii(std::string_view s) {
  for (char ch : s)
    if (uint8_t(ch) >= 0x80) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------
struct tokenizer::impl {
  bpe_model bpe;
  std::vector<std::string> id_bytes;                     // id -> raw bytes (added tokens: their content)
  std::vector<uint8_t> id_state;                         // 0 unassigned, 1 vocabulary, 2 added, 3 added + special
  std::unordered_map<std::string, token_id> text_to_id;  // vocabulary (raw bytes) and added-token contents
  std::vector<added_token> added;

  // Added-token matching: tokens grouped by first byte, longest first (leftmost-longest like the reference).
  struct matcher {
    std::array<std::vector<uint32_t>, 256> by_first_byte;  // indices into `added`
    std::array<bool, 256> is_first{};
    std::vector<std::string> content;  // per index into `added`: the text matched (NFC for normalized tokens)
    bool empty = true;
  };
  matcher raw_matcher;         // normalized == false: matched before normalisation
  matcher normalized_matcher;  // normalized == true: matched in the NFC text

  const icu::Normalizer2* nfc = nullptr;                      // null: no normaliser
  std::vector<std::unique_ptr<icu::RegexPattern>> splitters;  // applied in order; "Isolated" behaviour
  std::vector<std::string> splitter_patterns;                 // their source text
  bool fast_split = false;  // the one splitter is the Qwen3 pattern: use split_qwen3 instead of ICU regex

  // Regex matchers are not thread-safe; a small pool hands one to each concurrent encode.
  mutable std::mutex pool_mu;
  mutable std::vector<std::vector<std::unique_ptr<icu::RegexMatcher>>> pool;  // pool[k]: matchers of splitters[k]

  std::unique_ptr<icu::RegexMatcher> take_matcher(size_t k) const {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!pool[k].empty()) {
        auto m = std::move(pool[k].back());
        pool[k].pop_back();
        return m;
      }
    }
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> m(splitters[k]->matcher(status));
    EV_THROW_IF_NOT_KIND(U_SUCCESS(status), internal,
                         "tokenizer: cannot create a regex matcher: ", u_errorName(status));
    return m;
  }
  void give_matcher(size_t k, std::unique_ptr<icu::RegexMatcher> m) const {
    std::lock_guard<std::mutex> lock(pool_mu);
    if (pool[k].size() < 64) pool[k].push_back(std::move(m));
  }

  void build_matchers() {
    raw_matcher.content.assign(added.size(), std::string());
    normalized_matcher.content.assign(added.size(), std::string());
    for (uint32_t i = 0; i < added.size(); ++i) {
      if (added[i].content.empty()) continue;
      matcher& m = added[i].normalized ? normalized_matcher : raw_matcher;
      // A normalized token is looked for in normalised text, so its own content is normalised too.
      std::string text = added[i].content;
      if (added[i].normalized && nfc != nullptr) {
        UErrorCode status = U_ZERO_ERROR;
        text.clear();
        icu::StringByteSink<std::string> sink(&text);
        nfc->normalizeUTF8(0, icu::StringPiece(added[i].content), sink, nullptr, status);
        EV_THROW_IF_NOT_KIND(U_SUCCESS(status), internal, "tokenizer: NFC normalisation failed: ", u_errorName(status));
      }
      m.content[i] = text;
      const uint8_t b = uint8_t(text[0]);
      m.by_first_byte[b].push_back(i);
      m.is_first[b] = true;
      m.empty = false;
    }
    for (matcher* m : {&raw_matcher, &normalized_matcher})
      for (auto& list : m->by_first_byte)
        std::stable_sort(list.begin(), list.end(),
                         [&](uint32_t a, uint32_t b) { return m->content[a].size() > m->content[b].size(); });
  }

  // Splits `text` at added tokens of matcher `m`: calls gap(string_view) for text between matches and
  // token(id) for each match, in order.
  template <typename Gap, typename Token>
  void split_added(std::string_view text, const matcher& m, Gap&& gap, Token&& token) const {
    if (m.empty) {
      gap(text);
      return;
    }
    size_t emitted = 0;  // text[0, emitted) has been handed out
    size_t pos = 0;
    while (pos < text.size()) {
      if (!m.is_first[uint8_t(text[pos])]) {
        ++pos;
        continue;
      }
      // The longest token matching here (candidates are sorted longest first).
      const added_token* hit = nullptr;
      for (uint32_t idx : m.by_first_byte[uint8_t(text[pos])]) {
        const std::string& c = m.content[idx];
        if (text.size() - pos >= c.size() && std::memcmp(text.data() + pos, c.data(), c.size()) == 0) {
          hit = &added[idx];
          break;
        }
      }
      if (hit == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + m.content[size_t(hit - added.data())].size();
      if (hit->single_word) {
        // A rejected match is skipped as a whole, like the reference's non-overlapping match iterator does: no
        // shorter token is tried at this position and no match starts inside it.
        size_t before = start, after = stop;
        if ((before > 0 && is_word_char(prev_codepoint(text, before))) ||
            (after < text.size() && is_word_char(next_codepoint(text, after)))) {
          pos = stop;
          continue;
        }
      }
      if (hit->lstrip) {
        while (start > emitted) {
          size_t p = start;
          if (!is_space(prev_codepoint(text, p))) break;
          start = p;
        }
      }
      if (hit->rstrip) {
        while (stop < text.size()) {
          size_t p = stop;
          if (!is_space(next_codepoint(text, p))) break;
          stop = p;
        }
      }
      if (start > emitted) gap(text.substr(emitted, start - emitted));
      token(hit->id);
      emitted = pos = stop;
    }
    if (emitted < text.size()) gap(text.substr(emitted));
  }

  // Pre-tokenises one normalised stretch (UTF-16) and runs BPE on each piece.
  void split_and_merge(const icu::UnicodeString& u, std::vector<token_id>& out) const {
    std::string piece;
    auto emit = [&](int32_t start, int32_t end) {
      piece.clear();
      icu::StringByteSink<std::string> sink(&piece);
      u.tempSubStringBetween(start, end).toUTF8(sink);
      bpe.encode_piece(piece, out);
    };
    if (splitters.empty()) {
      emit(0, u.length());
      return;
    }
    split_level(0, u, 0, u.length(), emit);
  }

  template <typename Emit>
  void split_level(size_t k, const icu::UnicodeString& u, int32_t begin, int32_t end, Emit& emit) const {
    if (begin >= end) return;
    if (k == splitters.size()) {
      emit(begin, end);
      return;
    }
    auto m = take_matcher(k);
    UErrorCode status = U_ZERO_ERROR;
    m->reset(u);
    if (begin != 0 || end != u.length()) m->region(begin, end, status);
    int32_t last = begin;
    while (m->find(status) && U_SUCCESS(status)) {
      const int32_t s = m->start(status), e = m->end(status);
      if (e == s) continue;  // an empty match splits nothing
      if (s > last) split_level(k + 1, u, last, s, emit);
      split_level(k + 1, u, s, e, emit);
      last = e;
    }
    if (U_FAILURE(status)) {
      give_matcher(k, std::move(m));
      EV_THROW(internal, "tokenizer: pre-tokenizer regex failed: ", u_errorName(status));
    }
    if (last < end) split_level(k + 1, u, last, end, emit);
    m->reset(icu::UnicodeString());  // drop the reference to `u` before pooling
    give_matcher(k, std::move(m));
  }

  // Pre-tokenises one normalised stretch (UTF-8) and runs BPE on each piece. The fast splitter works through the text
  // a bounded number of pieces at a time (memory stays flat on a text of hundreds of MB); when `counted` is given,
  // ids are counted and dropped after each batch instead of accumulating in `out`.
  void split_and_merge(std::string_view text, std::vector<token_id>& out, size_t* counted) const {
    if (fast_split) {
      constexpr size_t kBatch = 4096;
      thread_local std::vector<uint32_t> ends;
      uint32_t begin = 0;
      while (begin < text.size()) {
        ends.clear();
        split_qwen3(text, begin, ends, kBatch);
        for (uint32_t end : ends) {
          bpe.encode_piece(text.substr(begin, end - begin), out);
          begin = end;
        }
        if (counted != nullptr) {
          *counted += out.size();
          out.clear();
        }
      }
      return;
    }
    split_and_merge(icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), int32_t(text.size()))), out);
    if (counted != nullptr) {
      *counted += out.size();
      out.clear();
    }
  }

  // One stretch of text between raw-matched added tokens: normalise, then normalized added tokens, then split + BPE.
  void encode_gap(std::string_view gap, std::vector<token_id>& out, special_mode mode, size_t* counted) const {
    std::string normalized;
    if (nfc != nullptr && !all_ascii(gap)) {  // ASCII is always NFC
      UErrorCode status = U_ZERO_ERROR;
      const icu::StringPiece sp(gap.data(), int32_t(gap.size()));
      if (!nfc->isNormalizedUTF8(sp, status)) {
        icu::StringByteSink<std::string> sink(&normalized);
        nfc->normalizeUTF8(0, sp, sink, nullptr, status);
        gap = normalized;
      }
      EV_THROW_IF_NOT_KIND(U_SUCCESS(status), internal, "tokenizer: NFC normalisation failed: ", u_errorName(status));
    }
    if (normalized_matcher.empty || mode == special_mode::as_text) {
      split_and_merge(gap, out, counted);
      return;
    }
    split_added(
        gap, normalized_matcher, [&](std::string_view g) { split_and_merge(g, out, counted); },
        [&](token_id id) { out.push_back(id); });
  }

  // Appends the ids of `text` to `out`; with `counted`, adds their number to *counted instead (out is scratch space).
  void encode(std::string_view text, std::vector<token_id>& out, special_mode mode, size_t* counted = nullptr) const {
    EV_THROW_IF_NOT_MSG(text.size() < (size_t(1) << 31), "tokenizer: text of ", text.size(),
                        " bytes: expected less than 2 GiB per call (split larger texts, e.g. at paragraphs)");
    // Invalid UTF-8 is replaced by U+FFFD first, so every later stage sees valid text.
    std::string sanitized;
    if (!valid_utf8(text)) {
      append_utf8_lossy(text, sanitized);
      text = sanitized;
    }
    encode_valid(text, out, mode, counted);
    if (counted != nullptr) {
      *counted += out.size();
      out.clear();
    }
  }

  void encode_valid(std::string_view text, std::vector<token_id>& out, special_mode mode, size_t* counted) const {
    if (mode == special_mode::as_text) {
      encode_gap(text, out, mode, counted);
      return;
    }
    split_added(
        text, raw_matcher, [&](std::string_view g) { encode_gap(g, out, mode, counted); },
        [&](token_id id) { out.push_back(id); });
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// Loading

namespace {

void load_normalizer(const json& j, const json_reader& r, const std::string& path, const icu::Normalizer2*& nfc) {
  if (j.is_null()) return;
  if (!j.is_object()) r.fail(path, "an object or null", &j);
  const std::string type = r.str(j, "type", path + ".type");
  if (type == "NFC") {
    UErrorCode status = U_ZERO_ERROR;
    nfc = icu::Normalizer2::getNFCInstance(status);
    EV_THROW_IF_NOT_KIND(U_SUCCESS(status), internal, "ICU: cannot load the NFC normaliser: ", u_errorName(status));
  } else if (type == "Sequence") {
    const json& list = r.get(j, "normalizers", path + ".normalizers");
    if (!list.is_array()) r.fail(path + ".normalizers", "an array", &list);
    for (size_t i = 0; i < list.size(); ++i)
      load_normalizer(list[i], r, path + ".normalizers[" + std::to_string(i) + "]", nfc);
  } else {
    r.fail(path + ".type", "\"NFC\" or \"Sequence\" (the normalisers this tokenizer implements)", &j["type"]);
  }
}

void load_pre_tokenizer(const json& j, const json_reader& r, const std::string& path,
                        std::vector<std::unique_ptr<icu::RegexPattern>>& splitters,
                        std::vector<std::string>& patterns) {
  if (j.is_null()) return;
  if (!j.is_object()) r.fail(path, "an object or null", &j);
  const std::string type = r.str(j, "type", path + ".type");
  auto compile = [&](const std::string& pattern, const std::string& field) {
    UErrorCode status = U_ZERO_ERROR;
    UParseError perr{};
    std::unique_ptr<icu::RegexPattern> p(
        icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), 0, perr, status));
    if (U_FAILURE(status))
      EV_THROW(corrupt, r.origin, ": ", field, ": ICU cannot compile the regex (", u_errorName(status), " at offset ",
               perr.offset, ")");
    splitters.push_back(std::move(p));
    patterns.push_back(pattern);
  };
  if (type == "Sequence") {
    const json& list = r.get(j, "pretokenizers", path + ".pretokenizers");
    if (!list.is_array()) r.fail(path + ".pretokenizers", "an array", &list);
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_tokenizer(list[i], r, path + ".pretokenizers[" + std::to_string(i) + "]", splitters, patterns);
  } else if (type == "Split") {
    const json& pat = r.get(j, "pattern", path + ".pattern");
    if (!pat.is_object() || !pat.contains("Regex") || !pat["Regex"].is_string())
      r.fail(path + ".pattern", "an object {\"Regex\": string}", &pat);
    const std::string behavior = r.str(j, "behavior", path + ".behavior");
    if (behavior != "Isolated") r.fail(path + ".behavior", "\"Isolated\"", &j["behavior"]);
    if (r.flag(j, "invert", path + ".invert", false)) r.fail(path + ".invert", "false", &j["invert"]);
    compile(pat["Regex"].get<std::string>(), path + ".pattern.Regex");
  } else if (type == "ByteLevel") {
    if (r.flag(j, "add_prefix_space", path + ".add_prefix_space", false))
      r.fail(path + ".add_prefix_space", "false", &j["add_prefix_space"]);
    // With use_regex, ByteLevel splits with GPT-2's pattern before mapping bytes.
    if (r.flag(j, "use_regex", path + ".use_regex", true))
      compile(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", path);
  } else {
    r.fail(path + ".type", "\"Split\", \"ByteLevel\" or \"Sequence\"", &j["type"]);
  }
}

}  // namespace

tokenizer tokenizer::from_json(std::string_view json_text, std::string_view origin, const tokenizer_options& options) {
  json_reader r{std::string(origin)};
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::parse_error& e) {
    EV_THROW(corrupt, origin, ": not valid JSON: ", e.what());
  }
  if (!root.is_object()) r.fail("(top level)", "an object", &root);

  auto p = std::make_unique<impl>();
  const json& model = r.get(root, "model", "model");
  if (!model.is_object()) r.fail("model", "an object", &model);
  const std::string type = r.str(model, "type", "model.type");
  if (type != "BPE") r.fail("model.type", "\"BPE\"", &model["type"]);
  if (r.flag(model, "byte_fallback", "model.byte_fallback", false))
    r.fail("model.byte_fallback", "false", &model["byte_fallback"]);
  if (model.contains("dropout") && !model["dropout"].is_null())
    r.fail("model.dropout", "null (no BPE dropout)", &model["dropout"]);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      r.fail(std::string("model.") + key, "null or \"\"", &*it);
  }
  if (r.flag(model, "ignore_merges", "model.ignore_merges", false))
    r.fail("model.ignore_merges", "false", &model["ignore_merges"]);

  // Vocabulary: byte-level strings -> raw bytes.
  const auto cp_of_byte = byte_to_codepoint();
  std::array<int16_t, 512> byte_of_cp;
  byte_of_cp.fill(-1);
  for (int b = 0; b < 256; ++b) byte_of_cp[cp_of_byte[size_t(b)]] = int16_t(b);

  const json& vocab = r.get(model, "vocab", "model.vocab");
  if (!vocab.is_object() || vocab.empty()) r.fail("model.vocab", "a non-empty object {token: id}", &vocab);
  int64_t max_id = -1;
  std::unordered_map<std::string_view, token_id> spelled;  // vocabulary key as spelled in the file -> id
  spelled.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > (1 << 24))
      r.fail("model.vocab[\"" + it.key() + "\"]", "an id in [0, 2^24]", &it.value());
    max_id = std::max(max_id, it.value().get<int64_t>());
    spelled.emplace(std::string_view(it.key()), token_id(it.value().get<int64_t>()));
  }
  const json& added_json = r.get(root, "added_tokens", "added_tokens");
  if (!added_json.is_array()) r.fail("added_tokens", "an array", &added_json);
  for (size_t i = 0; i < added_json.size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    const json& a = added_json[i];
    if (!a.is_object()) r.fail(path, "an object", &a);
    const json& id = r.get(a, "id", path + ".id");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      r.fail(path + ".id", "an id in [0, 2^24]", &id);
    added_token t;
    t.id = token_id(id.get<int64_t>());
    t.content = r.str(a, "content", path + ".content");
    if (t.content.empty()) r.fail(path + ".content", "a non-empty string", &a["content"]);
    t.special = r.flag(a, "special", path + ".special", false);
    t.lstrip = r.flag(a, "lstrip", path + ".lstrip", false);
    t.rstrip = r.flag(a, "rstrip", path + ".rstrip", false);
    t.normalized = r.flag(a, "normalized", path + ".normalized", !t.special);
    t.single_word = r.flag(a, "single_word", path + ".single_word", false);
    max_id = std::max<int64_t>(max_id, t.id);
    p->added.push_back(std::move(t));
  }

  p->text_to_id.reserve(vocab.size() + p->added.size());
  p->id_bytes.assign(size_t(max_id + 1), std::string());
  p->id_state.assign(size_t(max_id + 1), 0);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string& key = it.key();
    std::string bytes;
    bytes.reserve(key.size());
    for (size_t i = 0; i < key.size();) {
      const int32_t cp = next_codepoint(key, i);
      if (cp < 0 || cp >= int32_t(byte_of_cp.size()) || byte_of_cp[size_t(cp)] < 0)
        EV_THROW(corrupt, origin, ": model.vocab[\"", key,
                 "\"]: expected a byte-level token (every character one of the 256 byte symbols)");
      bytes.push_back(char(byte_of_cp[size_t(cp)]));
    }
    const auto id = size_t(it.value().get<int64_t>());
    if (p->id_state[id] != 0) EV_THROW(corrupt, origin, ": model.vocab: id ", id, " is assigned twice");
    p->id_state[id] = 1;
    p->id_bytes[id] = bytes;
    p->text_to_id.emplace(std::move(bytes), token_id(id));
  }
  for (int b = 0; b < 256; ++b) {
    auto it = p->text_to_id.find(std::string(1, char(b)));
    if (it == p->text_to_id.end())
      EV_THROW(corrupt, origin, ": model.vocab: expected a token for every byte, byte 0x", std::hex, b, " has none");
    p->bpe.set_byte_token(uint8_t(b), it->second);
  }
  for (const added_token& t : p->added) {
    const auto id = size_t(t.id);
    if (p->id_state[id] == 1 && p->id_bytes[id] != t.content)
      EV_THROW(corrupt, origin, ": added_tokens: id ", id, " (\"", t.content,
               "\") is already a different vocabulary token");
    p->id_state[id] = t.special ? 3 : 2;
    p->id_bytes[id] = t.content;
    p->text_to_id[t.content] = t.id;
  }

  // Merges: "left right" strings (older files) or [left, right] pairs; rank = position. They are spelled like the
  // vocabulary keys, so they are looked up by spelling (no conversion to bytes, no allocation per merge).
  const json& merges = r.get(model, "merges", "model.merges");
  if (!merges.is_array()) r.fail("model.merges", "an array", &merges);
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    auto field = [&] { return "model.merges[" + std::to_string(i) + "]"; };
    std::string_view left, right;
    if (m.is_string()) {
      const std::string_view sv = m.get_ref<const std::string&>();
      const size_t sp = sv.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 >= sv.size() ||
          sv.find(' ', sp + 1) != std::string_view::npos)
        r.fail(field(), "\"left right\"", &m);
      left = sv.substr(0, sp);
      right = sv.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get_ref<const std::string&>();
      right = m[1].get_ref<const std::string&>();
    } else {
      r.fail(field(), "\"left right\" or [left, right]", &m);
    }
    joined.assign(left).append(right);
    auto l = spelled.find(left), rr = spelled.find(right), mm = spelled.find(joined);
    if (l == spelled.end() || rr == spelled.end() || mm == spelled.end())
      EV_THROW(corrupt, origin, ": ", field(), ": expected both parts and their concatenation in model.vocab, found \"",
               left, "\" \"", right, "\"");
    p->bpe.add_merge(l->second, rr->second, mm->second, int32_t(i));
  }
  p->bpe.finalize();

  load_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), r, "normalizer", p->nfc);
  load_pre_tokenizer(r.get(root, "pre_tokenizer", "pre_tokenizer"), r, "pre_tokenizer", p->splitters,
                     p->splitter_patterns);
  p->fast_split =
      !options.force_icu_regex && p->splitter_patterns.size() == 1 && p->splitter_patterns[0] == kQwen3SplitPattern;
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    const std::string dtype = r.str(root["decoder"], "type", "decoder.type");
    if (dtype != "ByteLevel") r.fail("decoder.type", "\"ByteLevel\"", &root["decoder"]["type"]);
  }
  p->pool.resize(p->splitters.size());
  p->build_matchers();
  return tokenizer(std::move(p));
}

tokenizer tokenizer::from_file(const std::filesystem::path& path, const tokenizer_options& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) EV_THROW(not_found, path.string(), ": tokenizer file not found");
    EV_THROW(io, path.string(), ": cannot open the tokenizer file");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path.string(), options);
}

tokenizer::tokenizer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

// ---------------------------------------------------------------------------------------------------------------------
// Encoding and decoding

std::vector<token_id> tokenizer::encode(std::string_view text, special_mode mode) const {
  std::vector<token_id> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode(text, out, mode);
  return out;
}

void tokenizer::encode_into(std::string_view text, std::vector<token_id>& out, special_mode mode) const {
  impl_->encode(text, out, mode);
}

size_t tokenizer::count(std::string_view text, special_mode mode) const {
  // Holds one batch of pieces' ids at a time on the fast splitter's path; the ICU splitter's path fills it with a whole
  // gap's ids, so a buffer grown past 1M ids is released rather than pinned to the thread.
  thread_local std::vector<token_id> scratch;
  scratch.clear();
  size_t n = 0;
  impl_->encode(text, scratch, mode, &n);
  if (scratch.capacity() > (1u << 20)) std::vector<token_id>().swap(scratch);
  return n;
}

std::string_view tokenizer::token_bytes(token_id id) const {
  if (id < 0 || size_t(id) >= impl_->id_bytes.size() || impl_->id_state[size_t(id)] == 0)
    EV_THROW(invalid_input, "token id ", id, ": expected an id assigned in the vocabulary (0..", vocab_size() - 1, ")");
  return impl_->id_bytes[size_t(id)];
}

bool tokenizer::is_special(token_id id) const {
  return id >= 0 && size_t(id) < impl_->id_state.size() && impl_->id_state[size_t(id)] == 3;
}

std::string tokenizer::decode(std::span<const token_id> ids, bool skip_special) const {
  std::string bytes;
  for (token_id id : ids) {
    const std::string_view b = token_bytes(id);
    if (skip_special && is_special(id)) continue;
    bytes.append(b);
  }
  std::string out;
  out.reserve(bytes.size());
  append_utf8_lossy(bytes, out);
  return out;
}

std::optional<token_id> tokenizer::find(std::string_view token_text) const {
  auto it = impl_->text_to_id.find(std::string(token_text));
  if (it == impl_->text_to_id.end()) return std::nullopt;
  return it->second;
}

size_t tokenizer::vocab_size() const {
  return impl_->id_bytes.size();
}
const std::vector<added_token>& tokenizer::added_tokens() const {
  return impl_->added;
}

size_t append_utf8_lossy(std::string_view s, std::string& out, bool keep_incomplete_tail) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const uint8_t c = uint8_t(s[i]);
    if (c < 0x80) {
      out.push_back(char(c));
      ++i;
      continue;
    }
    // Expected length and the valid range of the second byte (Unicode Table 3-7, well-formed UTF-8).
    size_t len = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c == 0xE0)
      len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC)
      len = 3;
    else if (c == 0xED)
      len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF)
      len = 3;
    else if (c == 0xF0)
      len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
      len = 4;
    else if (c == 0xF4)
      len = 4, hi = 0x8F;
    if (len == 0) {  // a continuation byte or an impossible lead byte: one replacement for this byte
      out.append(kReplacement);
      ++i;
      continue;
    }
    size_t j = 1;  // bytes of the maximal valid prefix
    while (j < len && i + j < n) {
      const uint8_t b = uint8_t(s[i + j]);
      const uint8_t l = j == 1 ? lo : 0x80, h = j == 1 ? hi : 0xBF;
      if (b < l || b > h) break;
      ++j;
    }
    if (j == len) {
      out.append(s.substr(i, len));
      i += len;
    } else if (i + j == n && keep_incomplete_tail) {
      return n - i;  // a valid but unfinished sequence at the end: the caller keeps it for later
    } else {
      out.append(kReplacement);  // maximal invalid subpart
      i += j;
    }
  }
  return 0;
}

incremental_decoder::incremental_decoder(const tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

std::string incremental_decoder::push(token_id id) {
  const std::string_view b = tok_->token_bytes(id);
  if (skip_special_ && tok_->is_special(id)) return {};
  pending_.append(b);
  std::string out;
  const size_t tail = append_utf8_lossy(pending_, out, /*keep_incomplete_tail=*/true);
  pending_.erase(0, pending_.size() - tail);
  return out;
}

std::string incremental_decoder::finish() {
  std::string out;
  append_utf8_lossy(pending_, out);
  pending_.clear();
  return out;
}

}  // namespace evident::engine

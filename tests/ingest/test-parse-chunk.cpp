// Parsers, encodings and the chunker on small in-memory inputs: input, then expected output.
#include <gtest/gtest.h>

#include "engine/base/error.h"
#include "ingest/chunker.h"
#include "ingest/document.h"
#include "ingest/hashed-embedder.h"
#include "ingest/sha256.h"
#include "ingest/text.h"
#include "ingest/token-count.h"
#include "tests/ingest/ingest-fixtures.h"
#include "tests/test-util.h"

using namespace evident::ingest;

namespace {

document parse(const std::string& name, const std::string& bytes) { return parser_for(name).parse(bytes, name); }

// Every chunk's span, cut from the document text in code points and in bytes, equals the chunk text.
void expect_spans_round_trip(const document& d, const std::vector<chunk>& cs) {
  const std::u32string u = evident::test::to_u32(d.text);
  int64_t prev_start = -1;
  for (size_t i = 0; i < cs.size(); ++i) {
    const chunk& c = cs[i];
    EXPECT_EQ(c.ordinal, static_cast<int>(i));
    ASSERT_LE(c.char_end, static_cast<int64_t>(u.size()));
    ASSERT_LE(c.byte_end, static_cast<int64_t>(d.text.size()));
    EXPECT_EQ(evident::test::to_utf8(u.substr(c.char_start, c.char_end - c.char_start)), c.text) << "chunk " << i;
    EXPECT_EQ(d.text.substr(c.byte_start, c.byte_end - c.byte_start), c.text) << "chunk " << i;
    EXPECT_GE(c.char_start, prev_start);
    prev_start = c.char_start;
    EXPECT_FALSE(c.text.empty());
  }
}

}  // namespace

TEST(IngestText, EncodingsAreDetectedAndNormalisedToNfc) {
  std::string enc;
  // UTF-16LE with BOM: "héllo"
  std::string u16le("\xFF\xFEh\0\xE9\0l\0l\0o\0", 12);
  EXPECT_EQ(decode_to_utf8(u16le, &enc), "h\xC3\xA9llo");
  EXPECT_EQ(enc, "utf-16le");
  std::string u16be("\xFE\xFF\0h\0\xE9", 6);
  EXPECT_EQ(decode_to_utf8(u16be, &enc), "h\xC3\xA9");
  EXPECT_EQ(enc, "utf-16be");
  // Invalid UTF-8 -> Latin-1 (windows-1252): 0xE9 = é, 0x93/0x94 = curly quotes
  EXPECT_EQ(decode_to_utf8("caf\xE9 \x93q\x94", &enc), "caf\xC3\xA9 \xE2\x80\x9Cq\xE2\x80\x9D");
  EXPECT_EQ(enc, "windows-1252");
  // UTF-8 BOM stripped
  EXPECT_EQ(decode_to_utf8("\xEF\xBB\xBFok", &enc), "ok");
  // NFC: e + combining acute -> é
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));  // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_TRUE(is_valid_utf8("\xF0\x9F\x98\x80"));
  EXPECT_TRUE(looks_binary(std::string("ab\0cd", 5)));
  EXPECT_FALSE(looks_binary(u16le));
}

TEST(IngestText, Sha256MatchesKnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}

TEST(IngestParse, MarkdownHeadingsBecomeSectionPaths) {
  document d = parse("guide.md",
                     "# Guide\n\nIntro text here.\n\n## Install\n\nRun the script.\n\n```\n# not a heading\n```\n\n"
                     "Usage\n-----\n\nCall it.\n");
  ASSERT_EQ(d.headings.size(), 3u);
  EXPECT_EQ(d.headings[0].title, "Guide");
  EXPECT_EQ(d.headings[1].title, "Install");
  EXPECT_EQ(d.headings[1].level, 2);
  EXPECT_EQ(d.headings[2].title, "Usage");
  EXPECT_EQ(d.title, "Guide");
  EXPECT_NE(d.text.find("# not a heading"), std::string::npos);
  auto tc = make_estimate_counter();
  auto cs = chunk_document(d, *tc, {16, 0});
  expect_spans_round_trip(d, cs);
  bool saw_install = false;
  for (const auto& c : cs)
    if (c.text.find("Run the script") != std::string::npos) {
      EXPECT_EQ(c.heading_path, "Guide > Install");
      saw_install = true;
    }
  EXPECT_TRUE(saw_install);
}

TEST(IngestParse, HtmlDropsScriptsKeepsHeadingsListsAndTableRows) {
  document d = parse("page.html",
                     "<html><head><title>The Page</title><style>p{color:red}</style></head><body>"
                     "<nav><a href='/'>Home</a> menu junk</nav><script>var x = 'secret';</script>"
                     "<h1>Main   title</h1><p>First <b>bold</b> paragraph.</p>"
                     "<ul><li>one</li><li>two</li></ul>"
                     "<table><tr><th>Name</th><th>Age</th></tr><tr><td>Ann</td><td>41</td></tr></table>"
                     "</body></html>");
  EXPECT_EQ(d.title, "The Page");
  EXPECT_EQ(d.text.find("secret"), std::string::npos);
  EXPECT_EQ(d.text.find("menu junk"), std::string::npos);
  EXPECT_EQ(d.text.find("color"), std::string::npos);
  EXPECT_NE(d.text.find("First bold paragraph."), std::string::npos) << d.text;
  EXPECT_NE(d.text.find("- one\n- two"), std::string::npos) << d.text;
  EXPECT_NE(d.text.find("Name | Age\nAnn | 41"), std::string::npos) << d.text;
  ASSERT_EQ(d.headings.size(), 1u);
  EXPECT_EQ(d.headings[0].title, "Main title");
}

TEST(IngestParse, CsvRowsCarryColumnNames) {
  document d = parse("people.csv", "name,city,note\nAnn,Paris,\"likes, commas\"\n\nBob,,\"say \"\"hi\"\"\"\n");
  EXPECT_EQ(d.text, "name: Ann | city: Paris | note: likes, commas\nname: Bob | note: say \"hi\"\n");
  EXPECT_EQ(d.units, unit_kind::lines);
  document t = parse("x.tsv", "a\tb\n1\t2\n");
  EXPECT_EQ(t.text, "a: 1 | b: 2\n");
}

TEST(IngestParse, CodeSplitsAtTopLevelBlocks) {
  const std::string src =
      "int a() {\n  return 1;\n\n  // inner blank line above\n}\n\nint b() {\n  return 2;\n}\n";
  document d = parse("x.cpp", src);
  EXPECT_EQ(d.format, "code");
  auto units = split_units(d.text, d.units);
  ASSERT_EQ(units.size(), 2u);
  EXPECT_EQ(d.text.substr(units[1].first, units[1].second - units[1].first), "int b() {\n  return 2;\n}\n");
}

TEST(IngestParse, CorruptPdfIsRejectedWithReason) {
  EXPECT_THROW(parse("x.pdf", "%PDF-1.4\n1 0 obj\n<<"), evident::error);
  EXPECT_THROW(parse("x.pdf", "not a pdf"), evident::error);
}

TEST(IngestChunk, SpansRoundTripWithOverlapAndUnicode) {
  std::string text;
  for (int i = 0; i < 60; ++i)
    text += "Satz " + std::to_string(i) + " über Größe und 日本語の文章です。 Ünïcödé café naïve. ";
  document d = parse("u.txt", text);
  auto tc = make_estimate_counter();
  auto cs = chunk_document(d, *tc, {64, 16});
  ASSERT_GT(cs.size(), 3u);
  expect_spans_round_trip(d, cs);
  for (size_t i = 1; i < cs.size(); ++i) {
    EXPECT_LT(cs[i].char_start, cs[i - 1].char_end) << "consecutive chunks overlap";
    EXPECT_GT(cs[i].char_start, cs[i - 1].char_start);
  }
  for (const auto& c : cs) EXPECT_LE(c.token_count, 64);
}

TEST(IngestChunk, LongUnitsAreSplitAndOptionsValidated) {
  document d = parse("long.txt", std::string(5000, 'x') + " " + std::string(3000, 'y'));
  auto tc = make_estimate_counter();
  auto cs = chunk_document(d, *tc, {32, 0});
  expect_spans_round_trip(d, cs);
  for (const auto& c : cs) EXPECT_LE(c.token_count, 32);
  EXPECT_THROW(chunk_document(d, *tc, {4, 0}), evident::error);
  EXPECT_THROW(chunk_document(d, *tc, {64, 40}), evident::error);
}

TEST(IngestEmbed, HashedTfidfIsNormalisedAndRanksOverlapHigher) {
  hashed_tfidf_embedder e;
  std::vector<float> v(3 * 384);
  e.embed({"the cat sat on the mat", "a cat sat on a mat", "quantum chromodynamics lattice"}, v.data());
  auto dot = [&](int a, int b) {
    double s = 0;
    for (int i = 0; i < 384; ++i) s += v[a * 384 + i] * v[b * 384 + i];
    return s;
  };
  // L2-normalised rows (float accumulation over 384 dims: 1e-5 is ~100 ulp of 1.0)
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(dot(r, r), 1.0, 1e-5);
  EXPECT_GT(dot(0, 1), dot(0, 2) + 0.3);
  std::vector<float> z(384, 1.0f);
  e.embed({""}, z.data());
  for (float x : z) EXPECT_EQ(x, 0.0f);
}

TEST(IngestTokens, EstimateTracksWordsDigitsAndCjk) {
  EXPECT_EQ(estimate_tokens("hello world"), 2);
  EXPECT_EQ(estimate_tokens("2024"), 4);
  EXPECT_EQ(estimate_tokens("日本語"), 3);  // 3 x 0.75 = 2.25, rounded up
  EXPECT_GE(estimate_tokens("internationalization"), 3);
}

// engine::split_qwen3: a hand-written equivalent of the Qwen3 (and GPT-4 cl100k-style) pre-tokeniser regex
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// working directly on UTF-8 (no UTF-16 conversion, no backtracking engine). Internal to engine/tokenizer.cpp, which
// uses it when tokenizer.json's split pattern is exactly kQwen3SplitPattern and ICU regex otherwise. Character classes
// come from ICU's properties (\p{L}: general category L*, \p{N}: N*, \s: White_Space), as ICU regex uses them;
// tests/tokenizer checks that both produce the same pieces on the fixtures and on random strings.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace evident::engine {

inline constexpr std::string_view kQwen3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Splits `text` from byte offset `from` (which must be a piece boundary: 0 or an end returned earlier) and appends to
// `ends` the end offset of each piece, in order, stopping after `max_pieces` pieces or at the end of the text. Piece k
// is [previous end, ends[k]); the last end of the text is text.size(). Splitting in several calls gives the same pieces
// as one call. requires: `text` is valid UTF-8 and shorter than 2 GiB.
void split_qwen3(std::string_view text, uint32_t from, std::vector<uint32_t>& ends, size_t max_pieces = SIZE_MAX);

}  // namespace evident::engine

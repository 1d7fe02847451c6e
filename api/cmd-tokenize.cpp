// `evident tokenize`: text -> token ids as a JSON array, or ids -> text with --decode.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "api/cli.h"
#include "api/commands.h"
#include "engine/tokenizer.h"

namespace evident::cli {

int cmd_tokenize(const std::vector<std::string>& argv) {
  args a("tokenize", "--tokenizer FILE [--decode] [--as-text] [--count] TEXT|-",
         "Encode TEXT (or standard input, with -) into token ids, printed as a JSON array. With --decode, TEXT is a\n"
         "list of ids (comma-separated or a JSON array) and the decoded text is printed, followed by a newline.");
  auto& path = a.option("--tokenizer", "FILE", "the model's tokenizer.json (Hugging Face format)");
  auto& decode = a.flag("--decode", "decode ids into text instead of encoding");
  auto& as_text = a.flag("--as-text", "treat special tokens such as <|im_end|> in TEXT as plain text");
  auto& count = a.flag("--count", "print only the number of tokens");
  if (!a.parse(argv, 1, 1)) return 0;
  if (path.empty()) throw usage_error{"--tokenizer FILE is required"};

  std::string input = a.positional()[0];
  if (input == "-") input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  const engine::tokenizer tok = engine::tokenizer::from_file(path);

  if (decode) {
    const std::string text = tok.decode(parse_token_ids("--decode", input));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  const auto mode = as_text ? engine::special_mode::as_text : engine::special_mode::parse;
  if (count) {
    std::printf("%zu\n", tok.count(input, mode));
    return 0;
  }
  const auto ids = tok.encode(input, mode);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace evident::cli

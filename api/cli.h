// The `evident` command line: one executable, one subcommand per file (api/cmd-<name>.cpp).
//
// A subcommand is a function `int run(const std::vector<std::string>& args)` (args exclude the program and the
// subcommand name) registered in the table in api/main.cpp. Exit codes: 0 success, 1 the work failed (bad data,
// I/O), 2 usage error (unknown subcommand or flag, missing value). Errors print one line to stderr: `evident: ...`.
//
// Flags are parsed with cli::args, which knows every flag the subcommand accepts, so that an unknown flag is
// rejected with one clear line instead of being ignored.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace evident::cli {

// Thrown for usage errors; main() prints "evident <cmd>: <message>" plus a hint and exits 2.
struct usage_error {
  std::string message;
};

// Declarative flag parser.
//   cli::args a("ingest", "DIR [--store PATH] ...", "Ingest a folder ...");
//   auto& store = a.option("--store", "PATH", "store directory", "evident-store");
//   auto& json  = a.flag("--json", "print the summary as JSON");
//   a.parse(argv);            // throws usage_error; returns false when --help was printed
//   a.positional()            // the non-flag arguments, in order
class args {
 public:
  args(std::string command, std::string synopsis, std::string description);

  // --name VALUE (also --name=VALUE). Returns a reference to the value, set to `def` until parsed.
  std::string& option(const std::string& name, const std::string& metavar, const std::string& help,
                      const std::string& def = "");
  // Boolean --name.
  bool& flag(const std::string& name, const std::string& help);

  // Parses; prints help and returns false on -h/--help. Throws usage_error on an unknown flag, a missing value,
  // or when the number of positionals is outside [min_pos, max_pos].
  bool parse(const std::vector<std::string>& argv, size_t min_pos = 0, size_t max_pos = SIZE_MAX);

  // True when the option was given on the command line (not defaulted).
  bool given(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string help() const;

 private:
  struct spec {
    std::string name, metavar, help;
    bool is_flag = false;
  };
  std::string command_, synopsis_, description_;
  std::vector<spec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> flags_;
  std::map<std::string, bool> given_;
  std::vector<std::string> positional_;
};

// Parses sizes such as "32k", "64K", "128000" into a count (k = 1024). Throws usage_error naming the flag.
size_t parse_count(const std::string& flag, const std::string& text);
// Throws usage_error "FLAG: expected a, b or c, got 'VALUE'" unless `value` is one of `allowed` (non-empty).
void require_one_of(const std::string& flag, const std::string& value, std::initializer_list<const char*> allowed);

// Parses a list of token ids: "1,2,3", "[1, 2, 3]" or "1 2 3" (any mix of commas, brackets and white space).
// Throws usage_error naming `flag` and the bad element.
std::vector<int32_t> parse_token_ids(const std::string& flag, const std::string& text);

using command_fn = std::function<int(const std::vector<std::string>&)>;
struct command {
  const char* name;
  const char* summary;
  command_fn run;
};

}  // namespace evident::cli

// Every `evident` subcommand, one function each, defined in api/cmd-<name>.cpp and listed in api/main.cpp.
#pragma once

#include <string>
#include <vector>

namespace evident::cli {
int cmd_ask(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_ingest(const std::vector<std::string>& args);
int cmd_model(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);
int cmd_tokenize(const std::vector<std::string>& args);
int cmd_version(const std::vector<std::string>& args);
}  // namespace evident::cli

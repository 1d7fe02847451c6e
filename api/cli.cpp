#include "api/cli.h"

#include <cstdio>
#include <sstream>

namespace evident::cli {

args::args(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

std::string& args::option(const std::string& name, const std::string& metavar, const std::string& help,
                          const std::string& def) {
  specs_.push_back({name, metavar, help, false});
  values_[name] = def;
  return values_[name];
}

bool& args::flag(const std::string& name, const std::string& help) {
  specs_.push_back({name, "", help, true});
  flags_[name] = false;
  return flags_[name];
}

bool args::given(const std::string& name) const {
  auto it = given_.find(name);
  return it != given_.end() && it->second;
}

std::string args::help() const {
  std::ostringstream os;
  os << "usage: evident " << command_ << " " << synopsis_ << "\n\n" << description_ << "\n";
  if (!specs_.empty()) os << "\noptions:\n";
  for (const auto& s : specs_) {
    std::string left = "  " + s.name + (s.is_flag ? "" : " " + s.metavar);
    os << left;
    if (left.size() < 28) os << std::string(28 - left.size(), ' ');
    else os << "\n" << std::string(28, ' ');
    os << s.help;
    if (!s.is_flag) {
      auto it = values_.find(s.name);
      if (it != values_.end() && !it->second.empty()) os << " (default: " << it->second << ")";
    }
    os << "\n";
  }
  os << "  -h, --help                show this help\n";
  return os.str();
}

bool args::parse(const std::vector<std::string>& argv, size_t min_pos, size_t max_pos) {
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (only_positional || a.size() < 2 || a[0] != '-' || a == "-") {
      positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    std::string name = a, value;
    bool has_value = false;
    if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      has_value = true;
    }
    const spec* found = nullptr;
    for (const auto& s : specs_)
      if (s.name == name) found = &s;
    if (found == nullptr) throw usage_error{"unknown option '" + name + "'"};
    given_[name] = true;
    if (found->is_flag) {
      if (has_value) throw usage_error{"option '" + name + "' takes no value"};
      flags_[name] = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argv.size()) throw usage_error{"option '" + name + "' needs a value (" + found->metavar + ")"};
      value = argv[++i];
    }
    values_[name] = value;
  }
  if (positional_.size() < min_pos)
    throw usage_error{"expected " + std::string(min_pos == 1 ? "an argument" : std::to_string(min_pos) + " arguments") +
                      ": " + synopsis_};
  if (positional_.size() > max_pos)
    throw usage_error{"unexpected argument '" + positional_[max_pos] + "'"};
  return true;
}

size_t parse_count(const std::string& flag, const std::string& text) {
  if (text.empty()) throw usage_error{"option '" + flag + "' needs a number"};
  size_t mult = 1;
  std::string digits = text;
  char last = text.back();
  if (last == 'k' || last == 'K') {
    mult = 1024;
    digits.pop_back();
  } else if (last == 'm' || last == 'M') {
    mult = 1024 * 1024;
    digits.pop_back();
  }
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 12)
    throw usage_error{"option '" + flag + "': expected a count such as 32k or 32768, got '" + text + "'"};
  return std::stoull(digits) * mult;
}

void require_one_of(const std::string& flag, const std::string& value, std::initializer_list<const char*> allowed) {
  std::string list;
  size_t i = 0;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + std::string(a);
    ++i;
  }
  throw usage_error{flag + ": expected " + list + ", got '" + value + "'"};
}

std::vector<int32_t> parse_token_ids(const std::string& flag, const std::string& text) {
  std::vector<int32_t> ids;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(cur, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != cur.size() || v < 0 || v > INT32_MAX) throw usage_error{flag + ": not a token id: '" + cur + "'"};
    ids.push_back(static_cast<int32_t>(v));
    cur.clear();
  };
  for (char c : text) {
    if (c == ',' || c == '[' || c == ']' || c == ' ' || c == '\n' || c == '\t' || c == '\r')
      flush();
    else
      cur.push_back(c);
  }
  flush();
  return ids;
}

}  // namespace evident::cli

#include "test_support.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include <fstream>
#include <stdexcept>

namespace otac::test {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

const std::string& Vector::at(const std::string& key) const {
  auto it = fields.find(key);
  if (it == fields.end())
    throw std::runtime_error("vector at line " + std::to_string(line) + " has no field '" + key + "'");
  return it->second;
}

std::string data_path(const std::string& name) { return std::string(OTAC_TEST_DATA_DIR) + "/" + name; }

std::vector<Vector> load_vectors(const std::string& name) {
  std::ifstream in(data_path(name));
  if (!in) throw std::runtime_error("cannot open test vector file " + data_path(name));
  std::vector<Vector> out;
  Vector cur;
  std::string section, line, last_key;
  int lineno = 0;
  auto flush = [&] {
    if (!cur.fields.empty()) out.push_back(cur);
    cur = Vector{};
    cur.section = section;
    last_key.clear();
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line[0] == '#') continue;
    const std::string t = trim(line);
    if (t.empty()) { flush(); continue; }
    if (t.front() == '[' && t.back() == ']') {
      flush();
      section = t.substr(1, t.size() - 2);
      cur.section = section;
      continue;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !last_key.empty()) {
      cur.fields[last_key] += t;
      continue;
    }
    const auto eq = t.find('=');
    if (eq == std::string::npos)
      throw std::runtime_error(name + ":" + std::to_string(lineno) + ": expected key = value");
    last_key = trim(t.substr(0, eq));
    if (cur.fields.empty()) { cur.line = lineno; cur.section = section; }
    cur.fields[last_key] = trim(t.substr(eq + 1));
  }
  flush();
  return out;
}

TempDir::TempDir() {
  std::string t = (std::filesystem::temp_directory_path() / "otac-test-XXXXXX").string();
  if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("cannot create a temporary directory under " + t);
  path = t;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string stderr_during(const std::filesystem::path& file, const std::function<void()>& f) {
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  if (saved < 0) throw std::runtime_error("cannot duplicate stderr");
  const int out = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0 || ::dup2(out, STDERR_FILENO) != STDERR_FILENO) {
    if (out >= 0) ::close(out);
    ::close(saved);
    throw std::runtime_error("cannot send stderr to " + file.string());
  }
  ::close(out);
  struct Restore {
    int saved;
    ~Restore() {
      std::fflush(stderr);
      ::dup2(saved, STDERR_FILENO);
      ::close(saved);
    }
  } restore{saved};
  f();
  std::fflush(stderr);
  std::ifstream in(file, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace otac::test

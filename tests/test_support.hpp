// Helpers shared by the test executables: known-answer vector files, temporary directories.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace otac::test {

/// One vector: key = value pairs, plus the [section] it appeared under.
struct Vector {
  std::string section;
  std::map<std::string, std::string> fields;
  int line = 0;  ///< line of the first field, for failure messages
  const std::string& at(const std::string& key) const;
  bool has(const std::string& key) const { return fields.count(key) != 0; }
};

/// Reads tests/data/<name>. Format (as Botan's .vec files): '#' comments, "[section]" lines,
/// "key = value" lines; a blank line ends a vector. A value may continue on following lines
/// that start with whitespace (joined without the whitespace). Throws if the file is missing.
std::vector<Vector> load_vectors(const std::string& name);

/// Full path of a file under tests/data/.
std::string data_path(const std::string& name);

/// A fresh directory under the system's temporary directory, removed with its content at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

/// What the process writes to stderr while f runs (the log of otac::sys::log), captured
/// through `file`. Throws std::runtime_error if stderr cannot be redirected.
std::string stderr_during(const std::filesystem::path& file, const std::function<void()>& f);

}  // namespace otac::test

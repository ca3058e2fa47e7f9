// Helpers shared by the tests: temporary directories and running the dsv3 binary.
#pragma once

#include <string>
#include <vector>

namespace dsv3::testing {

// A fresh directory under the system temp dir, removed (recursively) when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal
  std::string out;
  std::string err;
};

// Runs the built dsv3 binary with args (no shell), capturing stdout and stderr.
CommandResult RunDsv3(const std::vector<std::string>& args, const std::string& stdin_text = "");

// Runs any program (argv[0] looked up in PATH).
CommandResult RunProgram(const std::vector<std::string>& argv, const std::string& stdin_text = "");

}  // namespace dsv3::testing

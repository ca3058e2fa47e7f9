// Starting the dsv3 binary in the background and killing it (crash-safety tests). Header-only so
// that it needs no change to the shared test build.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

extern char** environ;

namespace dsv3::testing {

// Spawns DSV3_BINARY with args, stdout/stderr to /dev/null. Returns the pid (or -1).
inline pid_t SpawnDsv3(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {DSV3_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> ptrs;
  for (auto& a : argv) ptrs.push_back(a.data());
  ptrs.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, ptrs[0], &actions, nullptr, ptrs.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// SIGKILLs pid and reaps it.
inline void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

}  // namespace dsv3::testing

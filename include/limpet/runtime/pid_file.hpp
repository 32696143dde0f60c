// The pid file: written atomically (so `limpet -s` never reads half a number), removed only by
// the process it names, moved aside to PATH.oldbin while a binary upgrade runs. Main thread.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "limpet/util/result.hpp"

namespace limpet::runtime {

// The pid in `path`, nullopt when it is missing or holds no positive number.
std::optional<pid_t> read_pid_file(const std::string& path);
// Writes "<pid>\n" to a temporary file next to `path` and renames it over `path`.
Status write_pid_file(const std::string& path, pid_t pid);
// Removes `path` if it names `pid`: a file another process wrote is never removed.
bool remove_pid_file_if_ours(const std::string& path, pid_t pid);
// Renames `from` to `to` if `from` names `pid`.
bool move_pid_file_if_ours(const std::string& from, const std::string& to, pid_t pid);
// Where the old process's pid goes while an upgrade runs (nginx's convention).
inline std::string old_pid_file(const std::string& path) { return path + ".oldbin"; }

}  // namespace limpet::runtime

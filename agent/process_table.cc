#include "agent/process_table.h"

#include <algorithm>

#include "agent/text.h"

namespace sockwatch {

void ProcessTable::MakeRoom() {
  while (entries_.size() >= max_entries_) {
    if (!exited_.empty()) {
      entries_.erase(exited_.front().second);
      exited_.pop_front();
      continue;
    }
    // Only live processes left: drop one and count it, rather than grow.
    auto it = entries_.begin();
    if (auto n = newest_.find(it->first.first); n != newest_.end() && n->second == it->first.second)
      newest_.erase(n);
    entries_.erase(it);
    ++evicted_;
  }
}

void ProcessTable::Upsert(ProcInfo info) {
  info.text_valid = IsValidUtf8(info.exe) && IsValidUtf8(info.comm) &&
                    std::all_of(info.argv.begin(), info.argv.end(),
                                [](const std::string& a) { return IsValidUtf8(a); });
  const Key key = KeyOf(info.pid, info.start_ns);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    MakeRoom();
    it = entries_.emplace(key, ProcInfo{}).first;
  }
  const bool exited = it->second.exited;
  it->second = std::move(info);
  it->second.exited = exited;
  auto& newest = newest_[key.first];
  if (key.second >= newest) newest = key.second;
}

void ProcessTable::Fork(const ProcInfo& child) {
  ProcInfo info = child;
  if (const ProcInfo* parent = Find(child.ppid, child.parent_start_ns)) {
    info.exe = parent->exe;
    info.argv = parent->argv;
    info.argv_full_len = parent->argv_full_len;
    info.argv_truncated = parent->argv_truncated;
    info.exe_deleted = parent->exe_deleted;
    info.exe_truncated = parent->exe_truncated;
  }
  Upsert(std::move(info));
}

void ProcessTable::Exit(uint32_t pid, uint64_t start_ns, uint64_t now_ns) {
  const Key key = KeyOf(pid, start_ns);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.exited) return;
  it->second.exited = true;
  exited_.emplace_back(now_ns, key);
}

const ProcInfo* ProcessTable::Find(uint32_t pid, uint64_t start_ns) const {
  Key key;
  if (start_ns == 0) {
    auto n = newest_.find(pid);
    if (n == newest_.end()) return nullptr;
    key = {pid, n->second};
  } else {
    key = KeyOf(pid, start_ns);
  }
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

void ProcessTable::Expire(uint64_t now_ns) {
  while (!exited_.empty() && exited_.front().first + exit_grace_ns_ <= now_ns) {
    const Key key = exited_.front().second;
    exited_.pop_front();
    entries_.erase(key);
    if (auto n = newest_.find(key.first); n != newest_.end() && n->second == key.second)
      newest_.erase(n);
  }
}

}  // namespace sockwatch

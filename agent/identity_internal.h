// Helpers shared by the files that implement agent/identity.h. Not for other
// code: include agent/identity.h instead.
#ifndef SOCKWATCH_AGENT_IDENTITY_INTERNAL_H_
#define SOCKWATCH_AGENT_IDENTITY_INTERNAL_H_

#include <unistd.h>

namespace sockwatch {
namespace identity_internal {

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

}  // namespace identity_internal
}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_IDENTITY_INTERNAL_H_

// sw_testpeer: the client and server processes of the integration tests.
// Each subcommand does one network act the tests then look for in the
// agent's output. Prints "ready" on stdout once a server is listening.
//
//   tcp-server ADDR PORT          accept one, read to EOF, answer "world"
//   tcp-client ADDR PORT [--bind=SRC]  connect (from SRC), send "hello", read the answer;
//                                 exit 0 when connected, 10 + errno % 100 when not
//   tcp-connect-exit ADDR PORT    connect and _exit at once
//   tcp-hold ADDR PORT            connect, print "ready", hold until stdin closes
//   udp-recv ADDR PORT N          bind, print "ready", recvfrom N datagrams
//   udp-send ADDR PORT N          sendto N datagrams from one unconnected socket
//   udp-connect-send ADDR PORT N  connect, then send N datagrams
//   udp-spray ADDR PORT N         one datagram to each of PORT .. PORT+N-1
//   tcp-send ADDR PORT HEX        connect, send the bytes, read what comes for up to 1 s
//   tcp-serve ADDR PORT N [HEX]   accept N connections one by one: send HEX (a banner) if
//                                 given, read until EOF or 1 s of silence, close
//   udp-send-from ADDR PORT SRCPORT HEX  one datagram with the bytes, from SRCPORT
// Arguments after the ones a command takes are ignored (the long-argv test).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
};

Addr Parse(const char* ip, int port) {
  Addr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof(*v6);
    a.family = AF_INET6;
  } else {
    fprintf(stderr, "bad address %s\n", ip);
    exit(2);
  }
  return a;
}

int Die(const char* what) {
  fprintf(stderr, "sw_testpeer: %s: %s\n", what, strerror(errno));
  return 10 + errno % 100;
}

void Ready() {
  puts("ready");
  fflush(stdout);
}

int Connect(const Addr& a, const char* src) {
  int fd = socket(a.family, SOCK_STREAM, 0);
  if (src) {
    Addr s = Parse(src, 0);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&s.ss), s.len) != 0) return -1;
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) return -1;
  return fd;
}

std::string Unhex(const char* hex) {
  std::string out;
  for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) out.push_back(static_cast<char>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  return out;
}

// Reads what the peer sends until EOF or 1 s of silence.
void Drain(int fd) {
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: sw_testpeer COMMAND ADDR PORT [...]\n");
    return 2;
  }
  const std::string cmd = argv[1];
  const Addr a = Parse(argv[2], atoi(argv[3]));
  const int n = argc > 4 ? atoi(argv[4]) : 1;

  if (cmd == "tcp-server") {
    int l = socket(a.family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) return Die("bind");
    if (listen(l, 16) != 0) return Die("listen");
    Ready();
    int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return Die("accept");
    char buf[256];
    while (read(c, buf, sizeof(buf)) > 0) {
    }
    if (write(c, "world", 5) != 5) return Die("write");
    close(c);
    close(l);
    return 0;
  }
  if (cmd == "tcp-client") {
    const char* src = nullptr;
    for (int i = 4; i < argc; ++i)
      if (strncmp(argv[i], "--bind=", 7) == 0) src = argv[i] + 7;
    int fd = Connect(a, src);
    if (fd < 0) return Die("connect");
    if (write(fd, "hello", 5) != 5) return Die("write");
    shutdown(fd, SHUT_WR);
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    close(fd);
    return 0;
  }
  if (cmd == "tcp-connect-exit") {
    if (Connect(a, nullptr) < 0) return Die("connect");
    _exit(0);
  }
  if (cmd == "tcp-hold") {
    int fd = Connect(a, nullptr);
    if (fd < 0) return Die("connect");
    Ready();
    char buf[16];
    while (read(0, buf, sizeof(buf)) > 0) {
    }
    close(fd);
    return 0;
  }
  if (cmd == "udp-recv") {
    int fd = socket(a.family, SOCK_DGRAM, 0);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) return Die("bind");
    Ready();
    for (int i = 0; i < n; ++i) {
      char buf[2048];
      sockaddr_storage from;
      socklen_t flen = sizeof(from);
      if (recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &flen) < 0)
        return Die("recvfrom");
    }
    return 0;
  }
  if (cmd == "udp-send" || cmd == "udp-connect-send") {
    int fd = socket(a.family, SOCK_DGRAM, 0);
    const bool connected = cmd == "udp-connect-send";
    if (connected && connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0)
      return Die("connect");
    for (int i = 0; i < n; ++i) {
      ssize_t r = connected ? send(fd, "ping", 4, 0)
                            : sendto(fd, "ping", 4, 0, reinterpret_cast<const sockaddr*>(&a.ss), a.len);
      if (r != 4) return Die("send");
    }
    return 0;
  }
  if (cmd == "udp-spray") {
    int fd = socket(a.family, SOCK_DGRAM, 0);
    Addr to = a;
    const int base = atoi(argv[3]);
    for (int i = 0; i < n; ++i) {
      reinterpret_cast<sockaddr_in*>(&to.ss)->sin_port = htons(base + i);  // same offset for v6
      if (sendto(fd, "x", 1, 0, reinterpret_cast<const sockaddr*>(&to.ss), to.len) != 1)
        return Die("sendto");
    }
    return 0;
  }
  if (cmd == "tcp-send") {
    const std::string bytes = Unhex(argc > 4 ? argv[4] : "");
    int fd = Connect(a, nullptr);
    if (fd < 0) return Die("connect");
    if (write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) return Die("write");
    Drain(fd);
    close(fd);
    return 0;
  }
  if (cmd == "tcp-serve") {
    const std::string banner = Unhex(argc > 5 ? argv[5] : "");
    int lfd = socket(a.family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0 || listen(lfd, 16) != 0)
      return Die("listen");
    Ready();
    for (int i = 0; i < n; ++i) {
      int fd = accept(lfd, nullptr, nullptr);
      if (fd < 0) return Die("accept");
      if (!banner.empty() && write(fd, banner.data(), banner.size()) < 0) return Die("write");
      Drain(fd);
      close(fd);
    }
    return 0;
  }
  if (cmd == "udp-send-from") {
    const std::string bytes = Unhex(argc > 5 ? argv[5] : "");
    int fd = socket(a.family, SOCK_DGRAM, 0);
    Addr src = Parse(a.family == AF_INET6 ? "::" : "0.0.0.0", n);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&src.ss), src.len) != 0) return Die("bind");
    if (sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&a.ss), a.len) < 0)
      return Die("sendto");
    return 0;
  }
  fprintf(stderr, "sw_testpeer: unknown command %s\n", cmd.c_str());
  return 2;
}

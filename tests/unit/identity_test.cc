#include "agent/identity.h"

#include <sys/stat.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "agent/text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

v1::ImageIdentity Classify(const std::string& exe, std::vector<std::string> argv,
                           const std::string& cwd = "") {
  return ClassifyImage(exe, argv, cwd);
}

// ---- ClassifyImage --------------------------------------------------------

TEST(IdentityClassifyTest, Python) {
  const std::string py = "/usr/bin/python3.11";
  auto id = Classify(py, {"python3", "-u", "-W", "ignore", "script.py", "arg"}, "/home/u");
  EXPECT_EQ(id.exe(), py);
  EXPECT_EQ(id.interpreter(), "python3.11");
  EXPECT_EQ(id.script(), "/home/u/script.py");
  EXPECT_EQ(id.inline_code(), "");
  EXPECT_EQ(id.key(), py + "|/home/u/script.py");

  id = Classify(py, {"python3", "-m", "http.server", "8000"}, "/srv");
  EXPECT_EQ(id.script(), "-m http.server");
  EXPECT_EQ(id.key(), py + "|-m http.server");
  EXPECT_EQ(Classify(py, {"python3", "-Bmhttp.server"}).script(), "-m http.server");

  id = Classify(py, {"python3", "-c", "import os", "x.py"});
  EXPECT_EQ(id.inline_code(), "import os");
  EXPECT_EQ(id.script(), "");
  EXPECT_EQ(id.key(), py + "|-c");
  EXPECT_EQ(Classify(py, {"python3", "-OO", "-Bc", "print(1)"}).inline_code(), "print(1)");
  EXPECT_EQ(Classify(py, {"python3", "-cprint(2)"}).inline_code(), "print(2)");

  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"python3"}, {"python3", "-"}, {"python3", "-u", "-i"}, {"python3", "--", "-"}, {}}) {
    id = Classify(py, argv);
    EXPECT_EQ(id.key(), py + "|-") << argv.size();
    EXPECT_EQ(id.inline_code(), "-");
    EXPECT_EQ(id.script(), "");
  }
  // Options with arguments, attached or not, never pass for the script.
  EXPECT_EQ(Classify(py, {"python", "-X", "dev", "-Wignore", "-Xutf8", "a.py"}, "/w").script(),
            "/w/a.py");
  EXPECT_EQ(Classify(py, {"p", "--check-hash-based-pycs", "always", "-sE", "b.py"}).script(),
            "b.py");
  EXPECT_EQ(Classify(py, {"python3", "--", "-weird.py"}, "/w").script(), "/w/-weird.py");
}

TEST(IdentityClassifyTest, InterpreterNames) {
  for (const char* exe :
       {"/usr/bin/python", "/usr/bin/python2", "/usr/bin/python3", "/usr/bin/python3.11",
        "/usr/bin/perl", "/usr/bin/perl5.36.0", "/usr/bin/ruby", "/usr/bin/ruby3.1",
        "/usr/bin/node", "/usr/bin/nodejs", "/bin/sh", "/usr/bin/bash", "/usr/bin/dash", "/bin/zsh",
        "/bin/ksh", "/usr/bin/php", "/usr/bin/php8.2", "/usr/lib/jvm/bin/java",
        "/usr/bin/python3.11 (deleted)"})
    EXPECT_TRUE(IsInterpreter(exe)) << exe;
  for (const char* exe :
       {"/usr/bin/python3-config", "/usr/bin/perlbug", "/usr/bin/phpize", "/usr/bin/env",
        "/usr/bin/curl", "/usr/bin/javac", "/bin/bashbug", "/memfd:python3", "", "/usr/bin/"})
    EXPECT_FALSE(IsInterpreter(exe)) << exe;
}

TEST(IdentityClassifyTest, Shells) {
  const std::string bash = "/usr/bin/bash";
  auto id = Classify(bash, {"bash", "-c", "curl x|sh"});
  EXPECT_EQ(id.interpreter(), "bash");
  EXPECT_EQ(id.inline_code(), "curl x|sh");
  EXPECT_EQ(id.key(), bash + "|-c");
  // The first non-option after the options is the command; the rest are $0...
  EXPECT_EQ(Classify(bash, {"bash", "-c", "-x", "-o", "pipefail", "cmd", "name"}).inline_code(),
            "cmd");
  EXPECT_EQ(Classify(bash, {"bash", "-ec", "cmd", "name", "arg"}).inline_code(), "cmd");
  EXPECT_EQ(Classify(bash, {"bash", "-c", "--", "-cmd"}).inline_code(), "-cmd");
  EXPECT_EQ(Classify("/usr/bin/dash", {"sh", "-c"}).key(), "/usr/bin/dash|-c");

  id = Classify(bash, {"bash", "-x", "./run.sh", "a"}, "/srv/app/./sub/../bin/");
  EXPECT_EQ(id.script(), "/srv/app/bin/run.sh");
  EXPECT_EQ(id.key(), bash + "|/srv/app/bin/run.sh");
  EXPECT_EQ(Classify(bash, {"bash", "../x/./y.sh"}, "/a/b").script(), "/a/x/y.sh");
  // No cwd: kept as given.
  EXPECT_EQ(Classify(bash, {"bash", "./run.sh"}).script(), "./run.sh");
  EXPECT_EQ(Classify(bash, {"bash", "//opt/../opt/s.sh"}).script(), "/opt/s.sh");

  for (const auto& argv : std::vector<std::vector<std::string>>{{"sh", "-s"},
                                                                {"sh", "-s", "arg1"},
                                                                {"sh"},
                                                                {"sh", "-"},
                                                                {"sh", "-e", "-x"},
                                                                {"sh", "-i"}}) {
    id = Classify("/usr/bin/dash", argv);
    EXPECT_EQ(id.key(), "/usr/bin/dash|-") << argv.back();
    EXPECT_EQ(id.inline_code(), "-");
  }
  EXPECT_EQ(Classify(bash, {"bash", "-o", "errexit", "+o", "posix", "s.sh"}).script(), "s.sh");
  EXPECT_EQ(Classify(bash, {"bash", "-O", "extglob", "+O", "dotglob", "s.sh"}).script(), "s.sh");
  EXPECT_EQ(Classify(bash, {"bash", "--norc", "--rcfile", "rc", "-l", "s.sh"}).script(), "s.sh");
  EXPECT_EQ(Classify(bash, {"bash", "--", "-s.sh"}).script(), "-s.sh");
  EXPECT_EQ(Classify("/bin/zsh", {"zsh", "-o", "shwordsplit", "z.sh"}).script(), "z.sh");
}

TEST(IdentityClassifyTest, PerlRuby) {
  const std::string perl = "/usr/bin/perl";
  auto id = Classify(perl, {"perl", "-e", "print 1"});
  EXPECT_EQ(id.inline_code(), "print 1");
  EXPECT_EQ(id.key(), perl + "|-e");
  EXPECT_EQ(Classify(perl, {"perl", "-E", "say 1"}).key(), perl + "|-E");
  EXPECT_EQ(Classify(perl, {"perl", "-wle", "print 1", "arg"}).inline_code(), "print 1");
  EXPECT_EQ(Classify(perl, {"perl", "-e", "a;", "-e", "b;"}).inline_code(), "a;\nb;");
  EXPECT_EQ(Classify(perl, {"perl", "-0777", "-ne", "print"}).inline_code(), "print");
  EXPECT_EQ(Classify(perl, {"perl", "-pi", "-e", "s/a/b/", "f"}).inline_code(), "s/a/b/");
  EXPECT_EQ(Classify(perl, {"perl", "-eprint 3"}).inline_code(), "print 3");
  id = Classify(perl, {"perl", "-I", "lib", "-Ilib2", "-MFoo::Bar=x", "-w", "run.pl", "-e"}, "/p");
  EXPECT_EQ(id.script(), "/p/run.pl");
  EXPECT_EQ(id.inline_code(), "");
  EXPECT_EQ(Classify(perl, {"perl", "-x", "s.pl"}).script(), "s.pl");
  EXPECT_EQ(Classify(perl, {"perl"}).key(), perl + "|-");

  const std::string ruby = "/usr/bin/ruby3.1";
  id = Classify(ruby, {"ruby", "-e", "puts 1"});
  EXPECT_EQ(id.inline_code(), "puts 1");
  EXPECT_EQ(id.key(), ruby + "|-e");
  EXPECT_EQ(Classify(ruby, {"ruby", "-I", "lib", "-r", "json", "app.rb"}, "/r").script(),
            "/r/app.rb");
  EXPECT_EQ(Classify(ruby, {"ruby", "-rjson", "-Ilib", "-w", "app.rb"}).script(), "app.rb");
  EXPECT_EQ(Classify(ruby, {"ruby", "--enable", "frozen-string-literal", "a.rb"}).script(), "a.rb");
  EXPECT_EQ(Classify(ruby, {"ruby", "-C", "/x", "-E", "UTF-8", "a.rb"}).script(), "a.rb");
  EXPECT_EQ(Classify(ruby, {"ruby"}).key(), ruby + "|-");
}

TEST(IdentityClassifyTest, NodePhpJava) {
  const std::string node = "/usr/bin/node";
  auto id = Classify(node, {"node", "--inspect", "server.js", "--port", "80"}, "/app");
  EXPECT_EQ(id.script(), "/app/server.js");
  EXPECT_EQ(id.key(), node + "|/app/server.js");
  EXPECT_EQ(Classify(node, {"node", "-e", "x()"}).key(), node + "|-e");
  EXPECT_EQ(Classify(node, {"node", "--eval", "x()"}).inline_code(), "x()");
  EXPECT_EQ(Classify(node, {"node", "--eval=y()"}).key(), node + "|-e");
  EXPECT_EQ(Classify(node, {"node", "-p", "1+1"}).key(), node + "|-p");
  EXPECT_EQ(Classify(node, {"node", "-pe", "1+2"}).inline_code(), "1+2");
  EXPECT_EQ(Classify(node, {"node", "-p", "-e", "1+3"}).inline_code(), "1+3");
  EXPECT_EQ(Classify(node, {"node", "-r", "dotenv/config", "app.js"}).script(), "app.js");
  EXPECT_EQ(
      Classify(node, {"node", "--require=ts-node/register", "--inspect=0:9229", "a.ts"}).script(),
      "a.ts");
  EXPECT_EQ(Classify(node, {"node", "--max-old-space-size=100", "--", "b.js"}).script(), "b.js");
  EXPECT_EQ(Classify("/usr/bin/nodejs", {"nodejs"}).key(), "/usr/bin/nodejs|-");

  const std::string php = "/usr/bin/php8.2";
  id = Classify(php, {"php", "-r", "echo 1;"});
  EXPECT_EQ(id.inline_code(), "echo 1;");
  EXPECT_EQ(id.key(), php + "|-r");
  EXPECT_EQ(Classify(php, {"php", "-f", "/var/www/x.php"}).script(), "/var/www/x.php");
  EXPECT_EQ(Classify(php, {"php", "-d", "memory_limit=1G", "-n", "index.php"}, "/w").script(),
            "/w/index.php");
  EXPECT_EQ(Classify(php, {"php", "-S", "0.0.0.0:8000", "-t", "/srv"}).key(), php + "|-S");
  EXPECT_EQ(Classify(php, {"php", "-S", "0:80", "router.php"}).script(), "router.php");
  EXPECT_EQ(Classify(php, {"php", "--run", "echo 2;"}).inline_code(), "echo 2;");
  EXPECT_EQ(Classify(php, {"php", "--", "arg"}).key(), php + "|-");
  EXPECT_EQ(Classify(php, {"php"}).key(), php + "|-");

  const std::string java = "/usr/lib/jvm/java-17/bin/java";
  id = Classify(java, {"java", "-Xmx1g", "-jar", "/opt/app.jar", "--server"});
  EXPECT_EQ(id.interpreter(), "java");
  EXPECT_EQ(id.script(), "/opt/app.jar");
  EXPECT_EQ(id.key(), java + "|/opt/app.jar");
  EXPECT_EQ(Classify(java, {"java", "-jar", "app.jar"}, "/opt/x").script(), "/opt/x/app.jar");
  // A class name is not a path: never made absolute.
  id = Classify(java, {"java", "-cp", "lib/*", "-Dx=y", "-XX:+UseG1GC", "com.x.Main", "a"}, "/w");
  EXPECT_EQ(id.script(), "com.x.Main");
  EXPECT_EQ(id.key(), java + "|com.x.Main");
  EXPECT_EQ(Classify(java, {"java", "-classpath", "a:b", "-ea", "Main"}).script(), "Main");
  EXPECT_EQ(Classify(java, {"java", "-p", "mods", "-m", "app/com.x.Main"}).script(),
            "-m app/com.x.Main");
  EXPECT_EQ(Classify(java, {"java", "--source", "17", "Hello.java"}, "/w").script(),
            "/w/Hello.java");
  // Nothing runs from stdin: no script, the key is the exe.
  id = Classify(java, {"java", "-version"});
  EXPECT_EQ(id.key(), java);
  EXPECT_EQ(id.inline_code(), "");
}

TEST(IdentityClassifyTest, NonInterpretersAndEnv) {
  auto id = Classify("/usr/bin/curl", {"curl", "-c", "http://x"}, "/tmp");
  EXPECT_EQ(id.exe(), "/usr/bin/curl");
  EXPECT_EQ(id.key(), "/usr/bin/curl");
  EXPECT_EQ(id.interpreter(), "");
  EXPECT_EQ(id.script(), "");
  EXPECT_EQ(id.inline_code(), "");
  // env is not an interpreter: it exec's python3, which gets its own event.
  id = Classify("/usr/bin/env", {"/usr/bin/env", "python3", "x.py"}, "/w");
  EXPECT_EQ(id.key(), "/usr/bin/env");
  EXPECT_EQ(id.script(), "");
  EXPECT_EQ(Classify("/memfd:x (deleted)", {"x"}).key(), "/memfd:x (deleted)");
}

TEST(IdentityClassifyTest, HostileBytes) {
  auto id = Classify("/opt/\xff/python3", {"python3", "-c", "print('\xfe')"}, "/w\xff");
  EXPECT_TRUE(IsValidUtf8(id.exe()));
  EXPECT_TRUE(IsValidUtf8(id.key()));
  EXPECT_EQ(id.inline_code(), "print('\xEF\xBF\xBD')");
  id = Classify("/bin/bash", {"bash", "scr\xc3.sh"}, "/w");
  EXPECT_TRUE(IsValidUtf8(id.script()));
  EXPECT_TRUE(IsValidUtf8(id.key()));

  const std::string huge(100000, 'A');
  id = Classify("/bin/bash", {"bash", "-c", huge});
  EXPECT_EQ(id.inline_code(), std::string(4096, 'A') + "\xE2\x80\xA6");
  // A cut inside a multi-byte character backs off to its start.
  std::string accents = "x";
  for (int i = 0; i < 5000; ++i) accents += "\xC3\xA9";
  id = Classify("/bin/bash", {"bash", "-c", accents});
  EXPECT_TRUE(IsValidUtf8(id.inline_code()));
  EXPECT_LE(id.inline_code().size(), 4096u + 3);
  EXPECT_TRUE(absl::EndsWith(id.inline_code(), "\xC3\xA9\xE2\x80\xA6"));
  // Invalid bytes grow when mended; still capped.
  id = Classify("/bin/bash", {"bash", "-c", std::string(8000, '\xff')});
  EXPECT_TRUE(IsValidUtf8(id.inline_code()));
  EXPECT_LE(id.inline_code().size(), 4096u + 3);
  EXPECT_EQ(Classify("/bin/bash", {"bash", "-c", std::string(4096, 'b')}).inline_code().size(),
            4096u);
}

// ---- Suspicious marks -----------------------------------------------------

TEST(IdentitySuspiciousTest, FakeFileSystem) {
  const std::map<std::string, mode_t> fs = {
      {"/", S_IFDIR | 0755},
      {"/tmp", S_IFDIR | 01777},
      {"/usr", S_IFDIR | 0755},
      {"/usr/bin", S_IFDIR | 0755},
      {"/home", S_IFDIR | 0755},
      {"/home/u", S_IFDIR | 0700},
      {"/home/u/.cache", S_IFDIR | 0700},
      {"/dev", S_IFDIR | 0755},
      {"/dev/shm", S_IFDIR | 01777},
      {"/dev/shm/.x", S_IFDIR | 0755},
      {"/opt", S_IFDIR | 0777},
  };
  StatModeFn fake = [&fs](const std::string& path) -> std::optional<mode_t> {
    auto it = fs.find(path);
    if (it == fs.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_THAT(SuspiciousMarks("/usr/bin/ls", false, fake), IsEmpty());
  EXPECT_THAT(SuspiciousMarks("/usr/bin/ls", true, fake), ElementsAre("deleted"));
  EXPECT_THAT(SuspiciousMarks("/tmp/x", false, fake), ElementsAre("world_writable_dir"));
  EXPECT_THAT(SuspiciousMarks("/opt/app/run", false, fake), ElementsAre("world_writable_dir"));
  EXPECT_THAT(SuspiciousMarks("/home/u/.cache/x", false, fake), ElementsAre("hidden_dir"));
  EXPECT_THAT(SuspiciousMarks("/dev/shm/.x/y", true, fake),
              ElementsAre("deleted", "world_writable_dir", "hidden_dir"));
  EXPECT_THAT(SuspiciousMarks("/memfd:implant (deleted)", true, fake), ElementsAre("memfd"));
  // A hidden file in a plain directory is not a hidden directory.
  EXPECT_THAT(SuspiciousMarks("/usr/bin/.hidden", false, fake), IsEmpty());
  EXPECT_THAT(SuspiciousMarks("/gone/dir/x", false, fake), IsEmpty());  // stat fails: no mark
  EXPECT_THAT(SuspiciousMarks("relative/.d/x", true, fake), ElementsAre("deleted"));
  EXPECT_THAT(SuspiciousMarks("", false, fake), IsEmpty());
}

TEST(IdentitySuspiciousTest, RealTmp) {
  struct stat st;
  ASSERT_EQ(stat("/tmp", &st), 0);
  if (!(st.st_mode & S_IWOTH)) GTEST_SKIP() << "/tmp is not world-writable here";
  EXPECT_THAT(SuspiciousMarks("/tmp/payload", false), ElementsAre("world_writable_dir"));
  EXPECT_THAT(SuspiciousMarks("/usr/bin/env", false), IsEmpty());
}

}  // namespace
}  // namespace sockwatch

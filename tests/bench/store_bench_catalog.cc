#include "tests/bench/store_bench_catalog.h"

namespace sockwatch::store_bench {

// A table: one image per entry, laid out by hand.
// clang-format off
const std::vector<ImageSpec>& Catalog() {
  static const auto* catalog = new std::vector<ImageSpec>{
    // Every host.
    {"/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
     kAll, kByRole, 3, 0, kHashed, {{kIn, kTcp, 22, kBastions}}},
    {"/usr/lib/systemd/systemd-resolved", "/lib/systemd/systemd-resolved",
     kAll, kByRole, 14, 101, kHashed, {{kOut, kUdp, 53, kDns}}},
    {"/usr/sbin/chronyd", "/usr/sbin/chronyd -F 1",
     kAll, kByRole, 1, 0, kHashed, {{kOut, kUdp, 123, kNtp}}},
    {"/usr/lib/apt/methods/http", "/usr/lib/apt/methods/http",
     kAll, kByRole, 1, 42, kHashed, {{kOut, kTcp, 80, kMirrors}, {kOut, kTcp, 443, kMirrors}}},
    {"/usr/bin/curl", "curl -fsS --max-time 5 https://status.example.net/api/v2/health?host=%h",
     kAll, kByRole, 3, 1000, kHashed, {{kOut, kTcp, 443, kSaas}}},
    {"/usr/bin/prometheus-node-exporter",
     "/usr/bin/prometheus-node-exporter --collector.systemd --web.listen-address=:9100",
     kAll, kByRole, 4, 65534, kHashed, {{kIn, kTcp, 9100, kMonitoring}}},
    {"/opt/fluent-bit/bin/fluent-bit",
     "/opt/fluent-bit/bin/fluent-bit -c /etc/fluent-bit/fluent-bit.conf",
     kAll, kByRole, 6, 0, kHashed, {{kOut, kTcp, 5044, kLogs}}},
    {"/usr/sbin/sockwatch-agent",
     "/usr/sbin/sockwatch-agent --collector=collector.internal:4443 "
     "--spool_dir=/var/lib/sockwatch/spool",
     kAll, kByRole, 2, 0, kHashed, {{kOut, kTcp, 4443, kCollector}}},
    {"/usr/bin/python3.11", "/usr/bin/python3 /usr/bin/unattended-upgrade --download-only",
     kAll, kByRole, 1, 0, kHashed, {{kOut, kTcp, 443, kMirrors}}},
    {"/usr/sbin/rsyslogd", "/usr/sbin/rsyslogd -n -iNONE",
     kAll, kByRole, 1, 0, kHashed, {{kOut, kUdp, 514, kLogs}}},
    {"/usr/sbin/snmpd",
     "/usr/sbin/snmpd -LOw -u Debian-snmp -g Debian-snmp -I -smux mteTrigger -f",
     kAll, kByRole, 1, 0, kHashed, {{kIn, kUdp, 161, kMonitoring}}},
    {"/usr/bin/consul", "consul agent -config-dir=/etc/consul.d -node=%h",
     kAll, kByRole, 3, 998, kHashed, {{kOut, kTcp, 8300, kConsul}, {kIn, kUdp, 8301, kConsul}}},
    {"/usr/bin/osqueryd",
     "/usr/bin/osqueryd --flagfile /etc/osquery/osquery.flags "
     "--config_path /etc/osquery/osquery.conf",
     kAll, kByRole, 1, 0, kHashed, {{kOut, kTcp, 443, kSaas}}},
    {"/usr/lib/postfix/sbin/smtp", "smtp -t unix -u -c",
     kAll, kByRole, 1, 107, kPlain, {{kOut, kTcp, 25, kMail}}},
    {"/usr/bin/ssh", "ssh -o BatchMode=yes -i /root/.ssh/backup_ed25519 backup@10.0.9.10 true",
     kAll, kByRole, 1, 0, kHashed, {{kOut, kTcp, 22, kBastions}}},
    {"/usr/bin/bash", "-bash", kAll, kByRole, 0, 1000, kHashed, {}},
    {"/usr/sbin/cron", "/usr/sbin/cron -f", kAll, kByRole, 0, 0, kHashed, {}},
    {"/usr/bin/sudo", "sudo -n /usr/sbin/service nginx reload",
     kAll, kByRole, 0, 1000, kHashed, {}},
    {"/usr/sbin/logrotate", "/usr/sbin/logrotate /etc/logrotate.conf",
     kAll, kByRole, 0, 0, kHashed, {}},
    {"/usr/bin/gzip", "gzip -9 /var/log/syslog.1", kAll, kByRole, 0, 0, kHashed, {}},
    {"/usr/bin/systemctl", "systemctl is-active --quiet nginx.service",
     kAll, kByRole, 0, 0, kHashed, {}},
    {"/usr/bin/find", "find /var/tmp -mtime +7 -type f -delete",
     kAll, kByRole, 0, 0, kHashed, {}},
    {"/usr/bin/dig", "dig +short collector.internal",
     kAll, kByRole, 1, 1000, kHashed, {{kOut, kUdp, 53, kDns}}},
    // Web front ends.
    {"/usr/sbin/nginx", "nginx: worker process",
     kWeb, kByRole, 30, 33, kHashed,
     {{kIn, kTcp, 443, kBalancers}, {kIn, kTcp, 80, kBalancers}, {kOut, kTcp, 8080, kLoopback}}},
    {"/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
     "java -Xms2g -Xmx2g -XX:+UseG1GC -jar /opt/shop/shop-api.jar --server.port=8080 "
     "--spring.profiles.active=prod",
     kWeb, kByRole, 35, 1001, kHashed,
     {{kIn, kTcp, 8080, kLoopback}, {kOut, kTcp, 5432, kDatabases}, {kOut, kTcp, 6379, kCaches},
      {kOut, kTcp, 9092, kQueues}}},
    // Databases.
    {"/usr/lib/postgresql/15/bin/postgres", "postgres: 15/main: shop shop 10.20.3.7(52144) idle",
     kDb, kByRole, 50, 105, kHashed,
     {{kIn, kTcp, 5432, kAppHosts}, {kOut, kTcp, 5432, kDatabases}}},
    {"/usr/bin/pgbackrest",
     "pgbackrest --stanza=main archive-push pg_wal/000000010000002A000000F1",
     kDb, kByRole, 3, 105, kHashed, {{kOut, kTcp, 443, kSaas}}},
    // Queue workers.
    {"/usr/bin/python3.11",
     "/usr/bin/python3 -m celery -A jobs worker --loglevel=INFO --concurrency=8 -n worker@%h",
     kWorker, kByRole, 40, 1002, kHashed,
     {{kOut, kTcp, 6379, kCaches}, {kOut, kTcp, 5432, kDatabases}, {kOut, kTcp, 443, kSaas}}},
    {"/usr/bin/ffmpeg",
     "ffmpeg -nostdin -i /srv/jobs/in/clip.mov -c:v libx264 -preset fast /srv/jobs/out/clip.mp4",
     kWorker, kByRole, 0, 1002, kHashed, {}},
    // Build machines.
    {"/usr/bin/git", "git fetch --prune --tags origin",
     kBuild, kByRole, 8, 1003, kHashed, {{kOut, kTcp, 443, kGitHub}, {kOut, kTcp, 22, kGitHub}}},
    {"/usr/bin/dockerd",
     "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
     kBuild, kByRole, 10, 0, kHashed, {{kOut, kTcp, 443, kRegistries}}},
    {"/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
     "java -Xmx4g -cp /root/.gradle/wrapper/dists/gradle-8.5-bin/gradle-launcher-8.5.jar "
     "org.gradle.launcher.daemon.bootstrap.GradleDaemon 8.5",
     kBuild, kByRole, 15, 1003, kHashed, {{kOut, kTcp, 443, kMirrors}, {kOut, kTcp, 443, kSaas}}},
    {"/usr/bin/make", "make -j8 all", kBuild, kByRole, 0, 1003, kHashed, {}},
    {"/usr/bin/x86_64-linux-gnu-gcc-12", "gcc -O2 -g -c src/main.c -o build/main.o",
     kBuild, kByRole, 0, 1003, kHashed, {}},
    // Kubernetes nodes.
    {"/usr/bin/kubelet",
     "/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml --hostname-override=%h",
     kK8s, kByRole, 20, 0, kHashed,
     {{kOut, kTcp, 6443, kApiServers}, {kIn, kTcp, 10250, kApiServers}}},
    {"/usr/bin/containerd", "/usr/bin/containerd",
     kK8s, kByRole, 3, 0, kHashed, {{kOut, kTcp, 443, kRegistries}}},
    {"/usr/local/bin/kube-proxy",
     "/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=%h",
     kK8s, kByRole, 4, 0, kHashed | kContainer, {{kOut, kTcp, 6443, kApiServers}}},
    {"/app/bin/checkout-svc",
     "/app/bin/checkout-svc --listen=:8443 --db=postgres://checkout@10.30.1.10/checkout",
     kK8s, kByRole, 30, 10001, kHashed | kContainer,
     {{kIn, kTcp, 8443, kBalancers}, {kOut, kTcp, 5432, kDatabases}, {kOut, kTcp, 9092, kQueues}}},
    {"/usr/local/bin/node", "node --max-old-space-size=1024 /app/server.js",
     kK8s, kByRole, 20, 10002, kContainer,
     {{kIn, kTcp, 3000, kBalancers}, {kOut, kTcp, 443, kSaas}, {kOut, kTcp, 6379, kCaches}}},
    // Rare: a vendor agent on 1 host in 37, a per-host tool (its own path on
    // 1 host in 50), and an implant on 3 hosts.
    {"/opt/acme-backup/bin/acme-backupd",
     "/opt/acme-backup/bin/acme-backupd --config /etc/acme-backup.yml",
     kAll, kOneIn37, 3, 0, kHashed, {{kOut, kTcp, 443, kSaas}}},
    {"/home/ops/bin/%h/rsync-helper", "/home/ops/bin/%h/rsync-helper --push /srv/data",
     kAll, kOneIn50Unique, 1, 1000, kPlain, {{kOut, kTcp, 873, kAppHosts}}},
    {"/tmp/.ICE-unix/.kworker", "[kworker/u8:2]",
     kAll, kThreeHosts, 1, 33, kHashed, {{kOut, kTcp, 4444, kTor}}},
  };
  return *catalog;
}
// clang-format on

size_t IndexOf(absl::string_view exe) {
  const auto& catalog = Catalog();
  for (size_t i = 0; i < catalog.size(); ++i)
    if (catalog[i].exe == exe) return i;
  return catalog.size();
}

}  // namespace sockwatch::store_bench

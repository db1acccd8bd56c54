/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The records that cross the ring buffer, shared by the BPF programs and the
 * agent's decoder (agent/decoder.cc static_asserts every size and offset).
 * Plain C, fixed-width types, explicit padding, no implicit holes.
 * Kinds are fixed numbers: never renumber or reuse one.
 */
#ifndef SOCKWATCH_BPF_EVENTS_H_
#define SOCKWATCH_BPF_EVENTS_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define SW_TASK_COMM_LEN 16
#define SW_PATH_MAX 4096 /* exe path, as reversed NUL-separated components */
#define SW_PATH_DEPTH 48 /* dentry components walked */
#define SW_ARGV_MAX 8192 /* argv bytes kept; more sets SW_EXEC_ARGV_TRUNCATED */

enum sw_kind {
	SW_KIND_EXEC = 1,
	SW_KIND_FORK = 2,
	SW_KIND_EXIT = 3,
	SW_KIND_TCP_CONNECT = 4, /* outcome known: established or failed */
	SW_KIND_TCP_ACCEPT = 5,
	SW_KIND_TCP_LISTEN = 6,
	SW_KIND_TCP_CLOSE = 7, /* flow end: duration and bytes */
	SW_KIND_UDP_SEND = 8,
	SW_KIND_UDP_RECV = 9,
	SW_KIND_UDP_CONNECT = 10,
	SW_KIND_PAYLOAD = 11, /* tc: first payload bytes of a new flow */
	SW_KIND_ORPHAN = 12,  /* tc: a packet outside any established flow */
};

/* Every record starts with this header. */
struct sw_header {
	__u16 kind;  /* enum sw_kind */
	__u16 cpu;
	__u32 size;  /* bytes of the whole record, header included */
	__u64 ts_ns; /* CLOCK_BOOTTIME */
};

/* Who did it, read in process context. */
struct sw_task {
	__u32 tgid;
	__u32 pid;          /* thread id */
	__u64 start_ns;     /* thread group leader start, CLOCK_BOOTTIME */
	__u64 cgroup_id;    /* cgroup v2 id */
	__u32 uid;
	__u32 gid;
	char comm[SW_TASK_COMM_LEN];
};

enum sw_exec_flags {
	SW_EXEC_ARGV_TRUNCATED = 1 << 0,
	SW_EXEC_PATH_TRUNCATED = 1 << 1, /* too deep or too long */
	SW_EXEC_ARGV_FAULT = 1 << 2,     /* argv pages could not be read */
	SW_EXEC_PATH_DELETED = 1 << 3,   /* exe file unlinked */
	SW_EXEC_PATH_FAULT = 1 << 4,
};

/* Variable size: header.size = offsetof(data) + path_len + argv_len.
 * data holds path_len bytes of path components (leaf first, each NUL
 * terminated, the mount root ends the list), then argv_len bytes of argv
 * (NUL separated, as in mm->arg_start..arg_end). */
struct sw_exec {
	struct sw_header hdr;
	struct sw_task task;
	__u32 ppid;        /* real parent tgid */
	__u32 flags;       /* enum sw_exec_flags */
	__u64 parent_start_ns;
	__u32 path_len;
	__u32 argv_len;
	__u32 argv_full_len; /* arg_end - arg_start, before truncation */
	__u32 pad;
	char data[SW_PATH_MAX + SW_ARGV_MAX];
};

struct sw_fork {
	struct sw_header hdr;
	struct sw_task child;
	__u32 ppid;
	__u32 pad;
	__u64 parent_start_ns;
};

struct sw_exit {
	struct sw_header hdr;
	struct sw_task task;
	__s32 exit_code;
	__u32 pad;
};

enum sw_direction {
	SW_DIR_UNKNOWN = 0,
	SW_DIR_OUTBOUND = 1,
	SW_DIR_INBOUND = 2,
};

/* Outcome of a TCP connect: 0 = established, else the socket's errno. */
#define SW_OUTCOME_ESTABLISHED 0

/* TCP and UDP flows. Addresses in network byte order; IPv4 lives in the
 * first 4 bytes of the 16. Ports in host byte order. */
struct sw_net {
	struct sw_header hdr;
	struct sw_task task;  /* the owning process; tgid 0 if unknown */
	__u8 saddr[16];       /* local */
	__u8 daddr[16];       /* remote */
	__u16 sport;
	__u16 dport;
	__u16 family;         /* AF_INET / AF_INET6 */
	__u8 protocol;        /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 direction;       /* enum sw_direction */
	__s32 outcome;        /* errno of a failed connect; 0 otherwise */
	__u32 netns_ino;      /* network namespace inode (/proc/PID/ns/net) */
	__u64 sock_cookie;    /* socket cookie (SO_COOKIE); joins with tc records */
	__u64 duration_ns;    /* TCP_CLOSE: establishment to close */
	__u64 bytes_sent;     /* TCP_CLOSE: bytes acked by the peer */
	__u64 bytes_received; /* TCP_CLOSE */
};

/* Value of the TCP owner map (key: socket cookie): who owns a socket, recorded
 * in process context; the agent seeds it for sockets older than itself. */
struct sw_sk_owner {
	struct sw_task task;  /* of the connecting or accepting process */
	__u64 established_ns; /* connect's handshake or accept(); 0 if unknown
			       * (socket older than the agent) */
	__u8 direction;       /* enum sw_direction */
	__u8 pad[7];
};

/* Largest payload sample per record; the agent sets how many bytes and
 * segments per flow direction it wants (packet.bpf.c rodata). */
#define SW_SAMPLE_MAX 1024

/* tc: payload bytes of one segment (or datagram) of a new flow, as seen on
 * the wire. Addresses as on the wire: src -> dst. Fixed size; data holds
 * len bytes. */
struct sw_payload {
	struct sw_header hdr;
	struct sw_task task;   /* the socket's owner as the TCP probes recorded it; tgid 0 if unknown */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 protocol;         /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 direction;        /* SW_DIR_OUTBOUND: egress, SW_DIR_INBOUND: ingress */
	__u32 ifindex;
	__u32 pad0;
	__u64 sock_cookie;     /* the local socket; 0 if none was found */
	__u32 offset;          /* payload bytes of this direction sampled before this one */
	__u32 wire_len;        /* payload bytes of the packet (may exceed len) */
	__u16 len;             /* bytes in data */
	__u8 segment;          /* 0 for the first payload segment of this direction */
	__u8 tcp_flags;
	__u8 from_client;      /* this direction opened the flow (SYN / first datagram) */
	__u8 pad[3];
	__u8 data[SW_SAMPLE_MAX];
};

/* Why a packet belongs to no established flow. */
enum sw_orphan_pattern {
	SW_ORPHAN_TCP_NULL = 0,  /* no flags at all (NULL scan) */
	SW_ORPHAN_TCP_FIN = 1,   /* FIN alone (FIN scan) */
	SW_ORPHAN_TCP_XMAS = 2,  /* FIN+PSH+URG (Xmas scan) */
	SW_ORPHAN_TCP_ACK = 3,   /* ACK without SYN/FIN/RST (ACK scan, stray data) */
	SW_ORPHAN_TCP_RST = 4,   /* RST (blind reset injection) */
	SW_ORPHAN_TCP_SYNACK = 5, /* SYN+ACK with no connect in progress (gratuitous) */
	SW_ORPHAN_TCP_OTHER = 6, /* any other flag combination */
	SW_ORPHAN_UDP = 7,       /* UDP to a port with no socket */
	SW_ORPHAN_DNS_ANSWER = 8, /* DNS answer matching no query sent (gratuitous) */
	SW_ORPHAN_MAX = 9,
};

/* tc ingress: a sampled packet outside any established flow, to a local
 * address. Addresses as on the wire (src = the remote sender). */
struct sw_orphan {
	struct sw_header hdr;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 protocol;
	__u8 pattern;          /* enum sw_orphan_pattern */
	__u32 ifindex;
	__u8 tcp_flags;
	__u8 pad[3];
	__u64 sock_cookie;     /* a listener the packet hit, or the UDP socket a
				  gratuitous DNS answer reached; 0 if none */
	__u64 source_total;    /* orphans from this source so far (all patterns) */
};

/* Per-source orphan counters (map sw_orphan_src, key: 16-byte address). */
struct sw_orphan_counts {
	__u64 counts[SW_ORPHAN_MAX];
	__u64 window_start_ns; /* sampling window */
	__u32 sampled;         /* samples sent in the window */
	__u32 pad;
};

/* Index into the per-CPU counter array `sw_counters`. Never renumber. */
enum sw_counter {
	SW_CNT_RINGBUF_FULL = 0,   /* a record could not be reserved: lost */
	SW_CNT_EXEC_ARGV_FAULT = 1,
	SW_CNT_EXEC_PATH_FAULT = 2,
	SW_CNT_OWNER_MAP_FULL = 3, /* socket owner not recorded: attribution lost */
	SW_CNT_OWNER_MISSING = 4,  /* flow seen without an owner record */
	SW_CNT_UDP_DEDUP_HIT = 5,  /* suppressed repeats (not a loss) */
	SW_CNT_FD_RESOLVE_FAIL = 6,
	SW_CNT_RETIRED_7 = 7,      /* was: pending syscall map full */
	SW_CNT_FLOW_MAP_FULL = 8,  /* tc: a new flow not tracked: its bytes not inspected */
	SW_CNT_SAMPLE_SKIPPED = 9, /* tc: out-of-order/retransmitted segment not sampled (not a loss) */
	SW_CNT_ORPHAN_NOT_SAMPLED = 10, /* tc: orphan counted but over the sample rate (not a loss) */
	SW_CNT_PARSE_FAIL = 11,    /* tc: packet headers could not be read: not inspected */
	SW_CNT_MAX = 12,
};

#endif /* SOCKWATCH_BPF_EVENTS_H_ */

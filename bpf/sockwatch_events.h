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
	struct sw_task task;  /* tgid 0 until known (passive open before accept) */
	__u64 established_ns; /* 0 if unknown (socket older than the agent) */
	__u8 direction;       /* enum sw_direction */
	__u8 pad[7];
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
	SW_CNT_MAX = 8,
};

#endif /* SOCKWATCH_BPF_EVENTS_H_ */

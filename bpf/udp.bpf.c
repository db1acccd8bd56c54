// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * UDP: unconnected sends (cgroup/sendmsg4|6), receives with a source address
 * (cgroup/recvmsg4|6), and connected sockets (connect() syscall exit, where
 * the local port is bound). All run in the owning process's context.
 * Repeats of (process, socket, remote, direction) are suppressed by a bounded
 * LRU so a DNS-heavy process cannot flood the ring buffer.
 */
#include "common.bpf.h"

struct dedup_key {
	__u64 cookie;
	__u32 tgid;
	__u16 rport;
	__u8 direction;
	__u8 pad;
	__u8 raddr[16];
};

/* Size set by the agent (--udp-dedup-entries). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dedup_key);
	__type(value, __u64); /* first seen, boot ns */
} sw_udp_seen SEC(".maps");

/* 1 if this (process, socket, remote, direction) was already reported. */
static __always_inline int seen_before(struct sw_net *e)
{
	struct dedup_key k = {
		.cookie = e->sock_cookie,
		.tgid = e->task.tgid,
		.rport = e->dport,
		.direction = e->direction,
	};
	__builtin_memcpy(k.raddr, e->daddr, sizeof(k.raddr));
	if (bpf_map_lookup_elem(&sw_udp_seen, &k)) {
		count(SW_CNT_UDP_DEDUP_HIT);
		return 1;
	}
	__u64 now = e->hdr.ts_ns;
	bpf_map_update_elem(&sw_udp_seen, &k, &now, BPF_ANY);
	return 0;
}

static __always_inline struct sw_net *udp_record(enum sw_kind kind, __u8 direction)
{
	struct sw_net *e = reserve(sizeof(*e), kind);
	if (!e)
		return NULL;
	__builtin_memset((char *)e + sizeof(e->hdr), 0, sizeof(*e) - sizeof(e->hdr));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_task_from(&e->task, task);
	e->netns_ino = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	e->protocol = IPPROTO_UDP;
	e->direction = direction;
	return e;
}

/* The remote comes from the sockaddr the program sees; the local side from
 * the socket (bound by now: inet_sendmsg autobinds before the hook). */
static __always_inline int sock_addr_event(struct bpf_sock_addr *ctx, enum sw_kind kind,
					   __u8 direction, const int v6)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return 1;
	struct sw_net *e = udp_record(kind, direction);
	if (!e)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	e->family = v6 ? AF_INET6 : AF_INET; /* the verifier allows only one */
	e->dport = bpf_ntohs((__u16)ctx->user_port);
	e->sock_cookie = bpf_get_socket_cookie(ctx);
	/* bpf_sock fields must be loaded at constant offsets: barrier_var keeps
	 * the compiler from folding the base pointer into arithmetic. */
	if (sk) {
		barrier_var(sk);
		e->sport = sk->src_port;
	}
	if (v6) {
		__u32 *d = (__u32 *)e->daddr, *s = (__u32 *)e->saddr;
		d[0] = ctx->user_ip6[0];
		d[1] = ctx->user_ip6[1];
		d[2] = ctx->user_ip6[2];
		d[3] = ctx->user_ip6[3];
		if (sk) {
			barrier_var(sk);
			s[0] = sk->src_ip6[0];
			barrier_var(sk);
			s[1] = sk->src_ip6[1];
			barrier_var(sk);
			s[2] = sk->src_ip6[2];
			barrier_var(sk);
			s[3] = sk->src_ip6[3];
		}
	} else {
		*(__u32 *)e->daddr = ctx->user_ip4;
		if (sk) {
			barrier_var(sk);
			*(__u32 *)e->saddr = sk->src_ip4;
		}
	}
	if (seen_before(e))
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
	else
		submit(e);
	return 1; /* never block the traffic */
}

SEC("cgroup/sendmsg4")
int sw_udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr_event(ctx, SW_KIND_UDP_SEND, SW_DIR_OUTBOUND, 0);
}

SEC("cgroup/sendmsg6")
int sw_udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr_event(ctx, SW_KIND_UDP_SEND, SW_DIR_OUTBOUND, 1);
}

SEC("cgroup/recvmsg4")
int sw_udp_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr_event(ctx, SW_KIND_UDP_RECV, SW_DIR_INBOUND, 0);
}

SEC("cgroup/recvmsg6")
int sw_udp_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr_event(ctx, SW_KIND_UDP_RECV, SW_DIR_INBOUND, 1);
}

SEC("tp/syscalls/sys_exit_connect")
int sw_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret != 0)
		return 0;
	struct sock *sk = sock_from_fd(syscall_arg1());
	if (!sk) {
		count(SW_CNT_FD_RESOLVE_FAIL);
		return 0;
	}
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0; /* TCP is traced by its state changes */
	struct sw_net *e = udp_record(SW_KIND_UDP_CONNECT, SW_DIR_OUTBOUND);
	if (!e)
		return 0;
	read_sock_tuple(e, sk);
	if (e->dport == 0) {
		/* connect(AF_UNSPEC) dissolves the association: nothing to report */
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->sock_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (seen_before(e))
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
	else
		submit(e);
	return 0;
}

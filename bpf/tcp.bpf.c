// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP: connect outcome, accept, listen, flow end.
 * The owner of a socket is recorded in process context (CLOSE->SYN_SENT runs
 * inside connect(); accept and listen are syscall exits) and keyed by socket,
 * because the handshake completes in softirq where `current` is unrelated.
 */
#include "common.bpf.h"

#define ECANCELED 125
#define ECONNRESET 104
#define RCV_SHUTDOWN 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* socket cookie */
	__type(value, struct sw_sk_owner);
} sw_sk_owner SEC(".maps");

static __always_inline void read_sock_tuple_btf(struct sw_net *e, struct sock *sk);

/* btf: sk is a trusted BTF pointer (tp_btf), read with plain loads. */
static __always_inline struct sw_net *net_record(enum sw_kind kind, struct sock *sk,
						 struct sw_task *task, __u8 direction, const int btf,
						 __u64 now)
{
	struct sw_net *e = reserve_at(sizeof(*e), kind, now);
	if (!e)
		return NULL;
	__builtin_memset((char *)e + sizeof(e->hdr), 0, sizeof(*e) - sizeof(e->hdr));
	if (task)
		e->task = *task;
	if (btf)
		read_sock_tuple_btf(e, sk);
	else
		read_sock_tuple(e, sk);
	e->protocol = IPPROTO_TCP;
	e->direction = direction;
	return e;
}

static __always_inline void owner_put(__u64 key, struct sw_sk_owner *o, __u64 flags)
{
	if (bpf_map_update_elem(&sw_sk_owner, &key, o, flags) == -7 /* E2BIG */)
		count(SW_CNT_OWNER_MAP_FULL);
}

/* read_sock_tuple for the BTF tracepoint, where sk is a trusted pointer:
 * plain loads instead of a helper call per field. */
static __always_inline void read_sock_tuple_btf(struct sw_net *e, struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	e->family = sk->__sk_common.skc_family;
	e->netns_ino = sk->__sk_common.skc_net.net->ns.inum;
	/* inet_sport survives inet_put_port (which zeroes skc_num on close). */
	e->sport = tp ? bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport) : 0;
	if (!e->sport)
		e->sport = sk->__sk_common.skc_num;
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (e->family == AF_INET6) {
		__builtin_memcpy(e->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(e->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
	}
}

static __always_inline int state_established_family(int s)
{
	return s == TCP_ESTABLISHED || s == TCP_FIN_WAIT1 || s == TCP_FIN_WAIT2 ||
	       s == TCP_CLOSE_WAIT || s == TCP_LAST_ACK || s == TCP_CLOSING;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sw_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* Most of a connection's ~10 transitions carry nothing new: leave before
	 * any helper call (this runs in the hot path of every TCP socket). */
	const int opening = oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT;
	const int outcome = oldstate == TCP_SYN_SENT;
	const int passive = oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED;
	const int closing = newstate == TCP_CLOSE;
	if (!opening && !outcome && !passive && !closing)
		return 0;
	/* The cookie, not the pointer: unique for the socket's life, shared with
	 * sock_diag (the agent seeds owners of older sockets) and with tc. */
	__u64 key = bpf_get_socket_cookie(sk);

	if (passive) {
		/* Passive open, in softirq, inside the client's connect() on
		 * loopback: only assign the cookie (above), so that accept() can
		 * read it. The owner, and the flow's start, come with accept(). */
		return 0;
	}

	if (opening) {
		/* Inside connect(): current is the owner. */
		struct sw_sk_owner o = {.direction = SW_DIR_OUTBOUND};
		fill_current_task(&o.task);
		owner_put(key, &o, BPF_ANY);
		return 0;
	}

	__u64 now = bpf_ktime_get_boot_ns();
	if (outcome) {
		struct sw_sk_owner *o = bpf_map_lookup_elem(&sw_sk_owner, &key);
		if (!o)
			count(SW_CNT_OWNER_MISSING);
		struct sw_net *e = net_record(SW_KIND_TCP_CONNECT, sk, o ? &o->task : NULL,
					      SW_DIR_OUTBOUND, 1, now);
		if (e) {
			if (newstate == TCP_ESTABLISHED) {
				e->outcome = SW_OUTCOME_ESTABLISHED;
			} else {
				int err = BPF_CORE_READ(sk, sk_err);
				e->outcome = err ? err : ECANCELED;
			}
			e->sock_cookie = key;
			submit(e);
		}
		if (newstate == TCP_ESTABLISHED && o)
			o->established_ns = now;
		else if (newstate != TCP_ESTABLISHED)
			bpf_map_delete_elem(&sw_sk_owner, &key);
		return 0;
	}

	if (newstate == TCP_CLOSE && state_established_family(oldstate)) {
		struct sw_sk_owner *o = bpf_map_lookup_elem(&sw_sk_owner, &key);
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		struct sw_net *e = net_record(SW_KIND_TCP_CLOSE, sk, o ? &o->task : NULL,
					      o ? o->direction : SW_DIR_UNKNOWN, 1, now);
		if (e) {
			e->sock_cookie = key;
			e->duration_ns = o && o->established_ns ? now - o->established_ns : 0;
			/* Payload bytes: the counters include retransmissions and the
			 * peer's FIN, which are not data the application moved. */
			e->bytes_sent = BPF_CORE_READ(tp, bytes_sent) - BPF_CORE_READ(tp, bytes_retrans);
			__u64 rcvd = BPF_CORE_READ(tp, bytes_received);
			__u8 shut = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown);
			if (rcvd && (shut & RCV_SHUTDOWN) && BPF_CORE_READ(sk, sk_err) != ECONNRESET)
				rcvd--;
			e->bytes_received = rcvd;
			submit(e);
		}
		if (o)
			bpf_map_delete_elem(&sw_sk_owner, &key);
	} else if (newstate == TCP_CLOSE) {
		bpf_map_delete_elem(&sw_sk_owner, &key); /* e.g. a listener */
	}
	return 0;
}

/* The new fd is the return value: no enter hook (and no map update) needed. */
static __always_inline int accept_exit(long ret)
{
	if (ret < 0)
		return 0;
	struct sock *sk = sock_from_fd(ret);
	if (!sk) {
		count(SW_CNT_FD_RESOLVE_FAIL);
		return 0;
	}
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	/* Assigned when the handshake completed (tp_btf above); 0 only for a
	 * connection that was queued before the agent started. An owner is
	 * there already only if the agent seeded it from its socket snapshot.
	 * An inbound flow's duration counts from here: recording the handshake
	 * time in softirq would add a map update to the client's connect(). */
	__u64 key = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	__u64 now = bpf_ktime_get_boot_ns();
	struct sw_sk_owner *o = key ? bpf_map_lookup_elem(&sw_sk_owner, &key) : NULL;
	struct sw_sk_owner fresh = {};
	if (!o) {
		fresh.established_ns = now;
		fresh.direction = SW_DIR_INBOUND;
		o = &fresh;
	}
	fill_current_task(&o->task);
	if (o == &fresh) {
		if (key)
			owner_put(key, &fresh, BPF_ANY);
		else
			count(SW_CNT_OWNER_MISSING);
	}

	struct sw_net *e = net_record(SW_KIND_TCP_ACCEPT, sk, &o->task, SW_DIR_INBOUND, 0, now);
	if (!e)
		return 0;
	e->sock_cookie = key;
	submit(e);
	return 0;
}

SEC("tp/syscalls/sys_exit_accept4")
int sw_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_accept")
int sw_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_listen")
int sw_listen_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret != 0)
		return 0;
	struct sock *sk = sock_from_fd(syscall_arg1());
	if (!sk) {
		count(SW_CNT_FD_RESOLVE_FAIL);
		return 0;
	}
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct sw_task task;
	fill_current_task(&task);
	struct sw_net *e = net_record(SW_KIND_TCP_LISTEN, sk, &task, SW_DIR_INBOUND, 0,
				      bpf_ktime_get_boot_ns());
	if (!e)
		return 0;
	submit(e);
	return 0;
}

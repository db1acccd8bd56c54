// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc (clsact) ingress and egress on the inspected interfaces:
 *  - the first payload bytes of each direction of every new flow go to the
 *    agent with the 5-tuple and the local socket's cookie, which joins them
 *    with the process that owns the socket (tcp.bpf.c records owners by cookie);
 *  - packets to a local address that belong to no flow (TCP other than SYN
 *    with no socket, or only a listener; UDP to a port with no socket; DNS
 *    answers to no query sent) are counted per source and sampled.
 * Never changes a packet's fate: every path returns TC_ACT_UNSPEC.
 */
#include "common.bpf.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20

#define NS_PER_SEC 1000000000ULL

/* Set by the agent before load. */
const volatile __u32 sample_bytes = 256;   /* per flow direction, <= SW_SAMPLE_MAX */
const volatile __u32 sample_segments = 3;  /* per flow direction */
const volatile __u32 orphan_samples_per_sec = 16; /* per source */

/* Directional: src -> dst as on the wire. IPv4 in the first 4 bytes. */
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 pad[3];
};

struct flow_state {
	__u32 next_seq;  /* TCP: the next in-order sequence number */
	__u32 sampled;   /* payload bytes sent to the agent */
	__u8 segments;   /* payload segments sent */
	__u8 has_seq;
	__u8 from_client; /* this direction opened the flow */
	__u8 pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} sw_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u8[16]);
	__type(value, struct sw_orphan_counts);
} sw_orphan_src SEC(".maps");

/* Local addresses of the inspected namespace (the agent keeps it current):
 * orphan checks only judge packets addressed to this host, not routed ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u8[16]);
	__type(value, __u8);
} sw_local_addrs SEC(".maps");

struct dns_query_key {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port;
	__u16 id;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dns_query_key);
	__type(value, __u8);
} sw_dns_queries SEC(".maps");

/* The TCP owner map of tcp.bpf.c (the agent shares its fd). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sw_sk_owner);
} sw_sk_owner SEC(".maps");

struct pkt {
	struct flow_key key;
	__u16 family;
	__u8 tcp_flags;
	__u8 ingress;
	__u32 seq;
	__u32 l4_off;      /* offset of the L4 header */
	__u32 payload_off;
	__u32 payload_len;
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u32 off = ETH_HLEN;
	__u32 l3_payload;
	if (proto == ETH_P_IP) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return -1;
		if (bpf_ntohs(ip.frag_off) & IP_OFFSET)
			return 1; /* not a first fragment: no L4 header */
		__u32 ihl = ip.ihl * 4;
		if (ihl < sizeof(ip))
			return -1;
		p->family = AF_INET;
		p->key.protocol = ip.protocol;
		__builtin_memcpy(p->key.saddr, &ip.saddr, 4);
		__builtin_memcpy(p->key.daddr, &ip.daddr, 4);
		__u32 tot = bpf_ntohs(ip.tot_len);
		if (tot && tot < ihl)
			return -1;
		/* BIG TCP GSO packets carry tot_len 0. */
		l3_payload = tot ? tot - ihl : skb->len - off - ihl;
		off += ihl;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return -1;
		p->family = AF_INET6;
		p->key.protocol = ip6.nexthdr; /* extension headers: not inspected */
		__builtin_memcpy(p->key.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->key.daddr, &ip6.daddr, 16);
		__u32 plen = bpf_ntohs(ip6.payload_len);
		l3_payload = plen ? plen : skb->len - off - sizeof(ip6);
		off += sizeof(ip6);
	} else {
		return 1;
	}
	p->l4_off = off;
	if (p->key.protocol == IPPROTO_TCP) {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
			return -1;
		__u32 doff = th.doff * 4;
		if (doff < sizeof(th) || doff > l3_payload)
			return -1;
		p->key.sport = bpf_ntohs(th.source);
		p->key.dport = bpf_ntohs(th.dest);
		p->seq = bpf_ntohl(th.seq);
		p->tcp_flags = ((__u8 *)&th)[13];
		p->payload_off = off + doff;
		p->payload_len = l3_payload - doff;
		return 0;
	}
	if (p->key.protocol == IPPROTO_UDP) {
		struct udphdr uh;
		if (bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)))
			return -1;
		p->key.sport = bpf_ntohs(uh.source);
		p->key.dport = bpf_ntohs(uh.dest);
		__u32 ulen = bpf_ntohs(uh.len);
		if (ulen < sizeof(uh))
			return -1;
		p->payload_off = off + sizeof(uh);
		p->payload_len = ulen - sizeof(uh);
		return 0;
	}
	return 1;
}

static __always_inline void reverse_key(const struct flow_key *k, struct flow_key *r)
{
	__builtin_memcpy(r->saddr, k->daddr, 16);
	__builtin_memcpy(r->daddr, k->saddr, 16);
	r->sport = k->dport;
	r->dport = k->sport;
	r->protocol = k->protocol;
}

static __always_inline void track_new(const struct flow_key *k, const struct flow_state *s)
{
	if (bpf_map_update_elem(&sw_flows, k, s, BPF_NOEXIST) == -7 /* E2BIG */)
		count(SW_CNT_FLOW_MAP_FULL);
}

/* The lookup tuple of an ingress packet (src = remote); returns its size. */
static __always_inline __u32 make_tuple(const struct pkt *p, struct bpf_sock_tuple *t)
{
	if (p->family == AF_INET) {
		__builtin_memcpy(&t->ipv4.saddr, p->key.saddr, 4);
		__builtin_memcpy(&t->ipv4.daddr, p->key.daddr, 4);
		t->ipv4.sport = bpf_htons(p->key.sport);
		t->ipv4.dport = bpf_htons(p->key.dport);
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, p->key.saddr, 16);
	__builtin_memcpy(t->ipv6.daddr, p->key.daddr, 16);
	t->ipv6.sport = bpf_htons(p->key.sport);
	t->ipv6.dport = bpf_htons(p->key.dport);
	return sizeof(t->ipv6);
}

/* The cookie of a looked-up TCP socket (assigned by tcp.bpf.c when it
 * opened; 0 for request and time-wait sockets). UDP sockets: 0 — the agent
 * joins those by local port. */
static __always_inline __u64 cookie_of(struct bpf_sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
}

static __always_inline __u8 tcp_pattern(__u8 f)
{
	if ((f & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK))
		return SW_ORPHAN_TCP_SYNACK;
	if (f & TH_RST)
		return SW_ORPHAN_TCP_RST;
	if ((f & 0x3f) == 0)
		return SW_ORPHAN_TCP_NULL;
	if ((f & (TH_FIN | TH_PSH | TH_URG)) == (TH_FIN | TH_PSH | TH_URG) && !(f & (TH_SYN | TH_ACK)))
		return SW_ORPHAN_TCP_XMAS;
	if ((f & 0x3f) == TH_FIN)
		return SW_ORPHAN_TCP_FIN;
	if ((f & TH_ACK) && !(f & (TH_SYN | TH_FIN)))
		return SW_ORPHAN_TCP_ACK;
	return SW_ORPHAN_TCP_OTHER;
}

static __always_inline void orphan(struct __sk_buff *skb, const struct pkt *p, __u8 pattern,
				   __u64 cookie)
{
	struct sw_orphan_counts zero = {};
	struct sw_orphan_counts *c = bpf_map_lookup_elem(&sw_orphan_src, p->key.saddr);
	if (!c) {
		bpf_map_update_elem(&sw_orphan_src, p->key.saddr, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&sw_orphan_src, p->key.saddr);
		if (!c) {
			count(SW_CNT_FLOW_MAP_FULL);
			return;
		}
	}
	if (pattern >= SW_ORPHAN_MAX)
		return;
	__sync_fetch_and_add(&c->counts[pattern], 1);
	__u64 total = 0;
	for (int i = 0; i < SW_ORPHAN_MAX; i++)
		total += c->counts[i];
	__u64 now = bpf_ktime_get_boot_ns();
	if (now - c->window_start_ns >= NS_PER_SEC) {
		c->window_start_ns = now;
		c->sampled = 0;
	}
	if (c->sampled >= orphan_samples_per_sec) {
		count(SW_CNT_ORPHAN_NOT_SAMPLED);
		return;
	}
	c->sampled++;
	struct sw_orphan *o = reserve(sizeof(*o), SW_KIND_ORPHAN);
	if (!o)
		return;
	__builtin_memcpy(o->saddr, p->key.saddr, 16);
	__builtin_memcpy(o->daddr, p->key.daddr, 16);
	o->sport = p->key.sport;
	o->dport = p->key.dport;
	o->family = p->family;
	o->protocol = p->key.protocol;
	o->pattern = pattern;
	o->ifindex = skb->ifindex;
	o->tcp_flags = p->tcp_flags;
	o->pad[0] = o->pad[1] = o->pad[2] = 0;
	o->sock_cookie = cookie;
	o->source_total = total;
	submit(o);
}

static __always_inline void sample(struct __sk_buff *skb, const struct pkt *p,
				   struct flow_state *s, __u64 cookie)
{
	if (!p->payload_len)
		return;
	if (s->segments >= sample_segments || s->sampled >= sample_bytes)
		return;
	if (p->key.protocol == IPPROTO_TCP) {
		if (!s->has_seq) {
			s->next_seq = p->seq;
			s->has_seq = 1;
		}
		if (p->seq != s->next_seq) {
			/* A retransmission or a gap: sampling it would garble the
			 * stream the agent parses, so this direction stops here. */
			count(SW_CNT_SAMPLE_SKIPPED);
			bpf_map_delete_elem(&sw_flows, &p->key);
			return;
		}
		s->next_seq = p->seq + p->payload_len;
	}
	__u32 len = sample_bytes - s->sampled;
	if (len > p->payload_len)
		len = p->payload_len;
	if (len > SW_SAMPLE_MAX)
		len = SW_SAMPLE_MAX;
	if (len == 0)
		return;
	struct sw_payload *r = reserve(sizeof(*r), SW_KIND_PAYLOAD);
	if (!r)
		return;
	__builtin_memset(&r->task, 0, sizeof(r->task));
	__builtin_memcpy(r->saddr, p->key.saddr, 16);
	__builtin_memcpy(r->daddr, p->key.daddr, 16);
	r->sport = p->key.sport;
	r->dport = p->key.dport;
	r->family = p->family;
	r->protocol = p->key.protocol;
	r->direction = p->ingress ? SW_DIR_INBOUND : SW_DIR_OUTBOUND;
	r->ifindex = skb->ifindex;
	r->pad0 = 0;
	r->sock_cookie = cookie;
	r->offset = s->sampled;
	r->wire_len = p->payload_len;
	r->len = len;
	r->segment = s->segments;
	r->tcp_flags = p->tcp_flags;
	r->from_client = s->from_client;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
	if (cookie && p->key.protocol == IPPROTO_TCP) {
		struct sw_sk_owner *o = bpf_map_lookup_elem(&sw_sk_owner, &cookie);
		if (o)
			r->task = o->task;
	}
	if (bpf_skb_load_bytes(skb, p->payload_off, r->data, len)) {
		count(SW_CNT_PARSE_FAIL);
		bpf_ringbuf_discard(r, 0);
		return;
	}
	s->segments++;
	s->sampled += len;
	submit(r);
	/* TCP: a direction sampled in full leaves the table (keeps the LRU for
	 * flows still being sampled). UDP keeps it: a new entry would sample
	 * the same tuple again. */
	if (p->key.protocol == IPPROTO_TCP &&
	    (s->segments >= sample_segments || s->sampled >= sample_bytes))
		bpf_map_delete_elem(&sw_flows, &p->key);
}

/* DNS header: id, then QR in the top bit of the flags' first byte. */
static __always_inline int dns_header(struct __sk_buff *skb, const struct pkt *p, __u16 *id,
				      int *is_answer)
{
	__u8 h[3];
	if (p->payload_len < 12 || bpf_skb_load_bytes(skb, p->payload_off, h, sizeof(h)))
		return -1;
	*id = (__u16)h[0] << 8 | h[1];
	*is_answer = h[2] >> 7;
	return 0;
}

static __always_inline void dns_egress(struct __sk_buff *skb, const struct pkt *p)
{
	__u16 id;
	int answer;
	if (p->key.dport != 53 || dns_header(skb, p, &id, &answer) || answer)
		return;
	struct dns_query_key k = {};
	__builtin_memcpy(k.client, p->key.saddr, 16);
	__builtin_memcpy(k.server, p->key.daddr, 16);
	k.client_port = p->key.sport;
	k.id = id;
	__u8 one = 1;
	bpf_map_update_elem(&sw_dns_queries, &k, &one, BPF_ANY);
}

/* A DNS answer no local query asked for (spoofed, or reflected at us). */
static __always_inline int dns_gratuitous(struct __sk_buff *skb, const struct pkt *p)
{
	__u16 id;
	int answer;
	if (p->key.sport != 53 || dns_header(skb, p, &id, &answer) || !answer)
		return 0;
	struct dns_query_key k = {};
	__builtin_memcpy(k.client, p->key.daddr, 16);
	__builtin_memcpy(k.server, p->key.saddr, 16);
	k.client_port = p->key.dport;
	k.id = id;
	return bpf_map_lookup_elem(&sw_dns_queries, &k) == NULL;
}

static __always_inline int handle(struct __sk_buff *skb, int ingress)
{
	struct pkt p = {};
	p.ingress = ingress;
	int r = parse(skb, &p);
	if (r) {
		if (r < 0)
			count(SW_CNT_PARSE_FAIL);
		return TC_ACT_UNSPEC;
	}
	const int tcp = p.key.protocol == IPPROTO_TCP;
	const __u8 f = p.tcp_flags;

	const int syn = tcp && (f & TH_SYN) && !(f & (TH_ACK | TH_RST));

	/* Only this host's own traffic: packets to its addresses, and packets
	 * its sockets send. Routed packets (to containers behind host-side
	 * veths, for one) have neither and are left alone. */
	__u64 cookie = 0;
	if (ingress) {
		if (!bpf_map_lookup_elem(&sw_local_addrs, p.key.daddr))
			return TC_ACT_UNSPEC;
	} else {
		cookie = bpf_get_socket_cookie(skb);
		if (!cookie)
			return TC_ACT_UNSPEC;
	}

	if (syn) {
		if (ingress) {
			/* A SYN to a closed port (a SYN scan) starts no flow: do not let
			 * it push real flows out of the table. */
			struct bpf_sock_tuple st = {};
			__u32 ssize = make_tuple(&p, &st);
			struct bpf_sock *lsk = bpf_skc_lookup_tcp(skb, &st, ssize, BPF_F_CURRENT_NETNS, 0);
			if (!lsk)
				return TC_ACT_UNSPEC;
			bpf_sk_release(lsk);
		}
		/* A new flow: track both directions from here. */
		struct flow_state s = {.next_seq = p.seq + 1, .has_seq = 1, .from_client = 1};
		struct flow_key rk = {};
		track_new(&p.key, &s);
		reverse_key(&p.key, &rk);
		s.next_seq = 0;
		s.has_seq = 0;
		s.from_client = 0;
		track_new(&rk, &s);
		return TC_ACT_UNSPEC;
	}

	if (ingress) {
		struct bpf_sock_tuple t = {};
		__u32 tsize = make_tuple(&p, &t);
		if (tcp) {
			/* Established, request and time-wait sockets, then listeners. */
			struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, tsize, BPF_F_CURRENT_NETNS, 0);
			int listener = 0;
			if (sk) {
				listener = sk->state == BPF_TCP_LISTEN;
				cookie = cookie_of(sk);
				bpf_sk_release(sk);
			}
			if (!sk || listener) {
				orphan(skb, &p, tcp_pattern(f), cookie);
				return TC_ACT_UNSPEC;
			}
		} else {
			struct bpf_sock *usk = bpf_sk_lookup_udp(skb, &t, tsize, BPF_F_CURRENT_NETNS, 0);
			if (!usk) {
				orphan(skb, &p, SW_ORPHAN_UDP, 0);
				return TC_ACT_UNSPEC;
			}
			bpf_sk_release(usk);
			if (dns_gratuitous(skb, &p))
				orphan(skb, &p, SW_ORPHAN_DNS_ANSWER, 0);
		}
	} else if (!tcp) {
		dns_egress(skb, &p);
	}

	if (tcp && (f & TH_SYN)) {
		/* SYN-ACK: the answering direction's sequence starts here. */
		struct flow_state *s = bpf_map_lookup_elem(&sw_flows, &p.key);
		if (s) {
			s->next_seq = p.seq + 1;
			s->has_seq = 1;
		}
		return TC_ACT_UNSPEC;
	}
	if (tcp && (f & (TH_FIN | TH_RST))) {
		/* The flow ends: its last bytes may ride on this segment. */
		struct flow_state *s = bpf_map_lookup_elem(&sw_flows, &p.key);
		if (s)
			sample(skb, &p, s, cookie);
		struct flow_key rk = {};
		reverse_key(&p.key, &rk);
		bpf_map_delete_elem(&sw_flows, &p.key);
		bpf_map_delete_elem(&sw_flows, &rk);
		return TC_ACT_UNSPEC;
	}
	if (!p.payload_len)
		return TC_ACT_UNSPEC;
	struct flow_state *s = bpf_map_lookup_elem(&sw_flows, &p.key);
	if (!s) {
		if (tcp)
			return TC_ACT_UNSPEC; /* older than the agent: no start to parse */
		/* UDP: every datagram stands alone; a new tuple is a new flow,
		 * opened by whoever sent first. */
		struct flow_state fresh = {.from_client = 1}, back = {};
		struct flow_key rk = {};
		track_new(&p.key, &fresh);
		reverse_key(&p.key, &rk);
		track_new(&rk, &back);
		s = bpf_map_lookup_elem(&sw_flows, &p.key);
		if (!s)
			return TC_ACT_UNSPEC;
	}
	sample(skb, &p, s, cookie);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int sw_tc_ingress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("tc")
int sw_tc_egress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

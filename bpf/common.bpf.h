/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and helpers shared by every sockwatch BPF program. BPF-only. */
#ifndef SOCKWATCH_COMMON_BPF_H_
#define SOCKWATCH_COMMON_BPF_H_

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "sockwatch_events.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Wake the consumer only once this much is waiting; otherwise it drains on
 * its own timer. Set by the agent before load. */
const volatile __u64 wakeup_bytes = 256 * 1024;

/* Shared by every object: the agent creates them once and reuses the fds. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} sw_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sw_counters SEC(".maps");

static __always_inline void count(enum sw_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&sw_counters, &key);
	if (v)
		*v += 1;
}

static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&sw_events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
		       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* ts_ns: the record's time, for a caller that has read the clock already
 * (a clock read is a paravirtual clock read in a VM: not free). */
static __always_inline void *reserve_at(__u64 size, enum sw_kind kind, __u64 ts_ns)
{
	struct sw_header *h = bpf_ringbuf_reserve(&sw_events, size, 0);
	if (!h) {
		count(SW_CNT_RINGBUF_FULL);
		return NULL;
	}
	h->kind = kind;
	h->cpu = bpf_get_smp_processor_id();
	h->size = size;
	h->ts_ns = ts_ns;
	return h;
}

static __always_inline void *reserve(__u64 size, enum sw_kind kind)
{
	return reserve_at(size, kind, bpf_ktime_get_boot_ns());
}

static __always_inline void submit(void *rec)
{
	bpf_ringbuf_submit(rec, wakeup_flags());
}

/* The current task; valid in tracepoints and (CAP_PERFMON) cgroup hooks. */
static __always_inline void fill_task_from(struct sw_task *t, struct task_struct *task)
{
	t->tgid = BPF_CORE_READ(task, tgid);
	t->pid = BPF_CORE_READ(task, pid);
	t->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	t->uid = BPF_CORE_READ(task, cred, uid.val);
	t->gid = BPF_CORE_READ(task, cred, gid.val);
	t->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&t->comm, task, comm);
}

/* The same for the current task, with helpers instead of pointer chasing:
 * this runs on every connect, accept and UDP send. */
static __always_inline void fill_current_task(struct sw_task *t)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	t->tgid = id >> 32;
	t->pid = (__u32)id;
	t->uid = (__u32)ug;
	t->gid = ug >> 32;
	t->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	t->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&t->comm, sizeof(t->comm));
}

/* Local/remote tuple straight from the socket. */
static __always_inline void read_sock_tuple(struct sw_net *e, struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	/* inet_sport survives inet_put_port (which zeroes skc_num on close). */
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (!e->sport)
		e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
}

/* fd of the current task -> struct sock, as the syscall sees it. Direct
 * loads from the BTF task pointer (probe-memory loads, no helper calls);
 * only the variable-index array element needs a helper. */
static __always_inline struct sock *sock_from_fd(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *f = NULL;
	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	if (!f)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	if (!so)
		return NULL;
	return BPF_CORE_READ(so, sk);
}

/* First syscall argument, read at sys_exit from the saved user registers
 * (arch-aware: arm64 keeps it in orig_x0). Saves an enter hook and a map
 * update per call. */
static __always_inline long syscall_arg1(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return PT_REGS_PARM1_CORE_SYSCALL(regs);
}

#endif /* SOCKWATCH_COMMON_BPF_H_ */

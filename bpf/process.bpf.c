// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Process lifecycle: exec (image + argv read in the kernel), fork, exit. */
#include "common.bpf.h"

#define NAME_CHUNK 256 /* NAME_MAX + 1 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sw_exec);
} exec_scratch SEC(".maps");

struct path_walk {
	struct sw_exec *e;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u32 off;
};

/* One step up the dentry tree (crossing mounts). 1 stops the walk. */
static long path_step(__u64 index, void *data)
{
	struct path_walk *w = data;
	/* Locals, not w->field: BPF_CORE_READ would relocate our own struct. */
	struct sw_exec *e = w->e;
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);

	/* A pseudo dentry (memfd, anonymous files) is its own parent but no
	 * mount's root: its name is the whole path, as d_path shows it. */
	const int pseudo = dentry == parent && dentry != mnt_root;
	if (!pseudo && dentry == mnt_root) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt == mnt_parent)
			return 1; /* reached the root */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = &mnt_parent->mnt;
		return 0;
	}
	__u32 off = w->off;
	if (off > SW_PATH_MAX - NAME_CHUNK) {
		e->flags |= SW_EXEC_PATH_TRUNCATED;
		return 1;
	}
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(&e->data[off], NAME_CHUNK, name);
	if (n <= 0) {
		e->flags |= SW_EXEC_PATH_FAULT;
		count(SW_CNT_EXEC_PATH_FAULT);
		return 1;
	}
	w->off = off + n;
	w->dentry = parent;
	if (pseudo)
		return 1;
	if (index == SW_PATH_DEPTH - 1)
		e->flags |= SW_EXEC_PATH_TRUNCATED;
	return 0;
}

/* Writes exe_file's path components (leaf first, NUL terminated) into
 * e->data, walking up through the mounts. Returns the bytes written. */
static __always_inline __u32 read_exe_path(struct sw_exec *e, struct file *exe)
{
	struct dentry *dentry = BPF_CORE_READ(exe, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(exe, f_path.mnt);
	struct path_walk w = {
		.e = e,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = container_of(vfsmnt, struct mount, mnt),
	};
	if (BPF_CORE_READ(dentry, d_inode, __i_nlink) == 0)
		e->flags |= SW_EXEC_PATH_DELETED;
	bpf_loop(SW_PATH_DEPTH, path_step, &w, 0);
	return w.off;
}

SEC("tp/sched/sched_process_exec")
int sw_exec(void *ctx)
{
	__u32 zero = 0;
	struct sw_exec *e = bpf_map_lookup_elem(&exec_scratch, &zero);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (!e)
		return 0;

	fill_task_from(&e->task, task);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->parent_start_ns = BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
	e->flags = 0;
	e->pad = 0;

	__u32 path_len = read_exe_path(e, BPF_CORE_READ(task, mm, exe_file));
	if (path_len > SW_PATH_MAX)
		path_len = SW_PATH_MAX;
	barrier_var(path_len);
	e->path_len = path_len;

	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 argv_len = arg_end > arg_start ? arg_end - arg_start : 0;
	e->argv_full_len = argv_len;
	if (argv_len > SW_ARGV_MAX) {
		argv_len = SW_ARGV_MAX;
		e->flags |= SW_EXEC_ARGV_TRUNCATED;
	}
	if (argv_len && bpf_probe_read_user(&e->data[path_len], argv_len, (void *)arg_start)) {
		e->flags |= SW_EXEC_ARGV_FAULT;
		count(SW_CNT_EXEC_ARGV_FAULT);
		argv_len = 0;
	}
	e->argv_len = argv_len;

	__u64 size = offsetof(struct sw_exec, data) + path_len + argv_len;
	if (size > sizeof(*e))
		return 0;
	e->hdr.kind = SW_KIND_EXEC;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.size = size;
	e->hdr.ts_ns = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&sw_events, e, size, wakeup_flags()))
		count(SW_CNT_RINGBUF_FULL);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sw_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid)
		return 0; /* a new thread, not a new process */
	struct sw_fork *e = reserve(sizeof(*e), SW_KIND_FORK);
	if (!e)
		return 0;
	fill_task_from(&e->child, child);
	e->ppid = parent->tgid;
	e->pad = 0;
	e->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
	submit(e);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int sw_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads live on */
	struct sw_exit *e = reserve(sizeof(*e), SW_KIND_EXIT);
	if (!e)
		return 0;
	fill_task_from(&e->task, task);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->pad = 0;
	submit(e);
	return 0;
}

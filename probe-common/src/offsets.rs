//! Byte offsets of the kernel struct fields the programs read.
//!
//! Rust eBPF has no CO-RE relocations, so the agent reads these from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`) and hands them over as a global.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.flags` (u32): PF_KTHREAD, PF_IO_WORKER.
    pub task_flags: u32,
    /// `task_struct.tgid` (i32).
    pub task_tgid: u32,
    /// `task_struct.files` (struct files_struct *).
    pub task_files: u32,
    /// `files_struct.fdt` (struct fdtable *).
    pub files_fdt: u32,
    /// `fdtable.max_fds` (u32).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (struct file **).
    pub fdt_fd: u32,
    /// `file.private_data` (struct socket * for socket files).
    pub file_private_data: u32,
    /// `socket.sk` (struct sock *).
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family` (u16).
    pub sk_family: u32,
    /// `sock.__sk_common.skc_num` (u16, local port, host order).
    pub sk_num: u32,
    /// `sock.sk_type` (u16).
    pub sk_type: u32,
    /// `pt_regs.orig_ax`: the syscall number.
    pub regs_syscall: u32,
    /// `pt_regs.di`: first syscall argument.
    pub regs_arg1: u32,
    /// `pt_regs.si`: second syscall argument.
    pub regs_arg2: u32,
    /// `pt_regs.dx`: third syscall argument.
    pub regs_arg3: u32,
    /// `task_struct.start_boottime` (u64): a forked child's start, as /proc counts it.
    pub task_start_boottime: u32,
    /// `task_struct.signal` (struct signal_struct *).
    pub task_signal: u32,
    /// `signal_struct.live` (atomic_t): threads of the process still running; 0 once its
    /// last thread passed the exit point where `sched_process_exit` fires.
    pub signal_live: u32,
    /// 1 once the agent filled the struct from BTF (0 in the object file's placeholder).
    pub valid: u32,
    /// `unix_sock.addr` (struct unix_address *): NULL for socketpairs and unbound
    /// clients, set on listeners and on the connections they accept.
    pub unix_addr: u32,
    /// `unix_sock.peer` (struct sock *): the other end of a connected UNIX socket.
    pub unix_peer: u32,
    /// `sock.__sk_common.skc_cookie` (atomic64_t): the socket cookie once generated.
    pub sk_cookie: u32,
    /// `sock.__sk_common.skc_state` (u8): the TCP state.
    pub sk_state: u32,
    /// `tcp_sock.copied_seq` (u32): the sequence number of the next byte a read returns.
    pub tcp_copied_seq: u32,
    /// `tcp_sock.rcv_nxt` (u32): the sequence number after the last byte received.
    pub tcp_rcv_nxt: u32,
    /// `tcp_sock.snd_nxt` (u32): the sequence number of the next byte to transmit.
    pub tcp_snd_nxt: u32,
    /// `tcp_sock.write_seq` (u32): the sequence number after the last byte written.
    pub tcp_write_seq: u32,
    /// `tcp_sock.bpf_sock_ops_cb_flags` (u8): the sock_ops callbacks on for the socket.
    pub tcp_cb_flags: u32,
    /// `pt_regs.r14`: where a Go program keeps its goroutine (Go 1.17+ register ABI), as
    /// saved at a syscall (the HTTPS probes of Go's crypto/tls key by goroutine).
    pub regs_r14: u32,
}

/// `task_struct.flags` bit of kernel threads.
pub const PF_KTHREAD: u32 = 0x0020_0000;
/// `task_struct.flags` bit of io_uring worker threads.
pub const PF_IO_WORKER: u32 = 0x0000_0010;

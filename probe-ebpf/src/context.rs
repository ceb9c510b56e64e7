//! Is this socket I/O the task's own syscall on the socket the tracepoint fired for?
//!
//! `sock_{send,recv}_length` also fire from io_uring workers, SQPOLL threads and
//! task_work run during an unrelated syscall; their saved registers then describe some
//! other call. We accept an event only if the task is a normal user thread, its syscall
//! is a send (or receive) syscall, and the fd in its registers resolves to this socket.
use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
use probe_common::{
    syscalls::{self, BufferShape},
    PF_IO_WORKER, PF_KTHREAD,
};

use crate::{
    kernel::{read, read_ptr},
    maps::global,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Recv,
    Send,
}

/// What the saved syscall registers say about the call that moved the data.
pub struct SyscallContext {
    pub shape: BufferShape,
    /// arg2: the buffer, iovec array or msghdr, depending on `shape`.
    pub buf_arg: u64,
    /// arg3: the length or the iovec count.
    pub len_arg: u64,
}

pub enum Rejection {
    ForeignContext,
    FdMismatch,
}

/// The syscall's fd was checked to reach this socket before, in this process: the fd
/// table need not be walked again.
#[derive(Clone, Copy)]
pub struct Checked {
    pub tgid: u32,
    pub fd: u32,
}

/// Checks the context, and that the syscall's fd reaches `sk` (unless `checked` says it
/// did, for this process and fd). Returns the syscall's buffer and the fd.
#[inline(always)]
pub fn own_syscall(sk: *const u8, dir: Direction, tgid: u32, checked: Option<Checked>) -> Result<(SyscallContext, u32), Rejection> {
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let flags: u32 = read(task, global!(OFFSETS.task_flags)).ok_or(Rejection::ForeignContext)?;
    if flags & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return Err(Rejection::ForeignContext);
    }
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    // dx, si, di, orig_ax: consecutive in x86-64's pt_regs (the loader checks it), so one read.
    let [len_arg, buf_arg, arg1, nr]: [u64; 4] = read(regs, global!(OFFSETS.regs_arg3)).ok_or(Rejection::ForeignContext)?;
    let shape = match dir {
        Direction::Recv => syscalls::recv_shape(nr),
        Direction::Send => syscalls::send_shape(nr),
    }
    .ok_or(Rejection::ForeignContext)?;
    // splice(fd_in, off_in, fd_out, ...): the socket we write to is fd_out, in arg3.
    let fd = if nr == syscalls::SPLICE { len_arg } else { arg1 };
    let known = matches!(checked, Some(c) if c.tgid == tgid && c.fd as u64 == fd);
    if !known && !fd_is_socket(task, fd, sk) {
        return Err(Rejection::FdMismatch);
    }
    Ok((SyscallContext { shape, buf_arg, len_arg }, fd as u32))
}

/// task->files->fdt->fd[fd]->private_data (struct socket)->sk == sk
#[inline(always)]
fn fd_is_socket(task: *const u8, fd: u64, sk: *const u8) -> bool {
    let Some(files) = read_ptr(task, global!(OFFSETS.task_files)) else { return false };
    let Some(fdt) = read_ptr(files, global!(OFFSETS.files_fdt)) else { return false };
    let Some(max_fds) = read::<u32>(fdt, global!(OFFSETS.fdt_max_fds)) else { return false };
    if fd >= max_fds as u64 {
        return false;
    }
    let Some(fd_array) = read_ptr(fdt, global!(OFFSETS.fdt_fd)) else { return false };
    let Some(file) = read_ptr(fd_array, (fd * 8) as u32) else { return false };
    let Some(socket) = read_ptr(file, global!(OFFSETS.file_private_data)) else { return false };
    match read_ptr(socket, global!(OFFSETS.socket_sk)) {
        Some(s) => s == sk,
        None => false,
    }
}

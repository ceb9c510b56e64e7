//! sock:sock_recv_length(struct sock *sk, int ret, int flags): fires in sock_recvmsg after
//! the data is in the user buffer, once per receive syscall on any socket.
//!
//! One check comes before the bail-out for non-targets: a read of end-of-file (ret == 0,
//! once per connection) may be the peer of a target's UNIX connection learning that the
//! target closed it (`close::on_unix_eof`). Every other read pays one comparison.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{capture::on_socket_io, close::on_unix_eof, context::Direction, target::current_target};

const MSG_PEEK: i32 = 2;

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> u32 {
    let ret: i64 = ctx.arg::<u64>(1) as i32 as i64;
    let flags: i32 = ctx.arg::<u64>(2) as i32;
    if ret == 0 && flags & MSG_PEEK == 0 {
        return on_unix_eof(ctx.arg(0));
    }
    let Some(tgid) = current_target() else { return 0 };
    let sk: *const u8 = ctx.arg(0);
    // Peeked bytes are read again later: count them once, at the real read.
    if ret <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    on_socket_io(sk, ret as u32, Direction::Recv, tgid)
}

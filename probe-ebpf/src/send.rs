//! sock:sock_send_length(struct sock *sk, int ret, int flags): fires in sock_sendmsg after
//! the data is copied, once per send syscall (and per 64 KiB chunk of sendfile/splice).
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{capture::on_socket_io, context::Direction, target::current_target};

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let sk: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg::<u64>(1) as i32 as i64;
    if ret <= 0 {
        return 0;
    }
    on_socket_io(sk, ret as u32, Direction::Send, tgid)
}

//! Syscall numbers the programs accept as the origin of socket I/O (x86_64 ABI).

pub const READ: u64 = 0;
pub const WRITE: u64 = 1;
pub const READV: u64 = 19;
pub const WRITEV: u64 = 20;
pub const SENDFILE: u64 = 40;
pub const SENDTO: u64 = 44;
pub const RECVFROM: u64 = 45;
pub const SENDMSG: u64 = 46;
pub const RECVMSG: u64 = 47;
pub const SPLICE: u64 = 275;
pub const RECVMMSG: u64 = 299;
pub const SENDMMSG: u64 = 307;
pub const PREADV2: u64 = 327;
pub const PWRITEV2: u64 = 328;

/// How the buffer of a syscall is found from its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferShape {
    /// arg2 is the buffer itself.
    Flat,
    /// arg2 is a `struct iovec *`.
    Iovec,
    /// arg2 is a `struct user_msghdr *`.
    Msghdr,
    /// The data does not come from a user buffer (sendfile, splice) or cannot be
    /// attributed to one (recvmmsg/sendmmsg).
    None,
}

/// Receive syscalls: `Some(shape)` if `nr` may legitimately produce `sock_recv_length`.
#[inline(always)]
pub fn recv_shape(nr: u64) -> Option<BufferShape> {
    match nr {
        READ | RECVFROM => Some(BufferShape::Flat),
        READV | PREADV2 => Some(BufferShape::Iovec),
        RECVMSG => Some(BufferShape::Msghdr),
        RECVMMSG => Some(BufferShape::None),
        _ => None,
    }
}

/// Send syscalls: `Some(shape)` if `nr` may legitimately produce `sock_send_length`.
#[inline(always)]
pub fn send_shape(nr: u64) -> Option<BufferShape> {
    match nr {
        WRITE | SENDTO => Some(BufferShape::Flat),
        WRITEV | PWRITEV2 => Some(BufferShape::Iovec),
        SENDMSG => Some(BufferShape::Msghdr),
        SENDFILE | SPLICE | SENDMMSG => Some(BufferShape::None),
        _ => None,
    }
}

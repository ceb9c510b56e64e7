//! The shared path of the send and receive hooks: filter, classify, capture, emit.
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{self as helpers, bpf_get_socket_cookie},
};
use probe_common::{
    classify::{Classifier, Verdict},
    http1::Scratch,
    MODE_FAST, SLOW_HEAD_SPLIT, SLOW_NO_SERVICE,
    syscalls::BufferShape, ConnState, DataEvent, EventHeader, COUNTER_CLIENT_CONNS, COUNTER_FD_MISMATCH,
    COUNTER_FOREIGN_CONTEXT, COUNTER_LOST, COUNTER_SERVER_CONNS, EVENT_RECV, EVENT_SEND,
    FLAG_AFTER_LOSS, FLAG_UNCLASSIFIED, HEAD_WINDOW, MAX_IOVECS, MAX_IOVECS_WALKED, ROLE_CLIENT, ROLE_OTHER,
    ROLE_SERVER, ROLE_UNKNOWN, TAIL_WINDOW, CONN_TX_WATCHED, FLAG_TX_PENDING, TX_SLOW, TxWait, CONN_TLS,
    FAMILY_TLS, FLAG_PLAIN_ON_TLS_PORT, ROLE_H2, ROLE_CLIENT_TLS, FLAG_CLIENT,
};

use crate::{
    conn,
    context::{own_syscall, Checked, Direction, Rejection, SyscallContext},
    emit::wakeup_flags,
    kernel::read,
    fast::{self, Work},
    maps::{count, global, EVENTS, SCRATCH, SERVICES, WORK},
    tls, tx,
};

pub const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

/// Where the bytes a syscall moved are in user memory.
#[derive(Clone, Copy)]
enum Source {
    /// One buffer.
    Flat(u64),
    /// An iovec array and its length.
    Vectored { iov: u64, count: u64 },
    /// Not from a user buffer (sendfile, splice) or not attributable (recvmmsg).
    None,
}

/// Called by both hooks once the process is known to be a target and `moved > 0`.
#[inline(always)]
pub fn on_socket_io(sk: *const u8, moved: u32, dir: Direction, tgid: u32) -> u32 {
    // A socket with a cookie may be one we track: its state says what it is. Any other is
    // looked at first (a cookie is made only for the sockets that pass).
    let known = match conn::existing_cookie(sk) {
        Some(cookie) => conn::lookup(cookie).map(|s| (cookie, s)),
        None => None,
    };
    let family = match known {
        Some((_, s)) if unsafe { (*s).family } != 0 => unsafe { (*s).family as u16 },
        _ => {
            let Some(family) = socket_family(sk) else { return 0 };
            family
        }
    };
    let (cookie, state) = match known {
        Some((cookie, s)) => (cookie, Some(s)),
        None => {
            let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
            (cookie, conn::lookup(cookie))
        }
    };
    let role = match state {
        Some(state) => unsafe { (*state).role },
        None => ROLE_UNKNOWN,
    };
    // Client connections are the agent's only with client metrics on (`--no-client-metrics`).
    if role == ROLE_CLIENT_TLS
        || (role == ROLE_CLIENT && global!(CONFIG.client_metrics) == 0)
        || (role == ROLE_OTHER && dir == Direction::Send)
    {
        return 0;
    }
    // A TLS connection's bytes are ciphertext: its plaintext comes from the TLS probes.
    if let Some(s) = state
        && unsafe { (*s).flags } & CONN_TLS != 0
    {
        tls::on_socket_io(cookie, sk, dir == Direction::Recv, moved as u64, family != AF_UNIX);
        return 0;
    }
    let checked = state.and_then(|s| unsafe {
        ((*s).fd_tgid != 0).then(|| Checked { tgid: (*s).fd_tgid, fd: (*s).fd })
    });
    let ctx = match own_syscall(sk, dir, tgid, checked) {
        Ok((ctx, fd)) => {
            if let Some(s) = state {
                unsafe {
                    (*s).fd_tgid = tgid;
                    (*s).fd = fd;
                    (*s).family = family as u32;
                }
            }
            ctx
        }
        Err(Rejection::ForeignContext) => {
            count(COUNTER_FOREIGN_CONTEXT);
            return 0;
        }
        Err(Rejection::FdMismatch) => {
            count(COUNTER_FD_MISMATCH);
            return 0;
        }
    };
    let Some(w) = WORK.get_ptr_mut(0) else { return 0 };
    let (kind, ptr, count) = match source(&ctx) {
        Source::Flat(ptr) => (1, ptr, 0),
        Source::Vectored { iov, count } => (2, iov, count),
        Source::None => (0, 0, 0),
    };
    unsafe {
        (*w).kind = kind;
        (*w).ptr = ptr;
        (*w).count = count;
        (*w).moved = moved as u64;
        (*w).ts = bpf_ktime_get_ns();
        (*w).tgid = tgid as u64;
        (*w).cookie = cookie;
        (*w).family = family as u64;
        (*w).sk = sk as u64;
        (*w).recv = (dir == Direction::Recv) as u64;
        (*w).tx_ok = 1;
        (*w).offset = 0;
        (*w).arrival = 0;
        (*w).client = 0;
    }
    // A client connection's I/O is paired (`fast::rp_client_io`) or emitted here, not in
    // `rp_on_io`: its call chain has no stack to spare.
    if (role == ROLE_CLIENT || rp_on_io(w, state.unwrap_or(core::ptr::null_mut())) == CLIENT_IO)
        && fast::rp_client_io(w) != fast::DONE
    {
        rp_emit_client(w);
    }
    0
}

/// What `rp_on_io` returns for the I/O of a target's client connection (with client
/// metrics on), which its caller emits (`rp_emit_client`).
pub const CLIENT_IO: u32 = 1;

/// A read or write of a target's client connection, as a data event with `FLAG_CLIENT`:
/// its bytes are a request (a write) or a response (a read); neither waits for
/// transmission nor has an arrival stamp.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_emit_client(w: *const Work) -> u32 {
    let Some(w) = (unsafe { w.as_ref() }) else { return 0 };
    let args = EmitArgs {
        cookie: w.cookie,
        sk: w.sk,
        kind: w.kind,
        ptr: w.ptr,
        count: w.count,
        moved: w.moved,
        recv: w.recv,
        flags: FLAG_CLIENT as u64,
        tgid: w.tgid,
        family: w.family,
    };
    rp_emit(&args);
    0
}

/// The family of a socket the probe may track: a TCP or UNIX stream socket (not a
/// socketpair); None for any other.
#[inline(always)]
fn socket_family(sk: *const u8) -> Option<u16> {
    let family = read::<u16>(sk, global!(OFFSETS.sk_family))?;
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return None;
    }
    if read::<u16>(sk, global!(OFFSETS.sk_type))? != SOCK_STREAM {
        return None;
    }
    // A UNIX socket with no address is a socketpair (asyncio's self-pipe, worker pipes)
    // or an unbound client: never a connection accepted from a listener.
    if family == AF_UNIX && read::<u64>(sk, global!(OFFSETS.unix_addr)).unwrap_or(0) == 0 {
        return None;
    }
    Some(family)
}

/// Everything after the filters, in a global function (verified once, whatever path led
/// to it): classify a new connection, hand a fast one's I/O to the fast path, or emit it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_on_io(w: *mut Work, state: *mut ConnState) -> u32 {
    let Some(wr) = (unsafe { w.as_mut() }) else { return 0 };
    let state = if state.is_null() { None } else { Some(state) };
    let (role, prefix, prefix_len) = match state {
        Some(state) => unsafe { ((*state).role, (*state).prefix, (*state).prefix_len) },
        None => (ROLE_UNKNOWN, 0, 0),
    };
    let (cookie, moved, tgid, family) = (wr.cookie, wr.moved as u32, wr.tgid as u32, wr.family as u16);
    // Plaintext from the TLS probes (`tls`), not a socket's bytes.
    let plaintext = family & FAMILY_TLS != 0;
    let dir = if wr.recv != 0 { Direction::Recv } else { Direction::Send };
    let sk = wr.sk as *const u8;
    let src = match wr.kind {
        1 => Source::Flat(wr.ptr),
        2 => Source::Vectored { iov: wr.ptr, count: wr.count },
        _ => Source::None,
    };
    // An HTTP/2 connection: all its bytes go to the agent (`h2`).
    if role == ROLE_H2 {
        crate::h2::emit(w);
        return 0;
    }
    if role == ROLE_CLIENT {
        return CLIENT_IO;
    }
    let mut flags = 0;
    if role != ROLE_SERVER {
        // Unknown or non-HTTP connection: decide from its first bytes, by the shape of a
        // request line (probe_common::classify).
        match dir {
            Direction::Recv => {
                // A TCP connection the target already closed or shut down (its close
                // hook forgot it): reads now are a lingering-close drain, not requests.
                if family != AF_UNIX && !open_for_requests(sk) {
                    return 0;
                }
                // A connection that carried another protocol is looked at afresh at each
                // read; an unknown one goes on from the bytes it had so far.
                let c = if role == ROLE_OTHER { Classifier::default() } else { Classifier::from_state(prefix, prefix_len) };
                let (verdict, c) = classify(src, moved, c);
                match verdict {
                    // A plaintext request on a port the target accepted TLS on: HTTP sent
                    // to an HTTPS port, told to the agent as such (the server's answer, if
                    // any, is not a measured response).
                    Verdict::Request if !plaintext && family != AF_UNIX && tls::is_tls_port(sk) => {
                        conn::set_role(cookie, ROLE_OTHER);
                        flags |= FLAG_UNCLASSIFIED | FLAG_PLAIN_ON_TLS_PORT;
                    }
                    Verdict::Request => {
                        count(COUNTER_SERVER_CONNS);
                        if family != AF_UNIX {
                            crate::arrival::mark_port(sk);
                        }
                        let server = conn::set_role(cookie, ROLE_SERVER);
                        if plaintext && let Some(s) = server {
                            tls::on_first_plaintext(s, family);
                        }
                        if let Some(s) = server
                            && family != AF_UNIX
                            && tx::watched(sk)
                        {
                            unsafe { (*s).flags |= CONN_TX_WATCHED };
                        }
                        // A server connection is fast from its first request, if its
                        // process's service is known, and if the agent holds none of its
                        // bytes yet (a request line that came in pieces).
                        let undecided_before = state.is_some() && prefix_len & 0xff != 0;
                        if let Some(server) = server {
                            match unsafe { SERVICES.get(&tgid) } {
                                Some(service) if !undecided_before => {
                                    unsafe {
                                        (*server).mode = MODE_FAST;
                                        (*server).service = *service;
                                    }
                                    if fast_io(w, server, dir) == fast::DONE {
                                        return 0;
                                    }
                                }
                                // Slow from its start: the agent is told why, once.
                                _ => {
                                    let why = if undecided_before { SLOW_HEAD_SPLIT } else { SLOW_NO_SERVICE };
                                    fast::rp_switch(w, server, why);
                                }
                            }
                        }
                    }
                    // The HTTP/2 preface (prior knowledge): the agent decodes the connection.
                    Verdict::Http2 => {
                        count(COUNTER_SERVER_CONNS);
                        if family != AF_UNIX {
                            crate::arrival::mark_port(sk);
                        }
                        let h2 = conn::set_role(cookie, ROLE_H2);
                        crate::h2::start(cookie);
                        if plaintext && let Some(s) = h2 {
                            tls::on_first_plaintext(s, family);
                        }
                        crate::h2::emit(w);
                        return 0;
                    }
                    // (A connection of another protocol is looked at again when a read starts
                    // with a response: below.)
                    _ if role == ROLE_OTHER && verdict != Verdict::Response => return 0,
                    Verdict::Undecided => {
                        // Too few bytes so far (a client writing byte by byte): remember where
                        // the classifier is and pass the data on; the agent holds it until
                        // the connection is classified.
                        conn::set_prefix(state, cookie, c.first4, c.meta());
                    }
                    // A TLS record on a target's TCP connection: ciphertext from now on;
                    // its plaintext comes from the TLS probes, and its close says if none
                    // ever came.
                    Verdict::NotRequest if !plaintext && family != AF_UNIX && tls::is_record(c.first4) => {
                        if let Some(s) = conn::set_role(cookie, ROLE_UNKNOWN) {
                            tls::on_first_record(s, family);
                            tls::on_socket_io(cookie, sk, true, moved as u64, true);
                        }
                        return 0;
                    }
                    Verdict::NotRequest | Verdict::Response => {
                        // A response received first: a client connection the target opened
                        // before the agent attached, read in the middle of a call (or of a
                        // response's body: then another protocol until a read starts with a
                        // response). Its next request is measured (the agent counts this
                        // answer without its request).
                        if verdict == Verdict::Response && !plaintext {
                            if global!(CONFIG.client_metrics) != 0 {
                                conn::set_role(cookie, ROLE_CLIENT);
                                count(COUNTER_CLIENT_CONNS);
                                return CLIENT_IO;
                            }
                            if role == ROLE_OTHER {
                                return 0; // counted as another protocol already
                            }
                            // (Written so, not as an arm of its own, for the stack: this
                            // function's call chain is at the verifier's 512 bytes.)
                        }
                        // Tell the agent once what arrived (TLS, garbage, another protocol).
                        let other = conn::set_role(cookie, ROLE_OTHER);
                        if plaintext && let Some(s) = other {
                            tls::on_first_plaintext(s, family);
                        }
                        flags |= FLAG_UNCLASSIFIED;
                    }
                }
            }
            Direction::Send => {
                let (verdict, c) = classify(src, moved, Classifier::default());
                // An HTTP/1.x request sent first: the target's client connection, measured
                // from this request on (with client metrics on).
                if verdict == Verdict::Request && !plaintext {
                    conn::set_role(cookie, ROLE_CLIENT);
                    count(COUNTER_CLIENT_CONNS);
                    return if global!(CONFIG.client_metrics) != 0 { CLIENT_IO } else { 0 };
                } else {
                    // A TLS handshake record (a ClientHello) sent first: a TLS client
                    // connection, counted, not measured.
                    if verdict == Verdict::Request || (!plaintext && tls::is_handshake(c.first4)) {
                        conn::set_role(cookie, ROLE_CLIENT_TLS);
                        count(COUNTER_CLIENT_CONNS);
                    }
                    // Otherwise a write before any request: a connection opened before we
                    // attached, in the middle of a response. Its next request classifies it.
                    return 0;
                }
            }
        }
    }
    // A server connection's state is the one looked up above; any other was just
    // (re)written and is looked up again.
    let server_state = if role == ROLE_SERVER { state } else { None };
    // The HTTP/2 preface on a connection the agent pairs: h2c after a `101` to an
    // `Upgrade: h2c` request (the kernel hands a connection over at a 101). From now on
    // the connection's bytes go to the agent as HTTP/2 ones; the server's frames start at
    // its next write.
    if let Some(server) = server_state
        && dir == Direction::Recv
        && unsafe { (*server).mode } != MODE_FAST
        && classify(src, moved, Classifier::default()).0 == Verdict::Http2
    {
        unsafe { (*server).role = ROLE_H2 };
        crate::h2::start(cookie);
        crate::h2::emit(w);
        return 0;
    }
    if let Some(server) = server_state
        && unsafe { (*server).mode } == MODE_FAST
        && fast_io(w, server, dir) == fast::DONE
    {
        return 0;
    }
    // Where the bytes are, as plain numbers (an enum with an empty variant leaves its
    // payload undefined, which the verifier refuses to see copied).
    let (kind, ptr, count) = (wr.kind, wr.ptr, wr.count);
    emit_data(&Capture { cookie, sk, kind, ptr, count, moved, dir, flags, tgid, family });
    0
}

/// Hands a fast connection's I/O to the fast path; `fast::SLOW` when it must be an event.
#[inline(always)]
fn fast_io(w: *mut Work, state: *mut ConnState, dir: Direction) -> u32 {
    match dir {
        Direction::Recv => fast::rp_fast_recv(w, state),
        Direction::Send => fast::rp_fast_send(w, state),
    }
}

/// What one data event is made of.
struct Capture {
    cookie: u64,
    sk: *const u8,
    /// As in `fast::Work`: 0 no user buffer, 1 a buffer at `ptr`, 2 `count` iovecs at `ptr`.
    kind: u64,
    ptr: u64,
    count: u64,
    moved: u32,
    dir: Direction,
    flags: u32,
    tgid: u32,
    family: u16,
}

/// ESTABLISHED, or CLOSE_WAIT (the client half-closed after its request).
#[inline(always)]
fn open_for_requests(sk: *const u8) -> bool {
    const TCP_ESTABLISHED: u8 = 1;
    const TCP_CLOSE_WAIT: u8 = 8;
    matches!(read::<u8>(sk, global!(OFFSETS.sk_state)), Some(TCP_ESTABLISHED) | Some(TCP_CLOSE_WAIT))
}

/// Classifies the data's first bytes, from the classifier's state so far. Unreadable data
/// (recvmmsg) is not a request. The work runs in a global function, verified once.
#[inline(always)]
fn classify(src: Source, moved: u32, c: Classifier) -> (Verdict, Classifier) {
    let (kind, ptr, count) = match src {
        Source::Flat(ptr) => (1u64, ptr, 0),
        Source::Vectored { iov, count } => (2, iov, count),
        Source::None => return (Verdict::NotRequest, c),
    };
    let state = c.first4 as u64 | (c.meta() as u64) << 32;
    let packed = rp_classify(kind << 32 | moved as u64, ptr, count, state);
    let c = Classifier::from_state(packed as u32, (packed >> 32) as u32 & 0x00ff_ffff);
    let verdict = match packed >> 56 {
        1 => Verdict::Request,
        2 => Verdict::NotRequest,
        3 => Verdict::Http2,
        4 => Verdict::Response,
        _ => Verdict::Undecided,
    };
    (verdict, c)
}

/// `kind_moved`: 1 (a flat buffer at `ptr`) or 2 (`count` iovecs at `ptr`) << 32 | bytes
/// moved; `state`: the classifier's first4 | meta << 32. Returns the verdict (0 undecided, 1
/// a request, 2 not, 3 the HTTP/2 preface, 4 a response) << 56 | the new state.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_classify(kind_moved: u64, ptr: u64, count: u64, state: u64) -> u64 {
    let moved = kind_moved as u32;
    let src = if kind_moved >> 32 == 1 { Source::Flat(ptr) } else { Source::Vectored { iov: ptr, count } };
    let Some((buf, n)) = first_bytes(src, moved) else { return 2 << 56 };
    let mut c = Classifier::from_state(state as u32, (state >> 32) as u32);
    let v: u64 = match c.feed_all(&buf[..n]) {
        Verdict::Request => 1,
        Verdict::NotRequest => 2,
        Verdict::Http2 => 3,
        Verdict::Response => 4,
        Verdict::Undecided => 0,
    };
    v << 56 | (c.meta() as u64 & 0x00ff_ffff) << 32 | c.first4 as u64
}

/// Bytes gathered for classification: a power of two above `CLASSIFY_BYTES`.
const FIRST: usize = 32;

/// The data's first bytes, up to [`FIRST`], across its first iovecs if they are tiny (a
/// 2-byte first iovec, say). `None` if the data cannot be read (recvmmsg). The buffer is
/// twice [`FIRST`], so that every copy at an offset below `FIRST` is in bounds.
#[inline(always)]
fn first_bytes(src: Source, moved: u32) -> Option<([u8; 2 * FIRST], usize)> {
    let mut buf = [0u8; 2 * FIRST];
    let (iov, count) = match src {
        Source::Flat(ptr) => {
            let n = (moved as u64).min(FIRST as u64);
            if !read_user_upto(buf.as_mut_ptr(), ptr, n, FIRST as u64) {
                return None;
            }
            return Some((buf, n as usize));
        }
        Source::Vectored { iov, count } => (iov, count),
        Source::None => return None,
    };
    let (mut have, mut left) = (0u64, moved as u64);
    let mut i = 0u64;
    while i < 4 {
        if i >= count || left == 0 || have >= FIRST as u64 {
            break;
        }
        let v: [u64; 2] = read_user(iov + i * 16)?;
        let n = v[1].min(left).min(FIRST as u64 - have);
        let dst = unsafe { buf.as_mut_ptr().add(bounded(have, FIRST as u64 - 1) as usize) };
        if !read_user_upto(dst, v[0], n, FIRST as u64) {
            return None;
        }
        have += n;
        left -= v[1].min(left);
        i += 1;
    }
    Some((buf, (have as usize).min(FIRST)))
}

/// Where the bytes are, from the syscall's registers.
#[inline(always)]
fn source(ctx: &SyscallContext) -> Source {
    match ctx.shape {
        BufferShape::None => Source::None,
        BufferShape::Flat => Source::Flat(ctx.buf_arg),
        BufferShape::Iovec => Source::Vectored { iov: ctx.buf_arg, count: ctx.len_arg },
        // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
        //                      size_t msg_iovlen; ... } (UAPI)
        BufferShape::Msghdr => match (read_user::<u64>(ctx.buf_arg + 16), read_user::<u64>(ctx.buf_arg + 24)) {
            (Some(iov), Some(count)) => Source::Vectored { iov, count },
            _ => Source::None,
        },
    }
}

/// One data event, made in a global function (verified once, whatever path led here).
#[inline(always)]
fn emit_data(c: &Capture) {
    let args = EmitArgs {
        cookie: c.cookie,
        sk: c.sk as u64,
        kind: c.kind,
        ptr: c.ptr,
        count: c.count,
        moved: c.moved as u64,
        recv: (c.dir == Direction::Recv) as u64,
        flags: c.flags as u64,
        tgid: c.tgid as u64,
        family: c.family as u64,
    };
    rp_emit(&args);
}

/// The arguments of [`rp_emit`].
#[repr(C)]
pub struct EmitArgs {
    cookie: u64,
    sk: u64,
    kind: u64,
    ptr: u64,
    count: u64,
    moved: u64,
    recv: u64,
    flags: u64,
    tgid: u64,
    family: u64,
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_emit(a: *const EmitArgs) -> u64 {
    let Some(a) = (unsafe { a.as_ref() }) else { return 0 };
    let cookie = a.cookie;
    let wakeup = wakeup_flags();
    let Some(mut entry) = EVENTS.reserve::<DataEvent>(0) else {
        count(COUNTER_LOST);
        conn::mark_lost(cookie);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let lost = conn::take_lost(cookie);
    let flags = if lost { a.flags as u32 | FLAG_AFTER_LOSS } else { a.flags as u32 };
    let moved = a.moved;
    let (head_len, tail_len) = unsafe {
        match a.kind {
            1 => capture_flat(&mut *ev, a.ptr, moved),
            2 => capture_vectored(&mut *ev, a.ptr, a.count, moved),
            _ => (0, 0),
        }
    };
    let ts = unsafe { bpf_ktime_get_ns() };
    // A write that left bytes unsent: the agent is told when they go out (`tx`). The
    // event was reserved before the wait is stored, so it comes before that news.
    let mut tx_end_seq = 0;
    let mut flags = flags;
    // (A client connection's socket is never watched: the sock_ops program watches the
    // sockets a target accepted.)
    if a.recv == 0
        && a.family != AF_UNIX as u64
        && tx::watched(a.sk as *const u8)
        && let Some(end_seq) = tx::unsent(a.sk as *const u8)
    {
        // Built in the per-CPU work area (this runs in the target's syscall, as its caller
        // `rp_on_io` does), not on the stack.
        if let Some(w) = WORK.get_ptr_mut(0)
            && unsafe {
                (*w).tx = TxWait { end_seq, kind: TX_SLOW, ..Default::default() };
                (*w).tx.measured.end_ns = ts;
                tx::wait(cookie, a.sk as *const u8, &(*w).tx)
            }
        {
            flags |= FLAG_TX_PENDING;
            tx_end_seq = end_seq;
        }
    }
    // A read's arrival (`arrival`): TCP only, 0 when not known.
    // A TLS read's arrival is its records' (`tls`, in the work area: this runs in the
    // target's call, as its caller `rp_on_io` does); a socket read's is the socket's.
    let given = match WORK.get_ptr_mut(0) {
        Some(w) => unsafe { (*w).arrival },
        None => 0,
    };
    let arrival_ns = if a.recv != 0 && given != 0 {
        if given < ts { given } else { 0 }
    } else if a.recv != 0 && a.family != AF_UNIX as u64 {
        let at = crate::arrival::arrived(a.sk as *const u8, cookie, moved, ts);
        if at < ts { at } else { 0 }
    } else {
        0
    };
    unsafe {
        (*ev).header = EventHeader { kind: if a.recv != 0 { EVENT_RECV } else { EVENT_SEND }, flags, ts_ns: ts };
        (*ev).arrival_ns = arrival_ns;
        (*ev).tx_end_seq = tx_end_seq;
        (*ev)._pad2 = 0;
        (*ev).conn_id = cookie;
        (*ev).tgid = a.tgid as u32;
        (*ev).len = moved as u32;
        (*ev).family = a.family as u16;
        (*ev).head_len = head_len;
        (*ev).tail_len = tail_len;
        (*ev)._pad = 0;
    }
    entry.submit(wakeup);
    0
}

/// One buffer: the head window from its start, the tail window from its end.
#[inline(always)]
fn capture_flat(ev: &mut DataEvent, ptr: u64, len: u64) -> (u16, u16) {
    let head_len = copy_head(&mut ev.head, ptr, len);
    let mut tail_len = 0;
    if len > HEAD_WINDOW as u64 {
        let from = ptr + len - TAIL_WINDOW as u64;
        if let Some(t) = read_user::<[u8; TAIL_WINDOW]>(from) {
            ev.tail = t;
            tail_len = TAIL_WINDOW as u16;
        }
    }
    (head_len, tail_len)
}

/// An iovec array: the head window gathered across the first iovecs, and the tail window
/// from the end of the last iovec the data reaches. The walk runs in a global function
/// (verified once, on its own) into the per-CPU scratch buffer; the event gets both
/// windows with constant-size copies.
#[inline(always)]
fn capture_vectored(ev: &mut DataEvent, iov: u64, count: u64, moved: u64) -> (u16, u16) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return (0, 0) };
    let lens = rp_gather_iovecs(scratch, iov, count, moved);
    let scratch = unsafe { (*scratch).buf.as_ptr() };
    unsafe {
        helpers::bpf_probe_read_kernel(ev.head.as_mut_ptr() as *mut _, HEAD_WINDOW as u32, scratch as *const _);
        helpers::bpf_probe_read_kernel(
            ev.tail.as_mut_ptr() as *mut _,
            TAIL_WINDOW as u32,
            scratch.add(HEAD_WINDOW) as *const _,
        );
    }
    (lens as u16, (lens >> 16) as u16)
}

/// Gathers the head window of the data an iovec array holds into `scratch[..HEAD_WINDOW]`
/// (across the first `MAX_IOVECS` iovecs; the buffer is twice the window, so that a copy of
/// at most one window at an offset below one window is in bounds), and its last bytes
/// (the end of the last iovec the data reaches, among the first `MAX_IOVECS_WALKED`) into
/// `scratch[HEAD_WINDOW..]`. Returns head length | tail length << 16.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_gather_iovecs(s: *mut Scratch, iov: u64, count: u64, moved: u64) -> u64 {
    let Some(s) = (unsafe { s.as_mut() }) else { return 0 };
    // The walk's state lives in the scratch's cells (see probe_common::http1): the
    // verifier then sees one state per iovec, whatever their lengths.
    const FILLED: usize = 48;
    const SEEN: usize = 49;
    const LAST_BASE: usize = 50;
    const LAST_LEN: usize = 51;
    for c in [FILLED, SEEN, LAST_BASE, LAST_LEN] {
        s.cells[c] = 0;
    }
    let cell = |s: &Scratch, c: usize| unsafe { core::ptr::read_volatile(&s.cells[c]) };
    let set = |s: &mut Scratch, c: usize, v: u64| unsafe { core::ptr::write_volatile(&mut s.cells[c], v) };
    // The first MAX_IOVECS iovecs come in one copy (cells IOVS..IOVS + 2 * MAX_IOVECS, free
    // while no head is parsed): each copy from user memory costs as much as a head scan.
    const IOVS: usize = 32;
    let first = count.min(MAX_IOVECS as u64) * 16;
    let first_ok = read_user_upto(s.cells[IOVS..].as_mut_ptr() as *mut u8, iov, first, (MAX_IOVECS * 16) as u64);
    let scratch = s.buf.as_mut_ptr();
    let mut i = 0u64;
    while i < MAX_IOVECS_WALKED as u64 {
        let seen = cell(s, SEEN);
        if i >= count || seen >= moved {
            break;
        }
        let v = if i < MAX_IOVECS as u64 {
            if !first_ok {
                break;
            }
            let k = IOVS + ((i as usize * 2) & (2 * MAX_IOVECS - 1));
            [cell(s, k), cell(s, k + 1)]
        } else {
            let Some(v) = read_user::<[u64; 2]>(iov + i * 16) else { break };
            v
        };
        let in_data = v[1].min(moved - seen);
        let filled = cell(s, FILLED);
        if i < MAX_IOVECS as u64 && filled < HEAD_WINDOW as u64 {
            let take = in_data.min(HEAD_WINDOW as u64 - filled);
            // filled < HEAD_WINDOW (the mask only restates it) and take <= HEAD_WINDOW: the
            // buffer holds twice the window.
            let dst = unsafe { scratch.add(bounded(filled, HEAD_WINDOW as u64 - 1) as usize) };
            if !read_user_upto(dst, v[0], take, HEAD_WINDOW as u64) {
                break;
            }
            set(s, FILLED, filled + take);
        }
        // Iovecs past the first MAX_IOVECS are walked only to find the last one the data
        // reaches: its end is the data's end, where a chunked terminator lives (Node writes
        // a stream of res.write() chunks as one writev of size, data and CRLF iovecs).
        set(s, SEEN, seen + in_data);
        if in_data > 0 {
            set(s, LAST_BASE, v[0]);
            set(s, LAST_LEN, in_data);
        }
        i += 1;
    }
    let head_len = cell(s, FILLED).min(HEAD_WINDOW as u64);
    let mut tail_len = 0u64;
    if cell(s, SEEN) == moved && moved > head_len {
        // The data's last bytes are the end of the last iovec walked.
        let (base, len) = (cell(s, LAST_BASE), cell(s, LAST_LEN));
        let n = len.min(TAIL_WINDOW as u64);
        let dst = unsafe { scratch.add(HEAD_WINDOW) };
        if read_user_upto(dst, base + len - n, n, TAIL_WINDOW as u64) {
            tail_len = n;
        }
    }
    head_len | tail_len << 16
}

/// Copies min(len, HEAD_WINDOW) bytes; returns how many are valid.
#[inline(always)]
fn copy_head(dst: &mut [u8; HEAD_WINDOW], src: u64, len: u64) -> u16 {
    let n = len.min(HEAD_WINDOW as u64);
    if read_user_upto(dst.as_mut_ptr(), src, n, HEAD_WINDOW as u64) { n as u16 } else { 0 }
}

/// Copies `n <= window` bytes from user memory; `window` is a constant power of two. A
/// whole window is copied with a constant size, anything shorter with a size masked
/// below the window: either way a bound the verifier can check. True on success.
#[inline(always)]
pub(crate) fn read_user_upto(dst: *mut u8, src: u64, n: u64, window: u64) -> bool {
    let (dst, src) = (dst as *mut core::ffi::c_void, src as *const core::ffi::c_void);
    let rc = if n >= window {
        unsafe { helpers::bpf_probe_read_user(dst, window as u32, src) }
    } else {
        unsafe { helpers::bpf_probe_read_user(dst, bounded(n, window - 1), src) }
    };
    rc == 0
}

/// `value & mask`, with the mask applied to a value the compiler cannot reason about, so
/// that the AND reaches the verifier (which needs it to bound a copy's size or offset)
/// instead of being folded away by an earlier range check on another register.
#[inline(always)]
fn bounded(value: u64, mask: u64) -> u32 {
    (unsafe { core::ptr::read_volatile(&value) } & mask) as u32
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

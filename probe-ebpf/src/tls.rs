//! HTTPS: the plaintext of TLS connections, from uprobes on the TLS library's calls
//! (OpenSSL 1.1 and 3, BoringSSL: `SSL_read`, `SSL_read_ex`, `SSL_write`, `SSL_write_ex`,
//! `SSL_do_handshake`), attached by the agent per target process (`probe-user`'s
//! `tls_probes.rs`): processes that are not targets are never trapped.
//!
//! A call's entry remembers its arguments per thread (`TLS_CALLS`); its return hands the
//! plaintext to the same path as a plain socket's I/O (`capture::rp_on_io`), on the
//! connection the SSL object is mapped to, so that classification, pairing, durations and
//! the fast/slow accounting are those of plain HTTP. The family carries `FAMILY_TLS`
//! (`url_scheme="https"`).
//!
//! Which connection: the socket hooks mark a connection whose first bytes are a TLS record
//! `CONN_TLS` (`on_first_record`); they never parse its bytes, and remember per thread the
//! TLS connection it last did socket I/O on (`TLS_LAST`, [`on_socket_io`]). An SSL object's
//! first call that moves bytes maps it to that connection (`TLS_SSL`): the library reads
//! and writes records during the call (a socket BIO: nginx, Python), or just before and
//! after it on the same thread (a memory BIO: Node's event loop). The mapping is checked
//! against the socket's cookie at each use (a socket address may be reused).
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use probe_common::{
    ConnState, TlsCall, TlsConn, TlsLast, TlsSslKey, CONN_TLS, CONN_TLS_OPEN, CONN_TLS_PROBED,
    COUNTER_TLS_CALLS_FULL, COUNTER_TLS_NO_ENTRY, COUNTER_TLS_PLAIN_SOCKET, COUNTER_TLS_UNMAPPED, FAMILY_TLS, PORT_TLS,
    TLS_HANDSHAKE, TLS_READ, TLS_WRITE,
};

use crate::{
    capture::rp_on_io,
    conn,
    maps::{count, GO_CALLS, GO_LAST, GO_TGIDS, SERVER_PORTS, TLS_CALLS, TLS_LAST, TLS_SSL, WORK},
    target::current_target,
};

#[uprobe]
pub fn rp_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, false)
}

#[uprobe]
pub fn rp_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, true)
}

#[uprobe]
pub fn rp_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, false)
}

#[uprobe]
pub fn rp_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, true)
}

#[uprobe]
pub fn rp_ssl_handshake(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_HANDSHAKE, false)
}

/// Go's crypto/tls (register ABI): `(*Conn).Read(b)`, `(*Conn).Write(b)`: the receiver in
/// rax, the slice's pointer in rbx; `(*Conn).handshakeContext(ctx)`. The goroutine (r14)
/// keys the call: Go moves goroutines between threads.
#[uprobe]
pub fn rp_go_tls_read(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, TLS_READ)
}

#[uprobe]
pub fn rp_go_tls_write(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, TLS_WRITE)
}

#[uprobe]
pub fn rp_go_tls_handshake(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, TLS_HANDSHAKE)
}

/// At each `ret` of the three (a uretprobe would rewrite a return address on a goroutine
/// stack Go may move): n in rax; handshakeContext's error interface in rax (nil: done).
/// One program per function: `Read` and `Write` call `handshakeContext` on the same
/// goroutine, so a call is keyed by goroutine and function.
#[uprobe]
pub fn rp_go_tls_read_return(ctx: ProbeContext) -> u32 {
    go_return(&ctx, TLS_READ)
}

#[uprobe]
pub fn rp_go_tls_write_return(ctx: ProbeContext) -> u32 {
    go_return(&ctx, TLS_WRITE)
}

#[uprobe]
pub fn rp_go_tls_handshake_return(ctx: ProbeContext) -> u32 {
    go_return(&ctx, TLS_HANDSHAKE)
}

#[inline(always)]
fn go_return(ctx: &ProbeContext, kind: u32) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let regs = ctx.regs;
    let (rax, g) = unsafe { ((*regs).rax, (*regs).r14) };
    let key = TlsSslKey { tgid, _pad: kind, ssl: g };
    let Some(call) = (unsafe { GO_CALLS.get(&key) }).copied() else {
        count(COUNTER_TLS_NO_ENTRY);
        return 0;
    };
    let _ = GO_CALLS.remove(&key);
    let (moved, done) = match kind {
        TLS_HANDSHAKE => (0, rax == 0),
        _ => ((rax as i64).max(0) as u64, false),
    };
    let last = unsafe { GO_LAST.get(&TlsSslKey { tgid, _pad: 0, ssl: g }) }.copied();
    finish(tgid, &call, moved, done, last, g)
}

#[inline(always)]
fn go_enter(ctx: &ProbeContext, kind: u32) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let regs = ctx.regs;
    let (conn, buf, g) = unsafe { ((*regs).rax, (*regs).rbx, (*regs).r14) };
    let call = TlsCall { ssl: conn, buf: if kind == TLS_HANDSHAKE { 0 } else { buf }, len_ptr: 0, kind, _pad: 0 };
    if GO_CALLS.insert(&TlsSslKey { tgid, _pad: kind, ssl: g }, &call, 0).is_err() {
        count(COUNTER_TLS_CALLS_FULL);
    }
    0
}

/// The return of every OpenSSL call above (one program: the entry said which call it was).
#[uretprobe]
pub fn rp_ssl_return(ctx: RetProbeContext) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let thread = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { TLS_CALLS.get(&thread) }).copied() else {
        count(COUNTER_TLS_NO_ENTRY);
        return 0;
    };
    let _ = TLS_CALLS.remove(&thread);
    let rc = ctx.ret::<u64>() as i32;
    let moved: u64 = match call.kind {
        TLS_HANDSHAKE => 0,
        _ if call.len_ptr != 0 => {
            if rc == 1 {
                unsafe { bpf_probe_read_user(call.len_ptr as *const u64) }.unwrap_or(0)
            } else {
                0
            }
        }
        _ => rc.max(0) as u64,
    };
    let last = unsafe { TLS_LAST.get(&thread) }.copied();
    finish(tgid, &call, moved, call.kind == TLS_HANDSHAKE && rc == 1, last, thread)
}

/// A call returned `moved` bytes (or a handshake completed: `done`): the plaintext goes to
/// the connection its object is mapped to (or, at its first call, the one `last` says the
/// thread or goroutine did socket I/O on), keyed in `TLS_LAST`/`GO_LAST` by `who`.
#[inline(always)]
fn finish(tgid: u32, call: &TlsCall, moved: u64, done: bool, last: Option<TlsLast>, who: u64) -> u32 {
    let Some((conn, state)) = connection(tgid, call.ssl, last) else {
        if moved > 0 {
            count(COUNTER_TLS_UNMAPPED);
        }
        return 0;
    };
    let open = moved > 0 || done;
    // The port serves HTTPS once a handshake on it completed (a ClientHello sent to a
    // plain port, read by a server that answers 400, marks nothing).
    if open && unsafe { (*state).flags } & CONN_TLS_OPEN == 0 {
        mark_tls_port(conn.sk as *const u8);
    }
    unsafe { (*state).flags |= CONN_TLS_PROBED | if open { CONN_TLS_OPEN } else { 0 } };
    if moved == 0 || moved > u32::MAX as u64 {
        return 0;
    }
    // A connection whose socket carries the plaintext (kernel TLS set up before it was
    // seen, so its socket I/O was classified as HTTP) is measured there.
    if unsafe { (*state).flags } & CONN_TLS == 0 {
        count(COUNTER_TLS_PLAIN_SOCKET);
        return 0;
    }
    let recv = call.kind == TLS_READ;
    let now = unsafe { bpf_ktime_get_ns() };
    // A read's request began to arrive when the records that carried it did.
    let arrival = if recv { take_arrival(tgid, who, conn.cookie).unwrap_or(now) } else { 0 };
    let Some(w) = WORK.get_ptr_mut(0) else { return 0 };
    unsafe {
        (*w).kind = 1;
        (*w).ptr = call.buf;
        (*w).count = 0;
        (*w).moved = moved;
        (*w).ts = now;
        (*w).tgid = tgid as u64;
        (*w).cookie = conn.cookie;
        (*w).family = ((*state).family as u16 | FAMILY_TLS) as u64;
        (*w).sk = conn.sk;
        (*w).recv = recv as u64;
        (*w).tx_ok = 1;
        (*w).offset = 0;
        (*w).client = 0;
        (*w).arrival = if arrival != 0 && arrival <= now { arrival } else { now };
    }
    rp_on_io(w, state);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32, ex: bool) -> u32 {
    if current_target().is_none() {
        return 0;
    }
    let arg = |n| ctx.arg::<u64>(n).unwrap_or(0);
    let call = TlsCall {
        ssl: arg(0),
        buf: if kind == TLS_HANDSHAKE { 0 } else { arg(1) },
        len_ptr: if ex { arg(3) } else { 0 },
        kind,
        _pad: 0,
    };
    if TLS_CALLS.insert(&bpf_get_current_pid_tgid(), &call, 0).is_err() {
        count(COUNTER_TLS_CALLS_FULL);
    }
    0
}

/// The connection `ssl` is mapped to (mapped now, at its first call, to the TLS
/// connection the thread or goroutine last did socket I/O on: `last`), with its state.
#[inline(always)]
fn connection(tgid: u32, ssl: u64, last: Option<TlsLast>) -> Option<(TlsConn, *mut ConnState)> {
    let key = TlsSslKey { tgid, _pad: 0, ssl };
    if let Some(c) = unsafe { TLS_SSL.get(&key) }.copied()
        && conn::existing_cookie(c.sk as *const u8) == Some(c.cookie)
        && let Some(state) = conn::lookup(c.cookie)
    {
        return Some((c, state));
    }
    let last = last?;
    let c = TlsConn { cookie: last.cookie, sk: last.sk };
    if conn::existing_cookie(c.sk as *const u8) != Some(c.cookie) {
        return None;
    }
    let state = conn::lookup(c.cookie)?;
    let _ = TLS_SSL.insert(&key, &c, 0);
    Some((c, state))
}

/// The arrival of the records the thread (OpenSSL: `who` is pid_tgid) or goroutine (Go:
/// `who` is its g) read last on `cookie`, taken once.
#[inline(always)]
fn take_arrival(tgid: u32, who: u64, cookie: u64) -> Option<u64> {
    let last = match TLS_LAST.get_ptr_mut(&who) {
        Some(l) if (who >> 32) as u32 == tgid && unsafe { (*l).cookie } == cookie => l,
        _ => GO_LAST.get_ptr_mut(&TlsSslKey { tgid, _pad: 0, ssl: who })?,
    };
    unsafe {
        if (*last).cookie != cookie || (*last).arrival_ns == 0 {
            return None;
        }
        let at = (*last).arrival_ns;
        (*last).arrival_ns = 0;
        Some(at)
    }
}

/// Socket I/O of a target on a `CONN_TLS` connection: ciphertext, never parsed. The
/// thread's last TLS connection is remembered, with when the first of the bytes its reads
/// brought since the last plaintext read began to arrive (`arrival_ns`, 0 for a write).
/// In a global function (verified once, and off the callers' stack), which takes the
/// socket from the work area (a global function's arguments are plain numbers, and the
/// hook's `sk` is a typed pointer).
#[inline(always)]
pub fn on_socket_io(cookie: u64, sk: *const u8, recv: bool, moved: u64, tcp: bool) {
    let Some(w) = WORK.get_ptr_mut(0) else { return };
    unsafe { (*w).sk = sk as u64 };
    rp_tls_socket_io(cookie, (recv as u64) | (tcp as u64) << 1, moved);
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tls_socket_io(cookie: u64, how: u64, moved: u64) -> u64 {
    let (recv, tcp) = (how & 1 != 0, how & 2 != 0);
    let Some(w) = WORK.get_ptr_mut(0) else { return 0 };
    let sk = unsafe { (*w).sk } as *const u8;
    let thread = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    let arrival = |now| if recv && tcp { crate::arrival::arrived(sk, cookie, moved, now) } else { now };
    go_socket_io((thread >> 32) as u32, cookie, sk, recv, now, arrival);
    note_last(&TLS_LAST, &thread, cookie, sk, recv, now, arrival);
    0
}

/// Notes in `map` (by thread, or by goroutine) that `key` last did socket I/O on `cookie`:
/// a new entry, or, for the same connection, the arrival of its reads' first bytes if none
/// is pending.
#[inline(always)]
fn note_last<K>(
    map: &LruHashMap<K, TlsLast>,
    key: &K,
    cookie: u64,
    sk: *const u8,
    recv: bool,
    now: u64,
    arrival: impl Fn(u64) -> u64,
) {
    if let Some(last) = map.get_ptr_mut(key) {
        unsafe {
            if (*last).cookie == cookie && (*last).sk == sk as u64 {
                if recv && (*last).arrival_ns == 0 {
                    (*last).arrival_ns = arrival(now);
                }
                return;
            }
        }
    }
    let last = TlsLast { cookie, sk: sk as u64, arrival_ns: if recv { arrival(now) } else { 0 } };
    let _ = map.insert(key, &last, 0);
}

/// The same by goroutine, for a process whose Go crypto/tls is probed: the goroutine is
/// r14 as the syscall saved it.
#[inline(always)]
fn go_socket_io(tgid: u32, cookie: u64, sk: *const u8, recv: bool, now: u64, arrival: impl Fn(u64) -> u64) {
    if unsafe { GO_TGIDS.get(&tgid) }.is_none() {
        return;
    }
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    let Some(g) = crate::kernel::read::<u64>(regs, crate::maps::global!(OFFSETS.regs_r14)) else { return };
    note_last(&GO_LAST, &TlsSslKey { tgid, _pad: 0, ssl: g }, cookie, sk, recv, now, arrival);
}

/// A connection classified from a TLS library's plaintext (`FAMILY_TLS` in `family`): it
/// carries TLS, a call of the target was mapped to it, its handshake is done, and its
/// family is the socket's.
#[inline(always)]
pub fn on_first_plaintext(state: *mut ConnState, family: u16) {
    unsafe {
        (*state).flags |= CONN_TLS | CONN_TLS_PROBED | CONN_TLS_OPEN;
        (*state).family = (family & !FAMILY_TLS) as u32;
    }
}

/// A target's connection whose first bytes are a TLS record: its socket I/O is ciphertext
/// from now on (its port is marked HTTPS when a handshake completes on it).
#[inline(always)]
pub fn on_first_record(state: *mut ConnState, family: u16) {
    unsafe {
        (*state).flags |= CONN_TLS;
        (*state).family = family as u32;
    }
}

/// Whether a connection's first byte (the classifier stops at the first byte that cannot
/// start a method: `first4`'s low byte) starts a TLS record: a handshake (a new
/// connection), or application data (one opened before the probe).
#[inline(always)]
pub fn is_record(first4: u32) -> bool {
    matches!(first4 & 0xff, 0x16 | 0x17)
}

/// A TLS handshake record: sent first by a target, it opens an outgoing connection.
#[inline(always)]
pub fn is_handshake(first4: u32) -> bool {
    first4 & 0xff == 0x16
}

/// Whether a plaintext request on this TCP socket's port is HTTP sent to an HTTPS port.
#[inline(always)]
pub fn is_tls_port(sk: *const u8) -> bool {
    match port(sk) {
        Some(p) => matches!(SERVER_PORTS.get(p as u32), Some(v) if *v & PORT_TLS != 0),
        None => false,
    }
}

#[inline(always)]
fn mark_tls_port(sk: *const u8) {
    let Some(p) = port(sk) else { return };
    if let Some(v) = SERVER_PORTS.get_ptr_mut(p as u32) {
        unsafe {
            if *v & PORT_TLS == 0 {
                *v |= PORT_TLS;
            }
        }
    }
}

#[inline(always)]
fn port(sk: *const u8) -> Option<u16> {
    crate::kernel::read::<u16>(sk, crate::maps::global!(OFFSETS.sk_num)).filter(|p| *p != 0)
}


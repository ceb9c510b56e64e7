//! The fast path: the kernel pairs and times the requests of a server connection itself
//! and adds each one to the per-CPU aggregates (`AGG`), so that a common request costs no
//! event and no agent work. Whatever it cannot decide (a head split over reads, a
//! pipelined batch, a response head it does not read, an upgrade...) it hands to the agent:
//! a switch event with its pairing state, then every later read and write of the
//! connection as events (the slow path).
//!
//! The work runs in global functions (`rp_*`, kept global by probe-ebpf/build.rs), each
//! verified once on its own, on the per-CPU `Work` area. The decisions themselves are
//! probe_common's (`http1`, `route`, `fast`), table-tested on the host.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_probe_read_kernel};
use probe_common::{
    CONN_CLIENT_DECIDED, AggKey, AggValue, ConnState, EventHeader, AGG_CLIENT, AGG_SERVER, CLIENT_ROUTES, FLAG_CLIENT, ROLE_CLIENT, MODE_FAST, FastRequest, MeasuredEvent, Pairing, PathEvent, RouteKey,
    SwitchEvent, TxWait, TX_FAST, CONN_LOST_EVENTS, CONN_TX_WATCHED, COUNTER_AGG_FULL, COUNTER_LOST, EVENT_MEASURED, EVENT_PATH,
    EVENT_SWITCH, FAST_DEPTH, HEAD_WINDOW, MAX_HELD, MODE_SLOW, REQ_BODY, REQ_HEAD, RESP_CHUNKED, RESP_IDLE, RESP_LENGTH,
    RESP_UNTIL_CLOSE, SLOW_HEAD_BEYOND_WINDOW, SLOW_HEAD_SPLIT, SLOW_PIPELINE, SLOW_REQUEST,
    SLOW_RESPONSE, SLOW_UNEXPECTED_WRITE, SLOW_UNREADABLE, SLOW_UPGRADE, TAIL_WINDOW,
    http1::{self, Framing, Parse, Scratch, METHOD_HEAD},
    route::{path_key, MAX_PATH},
};

use crate::{
    arrival::arrived,
    capture::{read_user_upto, rp_gather_iovecs, AF_UNIX},
    emit::wakeup_flags,
    maps::{count, AGG, EVENTS, ROUTES, SERVICES},
    slots::{rp_size_slot, rp_time_slot},
    tx,
};

/// What the hook asks of a global function, and what the fast path found.
#[repr(C)]
pub struct Work {
    pub scratch: Scratch,
    /// The data's last bytes (`tail[..tail_len]`), when captured.
    pub tail: [u8; TAIL_WINDOW],
    pub tail_len: u64,
    /// The I/O: 0 no user buffer (sendfile, splice), 1 a buffer at `ptr`, 2 `count` iovecs
    /// at `ptr`; `moved` bytes, at `ts`.
    pub kind: u64,
    pub ptr: u64,
    pub count: u64,
    pub moved: u64,
    pub ts: u64,
    pub tgid: u64,
    pub cookie: u64,
    pub family: u64,
    /// The socket (`struct sock *`), and whether it is a read.
    pub sk: u64,
    pub recv: u64,
    /// 1 where a response may wait for its last bytes to go out (`tx`): not at a reset.
    pub tx_ok: u64,
    /// When a read's bytes began to arrive, if the hook knows it already (TLS plaintext:
    /// its records' arrival); 0: from the socket (`arrival::arrived`).
    pub arrival: u64,
    /// Where in the scratch buffer a flat buffer's head goes (after bytes held from an
    /// earlier read; 0 otherwise).
    pub offset: u64,
    /// 1: the I/O of a client connection (`rp_client_io`): a request is keyed by its Host
    /// value instead of its path.
    pub client: u64,
    /// A parsed head.
    pub method: u64,
    pub version: u64,
    pub head_len: u64,
    /// 0 none, 1 a length, 2 chunked.
    pub framing: u64,
    pub length: u64,
    pub status: u64,
    pub key: u64,
    pub target_start: u64,
    pub target_end: u64,
    /// What `rp_gather_iovecs` returned for this I/O (head length | tail length << 16).
    pub gathered: u64,
    /// Always zero: the template of a new `AGG` value.
    pub zero: AggValue,
    /// A wait for the last bytes of a response or write (`tx`), built here rather than on
    /// the stack, which the call chain to it fills already.
    pub tx: TxWait,
}

/// What the hook does next.
pub const DONE: u32 = 0;
/// The connection went slow: emit this I/O as an event.
pub const SLOW: u32 = 1;


#[inline(always)]
fn slot(first: u8, i: u8) -> usize {
    (first.wrapping_add(i) as usize) & (FAST_DEPTH - 1)
}

/// Copies the data's first bytes (up to the window) into the scratch buffer. Returns how
/// many were captured. Each copy from user memory costs about as much as the parsing of a
/// head, so the tail is copied only when a decision needs it ([`rp_tail`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_capture(w: *mut Work) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    let moved = w.moved;
    w.gathered = 0;
    match w.kind {
        1 => {
            let n = moved.min(HEAD_WINDOW as u64);
            // The buffer is twice the window: a window's copy after up to MAX_HELD bytes fits.
            let dst = unsafe { w.scratch.buf.as_mut_ptr().add((w.offset as usize) & (MAX_HELD - 1)) };
            if !read_user_upto(dst, w.ptr, n, HEAD_WINDOW as u64) {
                return 0;
            }
            n
        }
        2 => {
            w.gathered = rp_gather_iovecs(&mut w.scratch, w.ptr, w.count, moved);
            w.gathered & 0xffff
        }
        _ => 0,
    }
}

/// Copies the data's last bytes into `tail` (after [`rp_capture`], which gathered the
/// iovecs): where a chunked body's terminator is. Returns how many.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tail(w: *mut Work) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    let moved = w.moved;
    w.tail_len = 0;
    match w.kind {
        1 => {
            let t = moved.min(TAIL_WINDOW as u64);
            if read_user_upto(w.tail.as_mut_ptr(), w.ptr + moved - t, t, TAIL_WINDOW as u64) {
                w.tail_len = t;
            }
        }
        2 => {
            let (head, tail) = (w.gathered & 0xffff, (w.gathered >> 16) & 0xffff);
            let tail = tail.min(TAIL_WINDOW as u64);
            // The gather put the tail right after the window; a write that fit in the head
            // window has its end in the head.
            let from = if tail == 0 && head == moved && head > 0 {
                let t = head.min(TAIL_WINDOW as u64);
                w.tail_len = t;
                ((head - t) as usize) & (HEAD_WINDOW - 1)
            } else {
                w.tail_len = tail;
                HEAD_WINDOW
            };
            unsafe {
                bpf_probe_read_kernel(
                    w.tail.as_mut_ptr() as *mut _,
                    TAIL_WINDOW as u32,
                    w.scratch.buf.as_ptr().add(from) as *const _,
                )
            };
        }
        _ => {}
    }
    w.tail_len
}

/// Parses a request head from `n` captured bytes into `w`. Returns 0, or why the agent
/// must read it (`SLOW_*`). The line, the rest of the head and the path key are three
/// global functions: each returns one value, so that every way out of a loop in one of
/// them meets the next in one state.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_request(w: *mut Work, n: u64) -> u32 {
    let line = rp_request_line(w, n);
    let Some(wr) = (unsafe { w.as_mut() }) else { return SLOW_REQUEST };
    let whole = wr.scratch.byte((n as usize).wrapping_sub(1) & (HEAD_WINDOW - 1)) == b'\n';
    let slow = if wr.moved > HEAD_WINDOW as u64 {
        SLOW_HEAD_BEYOND_WINDOW
    } else if !whole {
        SLOW_HEAD_SPLIT // a read that does not end a head: split over reads
    } else {
        SLOW_REQUEST
    };
    if line == 0 {
        return slow;
    }
    wr.method = line & 0xff;
    wr.version = (line >> 8) & 0xff;
    wr.target_start = (line >> 16) & 0xffff;
    wr.target_end = (line >> 32) & 0xffff;
    let head = rp_head(w);
    if head == 0 {
        return slow;
    }
    let Some(wr) = (unsafe { w.as_mut() }) else { return SLOW_REQUEST };
    if wr.framing == 2 {
        return SLOW_REQUEST; // a chunked request body: the agent's
    }
    let key = rp_path_key(w);
    let Some(wr) = (unsafe { w.as_mut() }) else { return SLOW_REQUEST };
    if key == 0 {
        return SLOW_REQUEST; // not origin form, or a very long path: the agent routes it
    }
    wr.key = key;
    // A client's request is keyed by its upstream (its Host value), not by its path.
    if wr.client != 0 && rp_host_key(w) == 0 {
        return SLOW_REQUEST;
    }
    0
}

/// The request line: method | version << 8 | target start << 16 | target end << 32, or 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_request_line(w: *mut Work, n: u64) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    match http1::request_line(&mut w.scratch, n as usize) {
        Some((method, start, end, version)) => method as u64 | (version as u64) << 8 | (start as u64) << 16 | (end as u64) << 32,
        None => 0,
    }
}

/// The rest of a head: its length, with its framing in `w`; 0 when the agent must read it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_head(w: *mut Work) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    match http1::head(&mut w.scratch) {
        Parse::Complete((framing, len)) => {
            (w.framing, w.length) = match framing {
                Framing::None => (0, 0),
                Framing::Length(l) => (1, l),
                Framing::Chunked => (2, 0),
            };
            w.head_len = len as u64;
            len as u64
        }
        Parse::Slow => 0,
    }
}

/// The key of a client request's `Host` value (`http1::host_key`, after `rp_head`), 0 when
/// none: the key goes to `w.key`, and the value's place to `w.target_start..w.target_end`
/// (what `announce` sends).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_host_key(w: *mut Work) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    let key = http1::host_key(&mut w.scratch);
    let (start, end) = http1::host_span(&w.scratch);
    (w.key, w.target_start, w.target_end) = (key, start as u64, end as u64);
    key
}

/// The `ROUTES` namespace of a connection's request keys: its service's paths, or, on a
/// client connection, its service's `Host` values.
#[inline(always)]
fn namespace(c: &ConnState) -> u32 {
    if c.role == ROLE_CLIENT { c.service | CLIENT_ROUTES } else { c.service }
}

/// The route key of the target at `w.target_start..w.target_end`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_path_key(w: *mut Work) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    let (start, end) = ((w.target_start as usize) & (HEAD_WINDOW - 1), (w.target_end as usize) & (HEAD_WINDOW - 1));
    path_key(&mut w.scratch, start, end)
}

/// Parses a response head from `n` captured bytes into `w`: 0, or `SLOW_RESPONSE`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_response(w: *mut Work, n: u64) -> u32 {
    let status = rp_status_line(w, n);
    if status == 0 || rp_head(w) == 0 {
        return SLOW_RESPONSE;
    }
    let Some(w) = (unsafe { w.as_mut() }) else { return SLOW_RESPONSE };
    w.status = status;
    0
}

/// The status line's code, or 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_status_line(w: *mut Work, n: u64) -> u64 {
    let Some(w) = (unsafe { w.as_mut() }) else { return 0 };
    http1::status_line(&mut w.scratch, n as usize).unwrap_or(0) as u64
}

/// Tells the agent of a path whose route it does not know yet, once: a 0 in `ROUTES`
/// marks the key as asked for (the agent overwrites it with the route id). If the event
/// cannot be sent, the mark goes, so that the next request asks again.
#[inline(always)]
fn announce(w: &Work, service: u32) {
    let k = RouteKey { service, _pad: 0, path_key: w.key };
    if ROUTES.insert(&k, &0, BPF_NOEXIST as u64).is_err() {
        return; // asked for already (or routed meanwhile)
    }
    let Some(mut entry) = EVENTS.reserve::<PathEvent>(0) else {
        count(COUNTER_LOST);
        let _ = ROUTES.remove(&k);
        return;
    };
    let ev = entry.as_mut_ptr();
    let start = (w.target_start as usize) & (HEAD_WINDOW - 1);
    let len = w.target_end.saturating_sub(w.target_start).min(MAX_PATH as u64);
    unsafe {
        (*ev).header = EventHeader { kind: EVENT_PATH, flags: 0, ts_ns: w.ts };
        (*ev).key = w.key;
        (*ev).service = service;
        (*ev).len = len as u32;
        bpf_probe_read_kernel((*ev).path.as_mut_ptr() as *mut _, MAX_PATH as u32, w.scratch.buf.as_ptr().add(start) as *const _);
    }
    entry.submit(wakeup_flags());
}

/// The route id of a path key: 0 when the agent has not routed it (yet).
#[inline(always)]
fn route_of(service: u32, key: u64) -> u32 {
    let k = RouteKey { service, _pad: 0, path_key: key };
    match unsafe { ROUTES.get(&k) } {
        Some(r) => *r,
        None => 0,
    }
}

/// Hands the connection to the agent: its pairing state as it is, in a switch event. What
/// waits is then the agent's to count (its in-flight gauge counts it from now on).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_switch(w: *const Work, c: *mut ConnState, reason: u32) -> u32 {
    let (Some(w), Some(c)) = (unsafe { w.as_ref() }, unsafe { c.as_mut() }) else { return SLOW };
    c.mode = MODE_SLOW;
    let Some(mut entry) = EVENTS.reserve::<SwitchEvent>(0) else {
        count(COUNTER_LOST);
        c.flags |= CONN_LOST_EVENTS;
        return SLOW;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        let flags = if c.role == ROLE_CLIENT { FLAG_CLIENT } else { 0 };
        (*ev).header = EventHeader { kind: EVENT_SWITCH, flags, ts_ns: w.ts };
        (*ev).conn_id = w.cookie;
        (*ev).tgid = w.tgid as u32;
        (*ev).reason = reason;
        (*ev).service = c.service;
        (*ev).family = w.family as u16;
        (*ev)._pad = 0;
        bpf_probe_read_kernel(
            &mut (*ev).pairing as *mut Pairing as *mut _,
            size_of::<Pairing>() as u32,
            &c.pairing as *const Pairing as *const _,
        );
    }
    entry.submit(wakeup_flags());
    SLOW
}

/// The oldest request waiting got its whole response (`status`, first and last writes,
/// body bytes): it is measured into `AGG`, or sent as an event when its route is not
/// known yet or `AGG` is full.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_measure(w: *mut Work, c: *mut ConnState, status: u64, first_ns: u64, end_ns: u64) -> u32 {
    let (Some(w), Some(c)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return 0 };
    let service = c.service;
    let p = &mut c.pairing;
    if p.len == 0 {
        return 0;
    }
    let req: FastRequest = p.pending[slot(p.first, 0)];
    let bytes = p.resp_bytes;
    p.first = p.first.wrapping_add(1) & (FAST_DEPTH as u8 - 1);
    p.len -= 1;
    p.resp_state = RESP_IDLE;
    p.resp_bytes = 0;
    p.resp_left = 0;
    if w.tx_ok != 0 && c.flags & CONN_TX_WATCHED != 0 && let Some(end_seq) = tx::unsent(w.sk as *const u8) {
        // Bytes of the response are still in the send queue: it ends when they go out.
        w.tx = TxWait {
            end_seq,
            kind: TX_FAST,
            measured: MeasuredEvent {
                header: EventHeader::default(),
                conn_id: w.cookie,
                request: req,
                first_byte_ns: first_ns,
                end_ns,
                response_bytes: bytes,
                service,
                status: status as u16,
                family: w.family as u16,
            },
        };
        if tx::wait(w.cookie, w.sk as *const u8, &w.tx) {
            return 0;
        }
    }
    // (Whether it is a client's is read from `w` where it is used: a value kept across this
    // function takes stack its call chain has not to spare.)
    let route = if req.route != 0 { req.route } else { route_of(if w.client != 0 { service | CLIENT_ROUTES } else { service }, req.path_key) };
    if route != 0 {
        let key = AggKey {
            service,
            route,
            status: status as u16,
            method: req.method,
            version: req.version,
            family: w.family as u16,
            kind: if w.client != 0 { AGG_CLIENT } else { AGG_SERVER },
        };
        let mut value = AGG.get_ptr_mut(&key);
        if value.is_none() && AGG.insert(&key, &w.zero, 0).is_ok() {
            value = AGG.get_ptr_mut(&key);
        }
        if let Some(v) = value {
            let v = unsafe { &mut *v };
            let (duration, first_byte) = (end_ns.saturating_sub(req.start_ns), first_ns.saturating_sub(req.start_ns));
            v.duration.add(rp_time_slot(duration) as usize, duration);
            v.first_byte.add(rp_time_slot(first_byte) as usize, first_byte);
            v.request_body.add(rp_size_slot(req.body_bytes) as usize, req.body_bytes);
            v.response_body.add(rp_size_slot(bytes) as usize, bytes);
            v.queue.add(rp_time_slot(req.queued_ns) as usize, req.queued_ns);
            return 0;
        }
        count(COUNTER_AGG_FULL);
    }
    let Some(mut entry) = EVENTS.reserve::<MeasuredEvent>(0) else {
        count(COUNTER_LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = EventHeader { kind: EVENT_MEASURED, flags: if w.client != 0 { FLAG_CLIENT } else { 0 }, ts_ns: end_ns };
        (*ev).conn_id = w.cookie;
        (*ev).request = req;
        (*ev).first_byte_ns = first_ns;
        (*ev).end_ns = end_ns;
        (*ev).response_bytes = bytes;
        (*ev).service = service;
        (*ev).status = status as u16;
        (*ev).family = w.family as u16;
    }
    entry.submit(wakeup_flags());
    0
}

/// When the data of this read began to arrive (`arrival`); UNIX sockets' requests start
/// at their read.
#[inline(always)]
fn arrival_of(w: &Work) -> u64 {
    // TLS plaintext: the arrival of its records (`tls`).
    if w.arrival != 0 {
        return w.arrival;
    }
    if w.family == AF_UNIX as u64 {
        return w.ts;
    }
    arrived(w.sk as *const u8, w.cookie, w.moved, w.ts)
}

/// A read of a fast connection.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_fast_recv(w: *mut Work, c: *mut ConnState) -> u32 {
    let (Some(wr), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
    let moved = wr.moved;
    if cr.pairing.req_state == REQ_BODY {
        let left = cr.pairing.req_left;
        if moved > left {
            return rp_switch(w, c, SLOW_PIPELINE); // the body ends, and the next head starts
        }
        let p = &mut cr.pairing;
        p.req_left = left - moved;
        if p.len > 0 {
            let newest = slot(p.first, p.len - 1);
            p.pending[newest].body_bytes += moved;
        }
        if p.req_left == 0 {
            p.req_state = REQ_HEAD;
        }
        return DONE;
    }
    if wr.kind == 0 {
        return rp_switch(w, c, SLOW_UNREADABLE);
    }
    // A request while a response that ends only with a terminator or the close is being
    // written: the agent decides where that response ended.
    let rs = cr.pairing.resp_state;
    if rs == RESP_CHUNKED || rs == RESP_UNTIL_CLOSE {
        return rp_switch(w, c, SLOW_RESPONSE);
    }
    let held = cr.pairing.held_len as u64 & (MAX_HELD as u64 - 1);
    if held == 0 && moved < MAX_HELD as u64 && wr.kind == 1 {
        // Too short to be a head: held until the rest comes (Go reads a request's first
        // byte alone).
        let p = &mut cr.pairing;
        if !read_user_upto(p.held.as_mut_ptr(), wr.ptr, moved, MAX_HELD as u64) {
            return rp_switch(w, c, SLOW_UNREADABLE);
        }
        let arrival = arrival_of(wr);
        p.held_len = moved as u8;
        p.held_ns = arrival;
        p.held_queued_ns = wr.ts - arrival;
        return DONE;
    }
    if held > 0 && wr.kind != 1 {
        return rp_switch(w, c, SLOW_HEAD_SPLIT);
    }
    // The head is the held bytes, then this read's.
    wr.offset = held;
    let (start_ns, queued_ns) = if held > 0 {
        (cr.pairing.held_ns, cr.pairing.held_queued_ns)
    } else {
        let arrival = arrival_of(wr);
        (arrival, wr.ts - arrival)
    };
    let captured = rp_capture(w);
    let Some(wr) = (unsafe { w.as_mut() }) else { return SLOW };
    let Some(cr) = (unsafe { c.as_mut() }) else { return SLOW };
    let mut i = 0;
    while i < MAX_HELD {
        if (i as u64) < held {
            wr.scratch.buf[i] = cr.pairing.held[i];
        }
        i += 1;
    }
    let total = moved + held;
    wr.moved = total;
    let n = if captured == 0 { 0 } else { captured + held };
    let why = rp_request(w, n);
    if why != 0 {
        return rp_switch(w, c, why);
    }
    let (Some(wr), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
    let body = total.saturating_sub(wr.head_len);
    if cr.pairing.len as usize >= FAST_DEPTH || body > wr.length {
        return rp_switch(w, c, SLOW_PIPELINE);
    }
    cr.pairing.held_len = 0;
    let names = namespace(cr);
    let route = route_of(names, wr.key);
    if route == 0 {
        announce(wr, names);
    }
    let p = &mut cr.pairing;
    let i = slot(p.first, p.len);
    p.pending[i] = FastRequest {
        start_ns,
        queued_ns,
        path_key: wr.key,
        body_bytes: body,
        route,
        method: wr.method as u8,
        version: wr.version as u8,
        _pad: [0; 2],
    };
    p.len += 1;
    if wr.length > body {
        p.req_state = REQ_BODY;
        p.req_left = wr.length - body;
    }
    DONE
}

/// A write of a fast connection.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_fast_send(w: *mut Work, c: *mut ConnState) -> u32 {
    let (Some(wr), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
    let (moved, ts) = (wr.moved, wr.ts);
    let p = &mut cr.pairing;
    match p.resp_state {
        RESP_LENGTH => {
            if moved > p.resp_left {
                return rp_switch(w, c, SLOW_UNEXPECTED_WRITE); // the next response in the same write
            }
            p.resp_left -= moved;
            p.resp_bytes += moved;
            p.resp_last_ns = ts;
            if p.resp_left == 0 {
                let (status, first) = (p.status as u64, p.resp_first_ns);
                rp_measure(w, c, status, first, ts);
            }
            return DONE;
        }
        RESP_CHUNKED => {
            p.resp_bytes += moved;
            p.resp_last_ns = ts;
            if wr.kind == 2 {
                rp_capture(w);
            }
            rp_tail(w);
            let (Some(wr), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
            if http1::ends_chunked(&wr.tail, wr.tail_len as usize) {
                let (status, first) = (cr.pairing.status as u64, cr.pairing.resp_first_ns);
                rp_measure(w, c, status, first, ts);
            }
            return DONE;
        }
        RESP_UNTIL_CLOSE => {
            p.resp_bytes += moved;
            p.resp_last_ns = ts;
            return DONE;
        }
        _ => {}
    }
    if p.len == 0 {
        return rp_switch(w, c, SLOW_UNEXPECTED_WRITE);
    }
    if wr.kind == 0 {
        return rp_switch(w, c, SLOW_UNREADABLE);
    }
    let n = rp_capture(w);
    if rp_response(w, n) != 0 {
        return rp_switch(w, c, SLOW_RESPONSE);
    }
    let (Some(wr), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
    let status = wr.status;
    let head_len = wr.head_len;
    if (100..200).contains(&status) && status != 101 {
        // An interim response: the final one follows, in a later write.
        return if moved == head_len { DONE } else { rp_switch(w, c, SLOW_RESPONSE) };
    }
    if status == 101 {
        return rp_switch(w, c, SLOW_UPGRADE);
    }
    let p = &mut cr.pairing;
    if p.req_state == REQ_BODY && p.len == 1 {
        // An answer before the request's body was read (an early 413): the agent measures
        // it once the body is in, so that its size is whole.
        return rp_switch(w, c, SLOW_RESPONSE);
    }
    let is_head = p.pending[slot(p.first, 0)].method == METHOD_HEAD;
    let body = moved.saturating_sub(head_len);
    let framing = if is_head || status == 204 || status == 304 { 1 } else { wr.framing };
    let length = if framing == 1 && (is_head || status == 204 || status == 304) { 0 } else { wr.length };
    match framing {
        1 => {
            if body > length {
                return rp_switch(w, c, SLOW_UNEXPECTED_WRITE); // stray bytes, or the next response
            }
            p.resp_bytes = body;
            p.resp_first_ns = ts;
            p.resp_last_ns = ts;
            if body == length {
                rp_measure(w, c, status, ts, ts);
            } else {
                p.status = status as u16;
                p.resp_left = length - body;
                p.resp_state = RESP_LENGTH;
            }
        }
        2 => {
            p.resp_bytes = body;
            p.resp_first_ns = ts;
            p.resp_last_ns = ts;
            p.status = status as u16;
            p.resp_state = RESP_CHUNKED;
            if body > 0 && rp_tail(w) > 0 {
                let Some(wr) = (unsafe { w.as_ref() }) else { return SLOW };
                if http1::ends_chunked(&wr.tail, wr.tail_len as usize) {
                    rp_measure(w, c, status, ts, ts);
                }
            }
        }
        _ => {
            p.resp_bytes = body;
            p.resp_first_ns = ts;
            p.resp_last_ns = ts;
            p.status = status as u16;
            p.resp_state = RESP_UNTIL_CLOSE;
        }
    }
    DONE
}

/// Nothing waits on a fast connection, and no response is being written.
#[inline(always)]
pub fn idle(c: *const ConnState) -> bool {
    unsafe { (*c).pairing.len == 0 && (*c).pairing.resp_state == RESP_IDLE && (*c).pairing.held_len == 0 }
}

/// A fast connection closes: a response that ends with it is measured; what still waits
/// is handed to the agent (which then counts it, as the close that follows tells).
/// Returns SLOW when the agent must be told of the close.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_fast_close(w: *mut Work, c: *mut ConnState) -> u32 {
    let (Some(_), Some(cr)) = (unsafe { w.as_mut() }, unsafe { c.as_mut() }) else { return SLOW };
    let p = &mut cr.pairing;
    if p.resp_state == RESP_UNTIL_CLOSE && p.len > 0 {
        let (status, first, last) = (p.status as u64, p.resp_first_ns, p.resp_last_ns);
        rp_measure(w, c, status, first, last);
    }
    let Some(cr) = (unsafe { c.as_mut() }) else { return SLOW };
    if idle(cr) {
        return DONE;
    }
    rp_switch(w, c, probe_common::SLOW_CLOSE)
}

/// A read or write of a target's client connection (with client metrics on): its request
/// writes are what `rp_fast_recv` reads on a server connection, its response reads what
/// `rp_fast_send` follows there, each timed at its call's return (`Work::arrival` is the
/// write's own time). A connection is fast from its first request if its process's
/// service is known. Returns SLOW when the agent must get this I/O as an event.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_client_io(w: *mut Work) -> u32 {
    let Some(wr) = (unsafe { w.as_mut() }) else { return SLOW };
    let Some(c) = crate::conn::lookup(wr.cookie) else { return SLOW };
    let cr = unsafe { &mut *c };
    if cr.role != ROLE_CLIENT {
        return SLOW;
    }
    if cr.flags & CONN_CLIENT_DECIDED == 0 {
        // The connection's first request (its classification just now).
        cr.flags |= CONN_CLIENT_DECIDED;
        if let Some(service) = unsafe { SERVICES.get(&(wr.tgid as u32)) } {
            cr.mode = MODE_FAST;
            cr.service = *service;
        }
    }
    if cr.mode != MODE_FAST {
        return SLOW;
    }
    wr.arrival = wr.ts;
    wr.tx_ok = 0;
    wr.client = 1;
    if wr.recv != 0 { rp_fast_send(w, c) } else { rp_fast_recv(w, c) }
}

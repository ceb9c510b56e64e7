//! HTTP/2 server connections (`ROLE_H2`): the agent decodes their frames and header blocks
//! (HPACK needs every header block of the connection, wherever in a read it lies). The
//! programs follow each direction's frames (`H2_FRAMES`) and send every byte but DATA
//! payloads, in order, as chunks of up to `H2_CHUNK` bytes gathered across iovecs; a gap
//! between chunks is a DATA payload, whose length the agent read in its frame header. The
//! last chunk of each call carries `FLAG_H2_LAST` (and may be empty): the agent then knows
//! the call's end, where a response's last DATA frame may end.
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_user, generated as helpers};
use probe_common::{
    EventHeader, H2Dir, H2Event, H2Walk, COUNTER_LOST, EVENT_H2, FAMILY_TLS, FLAG_AFTER_LOSS, FLAG_H2_LAST,
    FLAG_H2_TRUNCATED, H2_CHUNK, H2_HEADER_LEN, H2_MAX_STEPS, H2_PREFACE_LEN,
};

use crate::{
    capture::{read_user_upto, AF_UNIX},
    conn,
    emit::wakeup_flags,
    fast::Work,
    maps::{count, EVENTS, H2_BUF, H2_FRAMES, H2_WALK},
};

/// The chunk being filled, and a chunk's worth of room after it: a copy of at most one
/// chunk at an offset below one chunk is always in bounds.
#[repr(C)]
pub struct H2Buf {
    pub ev: H2Event,
    pub spare: [u8; H2_CHUNK],
}

/// A new HTTP/2 connection: its client sends the preface first, then frames.
#[inline(always)]
pub fn start(cookie: u64) {
    let mut walk = H2Walk::default();
    walk.dirs[0].left = H2_PREFACE_LEN;
    let _ = H2_FRAMES.insert(&cookie, &walk, 0);
}

#[inline(always)]
pub fn forget(cookie: u64) {
    let _ = H2_FRAMES.remove(&cookie);
}

// The walk's state, in per-CPU map memory (`H2_WALK`): the call, then where the walk is.
// Each step runs in a `bpf_loop` callback, verified once whatever the number of steps.
/// The call: its socket cookie, 1 for a read, its buffer (as `Work::kind`, `ptr`, `count`)
/// and the bytes it moved.
const COOKIE: usize = 0;
const RECV: usize = 1;
const KIND: usize = 2;
const PTR: usize = 3;
const COUNT: usize = 4;
const MOVED: usize = 5;
/// The segment being read: a flat buffer, or iovec `IOV`: where, and what is left of it.
const BASE: usize = 6;
const LEFT: usize = 7;
const IOV: usize = 8;
/// Bytes of the call walked so far.
const OFFSET: usize = 9;
/// Bytes in the chunk being filled, and where in the call it starts.
const FILL: usize = 10;
const START: usize = 11;
/// Set when a chunk could not be sent: the walk stops.
const FAILED: usize = 12;
pub const WALK_CELLS: usize = 16;

#[inline(always)]
fn get(cells: *mut [u64; WALK_CELLS], k: usize) -> u64 {
    unsafe { core::ptr::read_volatile(&(*cells)[k & (WALK_CELLS - 1)]) }
}

#[inline(always)]
fn set(cells: *mut [u64; WALK_CELLS], k: usize, v: u64) {
    unsafe { core::ptr::write_volatile(&mut (*cells)[k & (WALK_CELLS - 1)], v) }
}

/// Sends the I/O described in the work area (`capture::rp_on_io` filled it) as chunks: two
/// global functions, verified once each (one after the other, so that the walk's callback
/// is three calls deep, within the stack the verifier allows a call chain).
#[inline(always)]
pub fn emit(w: *mut Work) {
    if rp_h2_begin(w) != 0 {
        rp_h2_walk();
    }
}

/// The event's header and the walk's state, from the work area. Returns 1 to walk.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_h2_begin(w: *mut Work) -> u64 {
    let Some(wr) = (unsafe { w.as_ref() }) else { return 0 };
    let Some(buf) = H2_BUF.get_ptr_mut(0) else { return 0 };
    let Some(cells) = H2_WALK.get_ptr_mut(0) else { return 0 };
    let ev = unsafe { &raw mut (*buf).ev };
    let (kind, ptr, iov_count, moved) = (wr.kind, wr.ptr, wr.count, wr.moved);
    let (cookie, recv, family) = (wr.cookie, wr.recv != 0, wr.family);
    let Some(walk) = H2_FRAMES.get_ptr_mut(&cookie) else {
        // Its place in the frames was evicted: nothing can be sent of it any more.
        conn::mark_lost(cookie);
        return 0;
    };
    // A direction whose place was lost (told to the agent once): nothing more is sent.
    let dead = unsafe {
        let dir = if recv { &(*walk).dirs[0] } else { &(*walk).dirs[1] };
        dir.left == u32::MAX && dir.skip != 0
    };
    if dead {
        return 0;
    }
    let ts = unsafe { bpf_ktime_get_ns() };
    let arrival = if !recv {
        0
    } else if wr.arrival != 0 {
        wr.arrival
    } else if family & FAMILY_TLS as u64 == 0 && family != AF_UNIX as u64 {
        crate::arrival::arrived(wr.sk as *const u8, cookie, moved, ts)
    } else {
        0
    };
    let flags = if conn::take_lost(cookie) { FLAG_AFTER_LOSS } else { 0 };
    unsafe {
        (*ev).header = EventHeader { kind: EVENT_H2, flags, ts_ns: ts };
        (*ev).conn_id = cookie;
        (*ev).tgid = wr.tgid as u32;
        (*ev).len = moved as u32;
        (*ev).family = family as u16;
        (*ev).arrival_ns = if arrival < ts { arrival } else { 0 };
        (*ev).recv = recv as u32;
        (*ev)._pad = 0;
    }
    let (base, left) = match kind {
        1 => (ptr, moved),
        2 => iovec(ptr, 0, iov_count).unwrap_or((0, 0)),
        // No user buffer (sendfile, splice): inside a DATA payload long enough, only the
        // call's end is news; anywhere else the place in the frames is lost.
        _ => {
            let dir: *mut H2Dir = unsafe { if recv { &raw mut (*walk).dirs[0] } else { &raw mut (*walk).dirs[1] } };
            let mut flags = FLAG_H2_LAST;
            unsafe {
                if (*dir).skip != 0 && (*dir).left as u64 >= moved {
                    (*dir).left -= moved as u32;
                } else {
                    (*dir).left = u32::MAX;
                    (*dir).skip = 1;
                    flags |= FLAG_H2_TRUNCATED;
                }
            }
            flush(ev, moved, 0, flags, cookie);
            return 0;
        }
    };
    // One by one: an array of pairs would take the stack the call chain needs.
    set(cells, COOKIE, cookie);
    set(cells, RECV, recv as u64);
    set(cells, KIND, kind);
    set(cells, PTR, ptr);
    set(cells, COUNT, iov_count);
    set(cells, MOVED, moved);
    set(cells, BASE, base);
    set(cells, LEFT, left);
    set(cells, IOV, 0);
    set(cells, OFFSET, 0);
    set(cells, FILL, 0);
    set(cells, START, 0);
    set(cells, FAILED, 0);
    1
}

/// The walk, and the call's last chunk.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_h2_walk() -> u64 {
    let Some(buf) = H2_BUF.get_ptr_mut(0) else { return 0 };
    let Some(cells) = H2_WALK.get_ptr_mut(0) else { return 0 };
    let ev = unsafe { &raw mut (*buf).ev };
    let (cookie, recv, moved) = (get(cells, COOKIE), get(cells, RECV) != 0, get(cells, MOVED));
    unsafe {
        helpers::bpf_loop(H2_MAX_STEPS as u32, rp_h2_step as *mut core::ffi::c_void, core::ptr::null_mut(), 0);
    }
    let offset = get(cells, OFFSET);
    let mut last = FLAG_H2_LAST;
    if get(cells, FAILED) != 0 || offset < moved {
        // Out of steps (or an unreadable iovec): the place in the frames is lost.
        last |= FLAG_H2_TRUNCATED;
        if let Some(walk) = H2_FRAMES.get_ptr_mut(&cookie) {
            let dir: *mut H2Dir = unsafe { if recv { &raw mut (*walk).dirs[0] } else { &raw mut (*walk).dirs[1] } };
            unsafe {
                (*dir).left = u32::MAX;
                (*dir).skip = 1;
            }
        }
    }
    if get(cells, FAILED) != 0 {
        // A chunk was lost (the ring buffer is full; the connection is marked): what the
        // agent gets next says so, and nothing more of it is sent.
        return 0;
    }
    let fill = get(cells, FILL);
    if fill > 0 {
        // The gathered bytes, then an empty last chunk where the call ends.
        if !flush(ev, get(cells, START), fill, 0, cookie) {
            return 0;
        }
    }
    flush(ev, offset, 0, last, cookie);
    0
}

/// One step of the walk: a frame header (or what of it this segment holds), a payload's
/// bytes up to the end of the segment or chunk, or a DATA payload skipped. Returns 1 to
/// stop. A static function: the kernel takes no global one as a callback.
#[inline(never)]
extern "C" fn rp_h2_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(buf) = H2_BUF.get_ptr_mut(0) else { return 1 };
    let Some(cells) = H2_WALK.get_ptr_mut(0) else { return 1 };
    let cookie = get(cells, COOKIE);
    let Some(walk) = H2_FRAMES.get_ptr_mut(&cookie) else { return 1 };
    let dir: *mut H2Dir =
        unsafe { if get(cells, RECV) != 0 { &raw mut (*walk).dirs[0] } else { &raw mut (*walk).dirs[1] } };
    let ev = unsafe { &raw mut (*buf).ev };
    let (kind, moved, offset) = (get(cells, KIND), get(cells, MOVED), get(cells, OFFSET));
    if offset >= moved {
        return 1;
    }
    let seg = get(cells, LEFT);
    if seg == 0 {
        if kind != 2 {
            return 1;
        }
        let i = get(cells, IOV) + 1;
        set(cells, IOV, i);
        return match iovec(get(cells, PTR), i, get(cells, COUNT)) {
            Some((b, l)) => {
                set(cells, BASE, b);
                set(cells, LEFT, l);
                0
            }
            None => 1,
        };
    }
    let (base, fill) = (get(cells, BASE), get(cells, FILL) & (H2_CHUNK as u64 - 1));
    let data = unsafe { (*ev).data.as_mut_ptr() };
    let (frame_left, skip, have) =
        unsafe { (core::ptr::read_volatile(&(*dir).left) as u64, (*dir).skip != 0, (*dir).have as u64 & 15) };
    let n;
    if frame_left > 0 && skip {
        // A DATA payload: not sent. What is gathered goes first; the gap follows.
        n = frame_left.min(seg).min(moved - offset);
        if fill > 0 && !flush(ev, get(cells, START), fill, 0, cookie) {
            set(cells, FAILED, 1);
            return 1;
        }
        set(cells, FILL, 0);
        set(cells, START, offset + n);
    } else if frame_left > 0 {
        // Another frame's payload (or the preface): sent.
        n = frame_left.min(seg).min(moved - offset).min(H2_CHUNK as u64 - fill);
        if !read_user_upto(unsafe { data.add(fill as usize) }, base, n, H2_CHUNK as u64) {
            return 1;
        }
        set(cells, FILL, fill + n);
    } else {
        // A frame header: sent, and kept until whole.
        n = (9 - have.min(9)).min(seg).min(moved - offset).min(H2_CHUNK as u64 - fill);
        let hdr = unsafe { (*dir).hdr.as_mut_ptr().add(have as usize) };
        if !read_user_upto(hdr, base, n, 16) || !read_user_upto(unsafe { data.add(fill as usize) }, base, n, 16) {
            return 1;
        }
        set(cells, FILL, fill + n);
        let have = have + n;
        unsafe {
            if have >= 9 {
                let h = &(*dir).hdr;
                (*dir).left = (h[0] as u32) << 16 | (h[1] as u32) << 8 | h[2] as u32;
                (*dir).skip = (h[3] == 0) as u8;
                (*dir).have = 0;
            } else {
                (*dir).have = have as u8;
            }
        }
    }
    if frame_left > 0 {
        unsafe { core::ptr::write_volatile(&mut (*dir).left, (frame_left - n) as u32) };
    }
    set(cells, BASE, base + n);
    set(cells, LEFT, seg - n);
    set(cells, OFFSET, offset + n);
    if get(cells, FILL) >= H2_CHUNK as u64 {
        if !flush(ev, get(cells, START), H2_CHUNK as u64, 0, cookie) {
            set(cells, FAILED, 1);
            return 1;
        }
        set(cells, FILL, 0);
        set(cells, START, offset + n);
    }
    0
}

/// Sends the chunk of `n` bytes that starts at `start` in the call, with `flags`; on
/// failure the connection is marked (its next event says events were lost).
#[inline(always)]
fn flush(ev: *mut H2Event, start: u64, n: u64, flags: u32, cookie: u64) -> bool {
    unsafe {
        (*ev).offset = start as u32;
        (*ev).chunk_len = n as u16;
        (*ev).header.flags |= flags;
    }
    if !output(ev as *const u8, n) {
        count(COUNTER_LOST);
        conn::mark_lost(cookie);
        return false;
    }
    unsafe { (*ev).header.flags = 0 };
    true
}

/// Iovec `i` of `count` at `iov`: its base and length.
#[inline(always)]
fn iovec(iov: u64, i: u64, count: u64) -> Option<(u64, u64)> {
    if i >= count {
        return None;
    }
    let v: [u64; 2] = unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]).ok()? };
    Some((v[0], v[1]))
}

/// Outputs the header and `n <= H2_CHUNK` bytes of data of the event at `ev` (map memory).
#[inline(always)]
fn output(ev: *const u8, n: u64) -> bool {
    let n = unsafe { core::ptr::read_volatile(&n) } & (2 * H2_CHUNK as u64 - 1);
    if n > H2_CHUNK as u64 {
        return false;
    }
    let size = H2_HEADER_LEN as u64 + n;
    let rc = unsafe {
        helpers::bpf_ringbuf_output(
            &EVENTS as *const _ as *mut core::ffi::c_void,
            ev as *mut core::ffi::c_void,
            size,
            wakeup_flags(),
        )
    };
    rc == 0
}

//! Per-connection role, keyed by socket cookie (unique for the socket's lifetime, so it
//! survives fd reuse and socket-address reuse). Entries live in an LRU map; the close
//! paths (the TCP state hook, a peer's end-of-file on a UNIX socket) remove them.
use probe_common::{ConnState, COUNTER_CONN_INSERT_FAILED, CONN_LOST_EVENTS, ROLE_UNKNOWN};

use crate::{
    kernel::read,
    maps::{count, global, CONNS, ZERO_CONN},
};

/// The socket's cookie if one was generated already (every socket the programs tracked
/// has one); `None` otherwise.
#[inline(always)]
pub fn existing_cookie(sk: *const u8) -> Option<u64> {
    match read::<u64>(sk, global!(OFFSETS.sk_cookie)) {
        Some(c) if c != 0 => Some(c),
        _ => None,
    }
}

#[inline(always)]
pub fn lookup(cookie: u64) -> Option<*mut ConnState> {
    CONNS.get_ptr_mut(&cookie)
}

/// A fresh entry of `role` (its fast-path state zero: slow, nothing pending).
#[inline(always)]
pub fn set_role(cookie: u64, role: u32) -> Option<*mut ConnState> {
    insert(cookie)?;
    let state = lookup(cookie)?;
    unsafe { (*state).role = role };
    Some(state)
}

/// An unclassified connection's first bytes so far (fewer than four); `state` is its
/// entry, if it has one already.
#[inline(always)]
pub fn set_prefix(state: Option<*mut ConnState>, cookie: u64, prefix: u32, prefix_len: u32) {
    match state {
        // Keep the entry's flags (a lost-events mark).
        Some(state) => unsafe {
            (*state).prefix = prefix;
            (*state).prefix_len = prefix_len;
        },
        None => {
            if let Some(state) = set_role(cookie, ROLE_UNKNOWN) {
                unsafe {
                    (*state).prefix = prefix;
                    (*state).prefix_len = prefix_len;
                }
            }
        }
    }
}

/// Inserts a zeroed entry (from the per-CPU zeroed template: the state is too large for
/// the stack).
#[inline(always)]
fn insert(cookie: u64) -> Option<()> {
    let zero = ZERO_CONN.get(0)?;
    if CONNS.insert(&cookie, zero, 0).is_err() {
        count(COUNTER_CONN_INSERT_FAILED);
        return None;
    }
    Some(())
}

/// Remembers that an event of this connection was lost, so that the next one tells the
/// agent to resynchronise.
#[inline(always)]
pub fn mark_lost(cookie: u64) {
    if let Some(state) = lookup(cookie) {
        mark_lost_at(state);
    }
}

#[inline(always)]
pub fn mark_lost_at(state: *mut ConnState) {
    unsafe { (*state).flags |= CONN_LOST_EVENTS };
}

/// Returns and clears the lost-events mark.
#[inline(always)]
pub fn take_lost(cookie: u64) -> bool {
    match lookup(cookie) {
        Some(state) => take_lost_at(state),
        None => false,
    }
}

#[inline(always)]
pub fn take_lost_at(state: *mut ConnState) -> bool {
    unsafe {
        let lost = (*state).flags & CONN_LOST_EVENTS != 0;
        if lost {
            (*state).flags &= !CONN_LOST_EVENTS;
        }
        lost
    }
}

#[inline(always)]
pub fn remove(cookie: u64) {
    let _ = CONNS.remove(&cookie);
}

//! redprobe's eBPF programs.
//!
//! Hooks (one module each): `recv` (sock:sock_recv_length), `send` (sock:sock_send_length),
//! `close` (sock:inet_sock_set_state), `lifecycle` (sched:sched_process_{fork,exec,exit}),
//! `arrival` (sock:sk_data_ready), `h2` (what HTTP/2 connections carry), `tls` (uprobes on TLS libraries, per target process). All are tp_btf programs: they need neither kprobes nor
//! tracefs. Each one bails out early for processes that are not targets
//! (`target::current_target`); only a compare of a tracepoint argument may come first
//! (end-of-file reads in `recv`, the new TCP state in `close`). `arrival` runs outside the
//! targets' context (softirq): it bails out for sockets on ports no target serves on.
//! `tx` is a sock_ops program (on the root cgroup v2): it sees the segments of target
//! server connections go out, for responses whose last bytes a write left unsent.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod arrival;
mod capture;
mod close;
mod conn;
mod context;
mod emit;
mod fast;
mod h2;
mod kernel;
mod lifecycle;
mod maps;
mod recv;
mod send;
mod slots;
mod target;
mod tls;
mod tx;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

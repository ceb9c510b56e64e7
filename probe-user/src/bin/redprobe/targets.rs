//! Choosing targets: the processes given by PID or found by a selector, with their
//! descendants, go into the registry and into the kernel's bitmap.
//!
//! The bitmap (`TARGETS`, one bit per TGID) is mapped into the agent's memory and changed
//! one bit at a time with atomic operations, as the kernel does: the kernel sets a child's
//! bit at its fork and clears a target's bit at its exit; the agent only sets the bits of
//! the processes it attaches. No writer ever rewrites another's bit.
//!
//! With the fast path on, each target's service id goes into `SERVICES` (tgid -> id) as
//! the registry decides it: at attach, and after each fork, exec and exit the agent
//! learns of, in the order they happened. The kernel fills a child's entry at its fork
//! and clears it at an exec or exit, for the moments before the agent catches up.
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use probe_user::{
    metrics::health::Health,
    proc_root::{ProcInfo, ProcRoot},
    registry::{SharedRegistry, lock},
};
use tracing::{info, warn};

use crate::tls_probes::TlsProbes;

/// The kernel's bitmap of targets, mapped shared.
pub struct TargetBits {
    words: NonNull<AtomicU64>,
    count: u32,
    len: usize,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for TargetBits {}

impl TargetBits {
    /// Maps the array (created with BPF_F_MMAPABLE) of `count` u64 words.
    pub fn new(map: MapData, count: u32) -> Result<Self> {
        let page = procfs::page_size() as usize;
        let len = (count as usize * 8).div_ceil(page) * page;
        // SAFETY: a shared mapping of the map's fd, as the kernel allows for mmapable arrays.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mapping the TARGETS map: {}", std::io::Error::last_os_error());
        }
        let words = NonNull::new(ptr as *mut AtomicU64).expect("mmap returned a mapping");
        Ok(TargetBits { words, count, len, _map: map })
    }

    fn word(&self, pid: u32) -> Option<&AtomicU64> {
        let index = pid / 64;
        // SAFETY: index < count, inside the mapping, which lives as long as self.
        (index < self.count).then(|| unsafe { &*self.words.as_ptr().add(index as usize) })
    }

    /// Sets `pid`'s bit: whether it was set already, or None if the PID is beyond the
    /// bitmap (above pid_max).
    pub fn set(&self, pid: u32) -> Option<bool> {
        let bit = 1 << (pid % 64);
        Some(self.word(pid)?.fetch_or(bit, Ordering::Relaxed) & bit != 0)
    }

    /// Clears `pid`'s bit (a process that went away before it could be measured).
    pub fn clear(&self, pid: u32) {
        if let Some(word) = self.word(pid) {
            word.fetch_and(!(1 << (pid % 64)), Ordering::Relaxed);
        }
    }

    /// Processes marked now.
    pub fn marked(&self) -> u64 {
        (0..self.count)
            .map(|i| unsafe { &*self.words.as_ptr().add(i as usize) }.load(Ordering::Relaxed).count_ones() as u64)
            .sum()
    }

    /// Capacity: one bit per PID up to pid_max.
    pub fn capacity(&self) -> u64 {
        self.count as u64 * 64
    }
}

impl Drop for TargetBits {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.words.as_ptr() as *mut _, self.len) };
    }
}

/// Checks a PID given on the command line.
pub fn inspect(proc: &ProcRoot, pid: u32) -> Result<ProcInfo> {
    if pid == 0 {
        bail!("--pid 0 is not a process");
    }
    match proc.info(pid) {
        Some(info) => Ok(info),
        None => bail!("no process with PID {pid} (nothing at /proc/{pid}); check the PID with `ps -p {pid}`"),
    }
}

/// The agent's side of targets: attach processes to the registry and the bitmap.
pub struct Targets {
    pub bits: TargetBits,
    pub registry: SharedRegistry,
    pub proc: ProcRoot,
    pub health: Health,
    /// `SERVICES`, when the fast path is on.
    pub services: Option<std::sync::Mutex<BpfHashMap<MapData, u32, u32>>>,
    /// `SERVER_PORTS`: one byte per TCP port, set to 1 and never cleared. The kernel sets
    /// the ports a target starts to listen on, or serves a first request on; the agent sets
    /// those its targets listen on already when it attaches them, so that their next
    /// connections are timed to their arrival and to their last byte sent.
    pub server_ports: std::sync::Mutex<Array<MapData, u8>>,
    /// The TLS probes (HTTPS), unless off or unavailable; and the processes that executed
    /// a new program, whose libraries are looked at again at the next tick.
    pub tls: std::sync::Mutex<Option<TlsProbes>>,
    pub tls_rescan: std::sync::Mutex<Vec<u32>>,
}

impl Targets {
    pub fn tls_on(&self) -> bool {
        self.with_tls(|_| ()).is_some()
    }

    fn with_tls<R>(&self, f: impl FnOnce(&mut TlsProbes) -> R) -> Option<R> {
        self.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut().map(f)
    }

    /// Probes the TLS libraries `pid` maps (a new target).
    fn tls_attach(&self, pid: u32) {
        self.with_tls(|t| t.attach(pid));
    }

    pub fn tls_forked(&self, parent: u32, child: u32) {
        self.with_tls(|t| t.forked(parent, child));
    }

    pub fn tls_exited(&self, pid: u32) {
        self.with_tls(|t| t.exited(pid));
    }

    /// A target executed a new program: its libraries are looked at again at the next tick
    /// (the new program maps them after the exec).
    pub fn tls_rescan_soon(&self, pid: u32) {
        if self.tls_on() {
            self.tls_rescan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pid);
        }
    }

    /// Looks at the libraries of the processes that executed a program since the last call,
    /// or of every target (`all`: libraries loaded late, such as Python's `import ssl`).
    pub fn tls_rescan(&self, all: bool) {
        if !self.tls_on() {
            return;
        }
        let mut pids: Vec<u32> = std::mem::take(&mut *self.tls_rescan.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if all {
            pids.extend(lock(&self.registry).targets().map(|t| t.pid));
        }
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            self.tls_attach(pid);
        }
    }

    /// Writes `pid`'s service id into `SERVICES` as the registry has it (removes it if
    /// the process is not a target, or has no id).
    pub fn sync_service(&self, pid: u32) {
        let Some(services) = &self.services else {
            return;
        };
        let id = lock(&self.registry).get(pid).map(|t| t.service_id).unwrap_or(0);
        let mut services = services.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if id == 0 {
            let _ = services.remove(&pid);
        } else if services.insert(pid, id, 0).is_err() {
            self.health.map_write_failed("SERVICES");
        }
    }

    /// Marks the TCP ports `pid` listens on in `SERVER_PORTS`.
    fn mark_ports(&self, pid: u32) {
        let Ok(ports) = self.proc.listening_ports(pid) else {
            return;
        };
        let mut map = self.server_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for port in ports {
            if map.get(&(port as u32), 0).ok() != Some(1) && map.set(port as u32, 1, 0).is_err() {
                self.health.map_write_failed("SERVER_PORTS");
            }
        }
    }

    /// Marks one process in the kernel's bitmap, then checks that it still runs. A process
    /// that exited before its bit was set would never be reported by the kernel: its bit is
    /// cleared again (unless the kernel had set it: a fork it will report) and false is
    /// returned. A PID beyond the bitmap is counted and logged.
    fn mark(&self, p: &ProcInfo) -> bool {
        let Some(was_set) = self.bits.set(p.pid) else {
            self.health.map_write_failed("TARGETS");
            warn!(pid = p.pid, "PID above the kernel's pid_max as the probe was loaded: not measured");
            return false;
        };
        if self.proc.is_running(p.pid, p.start_time) {
            return true;
        }
        if !was_set {
            self.bits.clear(p.pid);
        }
        false
    }

    /// Starts measuring `root` and its descendants. False if it is measured already, or
    /// gone. (The registry changes only on this thread, which also handles the kernel's
    /// fork and exit events: a process that is running when marked and exits later is
    /// removed by its exit event.)
    pub fn attach_tree(&self, root: &ProcInfo) -> bool {
        if lock(&self.registry).contains(root.pid, root.start_time) || !self.mark(root) {
            return false;
        }
        let placement = self.proc.placement(root.pid);
        let root_target = match lock(&self.registry).attach_root(root, placement) {
            Some(t) => t.clone(),
            None => return false,
        };
        let service = &root_target.service;
        self.sync_service(root.pid);
        self.mark_ports(root.pid);
        self.tls_attach(root.pid);
        info!(pid = root.pid, comm = %root.comm, service = %service, "measuring process");
        self.health.target_attaches.inc();
        // Children forked from now on are marked by the kernel. Those forked before are
        // found in /proc; a second pass finds any a first-pass child forked meanwhile.
        for _ in 0..2 {
            for child in self.proc.descendants(root.pid) {
                if lock(&self.registry).contains(child.pid, child.start_time) || !self.mark(&child) {
                    continue;
                }
                if lock(&self.registry).attach_descendant(&child, &root_target).is_some() {
                    self.sync_service(child.pid);
                    self.mark_ports(child.pid);
                    self.tls_attach(child.pid);
                    info!(pid = child.pid, comm = %child.comm, service = %service, "measuring process");
                    self.health.target_attaches.inc();
                }
            }
        }
        self.health.targets.set(lock(&self.registry).len() as i64);
        true
    }
}

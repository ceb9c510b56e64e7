//! Attaching the TLS probes (`probe-ebpf/src/tls.rs`) to target processes only.
//!
//! A uprobe on a shared `libssl.so` traps in every process that maps it, unless it is
//! filtered by process. So each probe point is a named uprobe event in tracefs
//! (`redprobe/rp<agent pid>_<n>`), whose eBPF program is attached once, through a perf event
//! of the agent's own process; and each target process opens a perf event of its own on
//! it (pid = the target, `inherit` set). The kernel puts the breakpoint only in the memory
//! of processes with such an event, so processes that are not targets never trap.
//! `inherit` gives the event to every child the target forks from then on (gunicorn's
//! and nginx's workers), with no race against the agent. Tracefs events, not the perf
//! `uprobe` PMU: an inherited PMU uprobe would be re-created in the child from a path
//! pointer into the agent's memory.
//!
//! The kernel runs the program once per probe hit, however many perf events hold a
//! process: an event opened twice for one process costs a file descriptor, never a
//! double count. A process's events live as long as it, or as long as a process that
//! inherited them lives (closing an event frees its inherited copies).
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Write,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::programs::ProgramFd;
use probe_user::{
    metrics::health::Health,
    tls_libs::{self, Flavor, Unprobeable},
};
use tracing::{debug, info, warn};

const TRACEFS: &str = "/sys/kernel/tracing";
const GROUP: &str = "redprobe";

/// A file's identity: the device and inode of a mapping (`/proc/PID/maps`).
type FileId = (u64, u64);

/// The uprobe events of one TLS library file.
struct Library {
    name: String,
    flavor: Flavor,
    /// (tracefs event name, event id)
    events: Vec<(String, u64)>,
    /// The perf events that hold the programs (the agent's own).
    _holders: Vec<OwnedFd>,
}

#[derive(Default)]
struct Process {
    /// The perf events opened for this process, by library.
    own: HashMap<FileId, Vec<OwnedFd>>,
    /// Processes whose events this one inherited at its fork (their events must stay open
    /// while it lives).
    inherited_from: Vec<u32>,
    exited: bool,
}

/// `GO_TGIDS`: the processes whose Go crypto/tls is probed (this module alone writes it).
pub type GoTgids = aya::maps::HashMap<aya::maps::MapData, u32, u32>;

pub struct TlsProbes {
    /// tracefs's `uprobe_events`, open for writing.
    events: fs::File,
    go_tgids: GoTgids,
    programs: HashMap<&'static str, ProgramFd>,
    libraries: HashMap<FileId, std::result::Result<Library, Unprobeable>>,
    processes: HashMap<u32, Process>,
    /// Files read that hold no TLS code.
    no_tls: HashSet<FileId>,
    next_event: u64,
    health: Health,
}

impl TlsProbes {
    /// Ready to attach, with the loaded programs; tracefs is mounted if it is not.
    pub fn new(programs: HashMap<&'static str, ProgramFd>, go_tgids: GoTgids, health: Health) -> Result<Self> {
        let events = Path::new(TRACEFS).join("uprobe_events");
        if !events.exists() {
            let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
            let fstype = std::ffi::CString::new("tracefs").expect("no NUL");
            // SAFETY: valid C strings; a failure is reported below.
            let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
            if rc != 0 || !events.exists() {
                bail!(
                    "tracefs is not mounted at {TRACEFS} and mounting it failed ({}): HTTPS is not measured (mount it: mount -t tracefs tracefs {TRACEFS})",
                    std::io::Error::last_os_error()
                );
            }
        }
        // Opened once, now: later writes (targets found after the capabilities were dropped)
        // go through this descriptor.
        let events = fs::OpenOptions::new().append(true).open(&events).with_context(|| {
            format!(
                "opening {} for writing: HTTPS needs root, or CAP_DAC_OVERRIDE to write tracefs (under systemd's ProtectKernelTunables, also ReadWritePaths={TRACEFS})",
                events.display()
            )
        })?;
        remove_stale_events(&events);
        Ok(TlsProbes { events, go_tgids, programs, libraries: HashMap::new(), processes: HashMap::new(), no_tls: HashSet::new(), next_event: 0, health })
    }

    /// Attaches to the TLS libraries `pid` maps that it is not probed in yet (a new
    /// target, an exec, a library loaded since: called again on rescans).
    pub fn attach(&mut self, pid: u32) {
        let Ok(process) = procfs::process::Process::new(pid as i32) else { return };
        let Ok(maps) = process.maps() else { return };
        let exe = process.exe().ok();
        let mut files: Vec<(FileId, String)> = Vec::new();
        for m in maps {
            let procfs::process::MMapPath::Path(path) = &m.pathname else { continue };
            let Some(text) = path.to_str() else { continue };
            let id = (m.dev.0 as u64 * 256 + m.dev.1 as u64, m.inode);
            let candidate = tls_libs::is_tls_library_name(text) || exe.as_deref() == Some(path.as_path());
            if candidate && m.inode != 0 && !files.iter().any(|(f, _)| *f == id) {
                files.push((id, text.to_string()));
            }
        }
        for (id, path) in files {
            if self.covers(pid, id) {
                continue;
            }
            // Read through the process's root: its own view of the file (a container's).
            let inside = PathBuf::from(format!("/proc/{pid}/root{path}"));
            if !self.libraries.contains_key(&id) {
                let library = self.probe_library(&inside, &path);
                let Some(library) = library else {
                    // No TLS code in it (most executables): never looked at again.
                    self.no_tls.insert(id);
                    continue;
                };
                self.libraries.insert(id, library);
            }
            let (events, go) = match self.libraries.get(&id) {
                Some(Ok(l)) => (l.event_ids(), l.flavor == Flavor::GoCryptoTls),
                _ => continue,
            };
            // This process, and the ones that inherited its events before (they were forked
            // before this library was probed, so they hold none of its events).
            let mut pids = vec![pid];
            pids.extend(self.processes.iter().filter(|(_, p)| !p.exited && p.inherited_from.contains(&pid)).map(|(c, _)| *c));
            for p in pids {
                // Before the events: a Go process's socket I/O is then remembered by
                // goroutine from its first probed call on.
                if go && self.go_tgids.insert(p, 1, 0).is_err() {
                    self.health.map_write_failed("GO_TGIDS");
                }
                match open_all(&events, p) {
                    Ok(fds) => {
                        self.processes.entry(p).or_default().own.insert(id, fds);
                    }
                    Err(e) => debug!(pid = p, error = %format!("{e:#}"), "TLS probes not attached (process gone?)"),
                }
            }
            if let Some(Ok(l)) = self.libraries.get(&id) {
                info!(pid, library = %l.name, "measuring HTTPS through the process's TLS library");
            }
        }
        self.count_probed();
    }

    /// Whether `pid` has the events of library `id` already, its own or inherited.
    fn covers(&self, pid: u32, id: FileId) -> bool {
        if self.no_tls.contains(&id) {
            return true;
        }
        let Some(p) = self.processes.get(&pid) else { return false };
        p.own.contains_key(&id) || p.inherited_from.iter().any(|h| self.processes.get(h).is_some_and(|h| h.own.contains_key(&id)))
    }

    /// Creates the uprobe events of one file and attaches the programs; `None` if the file
    /// has no TLS code, `Some(Err)` if it has some we cannot probe (logged once, counted).
    fn probe_library(&mut self, inside: &Path, shown: &str) -> Option<std::result::Result<Library, Unprobeable>> {
        let name = shown.rsplit('/').next().unwrap_or(shown).to_string();
        if let Some(path) = shown.strip_suffix(" (deleted)") {
            if !tls_libs::is_tls_library_name(path) {
                return None;
            }
            warn!(library = %path, "TLS library not probed: it was replaced on disk since the process loaded it (a package upgrade?); restart the server to measure its HTTPS");
            self.health.tls_unprobed(Unprobeable::AttachFailed);
            return Some(Err(Unprobeable::AttachFailed));
        }
        let resolved = match map_file(inside).map_err(|_| Unprobeable::NotElf).and_then(|m| tls_libs::resolve(m.bytes())) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(Unprobeable::NotElf) if !tls_libs::is_tls_library_name(shown) => return None,
            Err(why) => {
                warn!(library = %shown, reason = %why, "TLS library not probed: its HTTPS requests are not measured");
                self.health.tls_unprobed(why);
                return Some(Err(why));
            }
        };
        match self.create_events(inside, &resolved.probes) {
            Ok((events, holders)) => {
                let flavor = resolved.flavor.label();
                info!(library = %shown, flavor, probes = events.len(), "TLS library probed");
                Some(Ok(Library { name, flavor: resolved.flavor, events, _holders: holders }))
            }
            Err(e) => {
                warn!(library = %shown, error = %format!("{e:#}"), "TLS library not probed: its HTTPS requests are not measured");
                self.health.tls_unprobed(Unprobeable::AttachFailed);
                Some(Err(Unprobeable::AttachFailed))
            }
        }
    }

    /// One entry and one return event per probe point, each with its program attached
    /// through a perf event of the agent itself.
    fn create_events(
        &mut self,
        path: &Path,
        probes: &[tls_libs::Probe],
    ) -> Result<(Vec<(String, u64)>, Vec<OwnedFd>)> {
        let text = path.to_str().context("library path is not UTF-8")?;
        if text.contains(char::is_whitespace) {
            bail!("library path {text:?} has white space, which uprobe_events cannot take");
        }
        let me = std::process::id();
        let mut events = Vec::new();
        let mut holders = Vec::new();
        let mut made = Vec::new();
        let result = (|| -> Result<()> {
            for probe in probes {
                let (kind, program, offset) = (if probe.uretprobe { 'r' } else { 'p' }, probe.program, probe.offset);
                {
                    self.next_event += 1;
                    let name = format!("rp{me}_{}", self.next_event);
                    write_uprobe_events(&self.events, &format!("{kind}:{GROUP}/{name} {text}:{offset:#x}\n"))
                        .with_context(|| format!("creating the uprobe on {} in {text}", probe.symbol))?;
                    made.push(name.clone());
                    let id: u64 = fs::read_to_string(Path::new(TRACEFS).join("events").join(GROUP).join(&name).join("id"))
                        .context("reading the uprobe event's id")?
                        .trim()
                        .parse()
                        .context("parsing the uprobe event's id")?;
                    let fd = perf_open(id, me as i32, false).context("opening the agent's perf event")?;
                    let prog = self.programs.get(program).with_context(|| format!("program {program} not loaded"))?;
                    ioctl(&fd, PERF_EVENT_IOC_SET_BPF, prog.as_fd().as_raw_fd() as libc::c_ulong)
                        .context("attaching the program (PERF_EVENT_IOC_SET_BPF)")?;
                    ioctl(&fd, PERF_EVENT_IOC_ENABLE, 0).context("enabling the perf event")?;
                    holders.push(fd);
                    events.push((name, id));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            drop(holders);
            for name in made {
                let _ = write_uprobe_events(&self.events, &format!("-:{GROUP}/{name}\n"));
            }
            return Err(e);
        }
        Ok((events, holders))
    }

    /// A target forked: the child holds inherited copies of its parent's events, which
    /// cover it from its first instruction. It also gets events of its own: the kernel
    /// removes a uprobe's breakpoints from the processes its filter does not match each
    /// time one of the uprobe's events closes (a worker exiting), and a child being forked
    /// at that moment (gunicorn replaces a worker as another exits) may not match yet and
    /// lose them. Its own event puts them back.
    pub fn forked(&mut self, parent: u32, child: u32) {
        let Some(p) = self.processes.get(&parent) else { return };
        let mut from = p.inherited_from.clone();
        if !p.own.is_empty() {
            from.push(parent);
        }
        if from.is_empty() {
            return;
        }
        if self.go_tgids.get(&parent, 0).is_ok() && self.go_tgids.insert(child, 1, 0).is_err() {
            self.health.map_write_failed("GO_TGIDS");
        }
        let files: HashSet<FileId> =
            from.iter().filter_map(|h| self.processes.get(h)).flat_map(|h| h.own.keys().copied()).collect();
        let mut own = HashMap::new();
        for id in files {
            let Some(Ok(l)) = self.libraries.get(&id) else { continue };
            match open_all(&l.event_ids(), child) {
                Ok(fds) => {
                    own.insert(id, fds);
                }
                Err(e) => debug!(pid = child, error = %format!("{e:#}"), "TLS probes not attached (process gone?)"),
            }
        }
        self.processes.insert(child, Process { own, inherited_from: from, ..Default::default() });
        self.count_probed();
    }

    fn count_probed(&self) {
        self.health.tls_processes.set(self.processes.values().filter(|p| !p.exited && p.probed()).count() as i64);
    }

    /// A target exited: its events are closed once no process that inherited them lives.
    pub fn exited(&mut self, pid: u32) {
        let _ = self.go_tgids.remove(&pid);
        let Some(p) = self.processes.get_mut(&pid) else { return };
        p.exited = true;
        let from = std::mem::take(&mut p.inherited_from);
        let mut check = from;
        check.push(pid);
        for h in check {
            let needed = self.processes.iter().any(|(c, p)| !p.exited && *c != h && p.inherited_from.contains(&h));
            if let Some(holder) = self.processes.get(&h)
                && holder.exited
                && !needed
            {
                self.processes.remove(&h);
            }
        }
        self.count_probed();
    }
}

impl Library {
    fn event_ids(&self) -> Vec<u64> {
        self.events.iter().map(|(_, id)| *id).collect()
    }
}

impl Process {
    fn probed(&self) -> bool {
        !self.own.is_empty() || !self.inherited_from.is_empty()
    }
}

impl Drop for TlsProbes {
    fn drop(&mut self) {
        self.processes.clear();
        let names: Vec<String> =
            self.libraries.values().filter_map(|l| l.as_ref().ok()).flat_map(|l| l.events.iter().map(|(n, _)| n.clone())).collect();
        self.libraries.clear();
        for name in names {
            // An event is busy for a moment after its last perf event closed.
            let mut tries = 0;
            while let Err(e) = write_uprobe_events(&self.events, &format!("-:{GROUP}/{name}\n")) {
                tries += 1;
                if e.raw_os_error() != Some(libc::EBUSY) || tries == 40 {
                    warn!(event = %name, error = %e, "could not remove a uprobe event from tracefs (the next start removes it)");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        }
    }
}

/// Removes the events an agent that is gone left behind (killed before it could).
fn remove_stale_events(events: &fs::File) {
    let Ok(text) = fs::read_to_string(Path::new(TRACEFS).join("uprobe_events")) else { return };
    for line in text.lines() {
        let Some(name) = line.split_whitespace().next().and_then(|s| s.split_once(':')).map(|(_, n)| n) else { continue };
        let Some(event) = name.strip_prefix(&format!("{GROUP}/rp")) else { continue };
        let Some(pid) = event.split('_').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = write_uprobe_events(events, &format!("-:{name}\n"));
        }
    }
}

/// One command to tracefs's `uprobe_events` (one write: the kernel parses each write).
fn write_uprobe_events(mut events: &fs::File, line: &str) -> std::io::Result<()> {
    events.write_all(line.as_bytes())
}

/// Opens a perf event on each of `events` for process `pid`, inherited by its children.
fn open_all(events: &[u64], pid: u32) -> Result<Vec<OwnedFd>> {
    events.iter().map(|id| perf_open(*id, pid as i32, true)).collect()
}

/// `struct perf_event_attr`, as of its first version (64 bytes), which every kernel takes.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit 0 disabled, bit 1 inherit, ...
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

fn perf_open(id: u64, pid: i32, inherit: bool) -> Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        flags: if inherit { 2 } else { 0 },
        ..Default::default()
    };
    // SAFETY: a valid attr of the size it declares; the fd returned is owned here.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const PerfEventAttr, pid, -1, -1, PERF_FLAG_FD_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("perf_event_open (pid {pid})"));
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: libc::c_ulong) -> Result<()> {
    // SAFETY: a perf event fd and a request it takes.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A read-only mapping of a whole file (an executable may be 100 MB: only the pages the
/// symbol tables are on are read).
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn bytes(&self) -> &[u8] {
        // SAFETY: a mapping of len bytes that lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in map_file.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn map_file(path: &Path) -> std::io::Result<Mapped> {
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Err(std::io::Error::other("empty file"));
    }
    // SAFETY: a private read-only mapping of an open file.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Mapped { ptr, len })
}

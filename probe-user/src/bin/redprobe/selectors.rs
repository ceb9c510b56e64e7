//! Selectors: processes named by something that survives their restarts, instead of a
//! PID: a listening TCP port (`--port`), an executable name (`--exe`) or a cgroup v2
//! directory (`--cgroup`). The agent re-evaluates them every `--rescan-interval-ms`, so
//! a server restarted under a new PID is measured again.
//!
//! Everything is read from /proc and the cgroup filesystem:
//! - `--port`: the listening sockets in `/proc/PID/net/tcp{,6}` (one read per network
//!   namespace, so servers in containers are found too), then the processes holding one of
//!   those sockets in `/proc/PID/fd`. Reading another user's (or a more privileged
//!   process's) fds needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; processes that cannot be
//!   read are counted.
//! - `--exe`: `/proc/PID/stat`'s command name (what `ps` and `pgrep` show), or the file
//!   name of `/proc/PID/exe`.
//! - `--cgroup`: the `cgroup.procs` files of the directory and its sub-directories. From
//!   inside a container of its own, the agent reaches the host's cgroup tree through
//!   /proc/2/root, kthreadd's view (with the host's PID namespace).
//! - `--container`: the container id in `/proc/PID/cgroup` (`labels::container`).
use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use probe_user::proc_root::{ProcInfo, ProcRoot, is_permission};

/// The kernel keeps this many bytes of a command name (TASK_COMM_LEN - 1).
const COMM_LEN: usize = 15;
/// PID of the kernel thread that forks every other kernel thread.
const KTHREADD: u32 = 2;

#[derive(Debug, Default)]
pub struct Selectors {
    proc: ProcRoot,
    pub ports: Vec<u16>,
    pub exes: Vec<String>,
    /// Paths of cgroup directories, as the agent reaches them.
    pub cgroups: Vec<PathBuf>,
    /// Container ids or their prefixes, lowercase.
    pub containers: Vec<String>,
}

/// A process a selector matched, and which selector.
#[derive(Debug)]
pub struct Match {
    pub info: ProcInfo,
    pub selector: String,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// Oldest first, so that a parent comes before the children it forked.
    pub matches: Vec<Match>,
    /// Processes whose sockets could not be read (`--port` without CAP_SYS_PTRACE or
    /// CAP_DAC_READ_SEARCH).
    pub denied: usize,
}

impl fmt::Display for Selectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.ports.iter().map(|p| format!("--port {p}")).collect();
        parts.extend(self.exes.iter().map(|e| format!("--exe {e}")));
        parts.extend(self.cgroups.iter().map(|c| format!("--cgroup {}", c.display())));
        parts.extend(self.containers.iter().map(|c| format!("--container {c}")));
        f.write_str(&parts.join(", "))
    }
}

impl Selectors {
    pub fn new(
        proc: &ProcRoot,
        ports: &[u16],
        exes: &[String],
        cgroups: &[PathBuf],
        containers: &[String],
    ) -> Result<Self> {
        if let Some(c) =
            containers.iter().find(|c| c.len() < 12 || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!(
                "--container takes a container id, or its first 12 or more characters, as `docker ps`, \
                 `podman ps` or `crictl ps` show it (got {c:?})"
            );
        }
        if let Some(e) = exes.iter().find(|e| e.is_empty() || e.contains('/')) {
            bail!("--exe takes a file name without a directory (got {e:?}); e.g. --exe gunicorn");
        }
        if ports.contains(&0) {
            bail!("--port 0 is not a port a server listens on");
        }
        let roots = if cgroups.is_empty() { vec![] } else { proc.cgroup_roots() };
        let cgroups = cgroups.iter().map(|c| resolve_cgroup(c, &roots)).collect::<Result<_>>()?;
        let containers = containers.iter().map(|c| c.to_ascii_lowercase()).collect();
        Ok(Selectors { proc: proc.clone(), ports: ports.to_vec(), exes: exes.to_vec(), cgroups, containers })
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.exes.is_empty() && self.cgroups.is_empty() && self.containers.is_empty()
    }

    /// The processes running now that a selector matches, except `me` (the agent).
    pub fn scan(&self, me: u32) -> Scan {
        let mut scan = Scan::default();
        if self.is_empty() {
            return scan;
        }
        // Kernel threads (kthreadd, PID 2, and its children) serve no HTTP: never selected,
        // even under `--cgroup /`.
        let procs: Vec<ProcInfo> =
            self.proc.all().into_iter().filter(|p| p.pid != me && p.pid != KTHREADD && p.ppid != KTHREADD).collect();
        let mut found: BTreeMap<u32, String> = BTreeMap::new();
        for exe in &self.exes {
            for p in procs.iter().filter(|p| exe_matches(exe, &p.comm, || self.proc.exe_name(p.pid))) {
                found.entry(p.pid).or_insert_with(|| format!("--exe {exe}"));
            }
        }
        for dir in &self.cgroups {
            for pid in cgroup_pids(dir) {
                found.entry(pid).or_insert_with(|| format!("--cgroup {}", dir.display()));
            }
        }
        if !self.containers.is_empty() {
            for p in &procs {
                let Some(id) = self.proc.placement_cgroup(p.pid).container_id else {
                    continue;
                };
                if let Some(c) = self.containers.iter().find(|c| id.starts_with(c.as_str())) {
                    found.entry(p.pid).or_insert_with(|| format!("--container {c}"));
                }
            }
        }
        if !self.ports.is_empty() {
            for (pid, port) in self.port_owners(&procs, &mut scan.denied) {
                found.entry(pid).or_insert_with(|| format!("--port {port}"));
            }
        }
        scan.matches = procs
            .into_iter()
            .filter_map(|info| found.remove(&info.pid).map(|selector| Match { info, selector }))
            .collect();
        scan.matches.sort_by_key(|m| (m.info.start_time, m.info.pid));
        scan
    }

    /// (pid, port) of the processes holding a socket that listens on one of the ports.
    fn port_owners(&self, procs: &[ProcInfo], denied: &mut usize) -> Vec<(u32, u16)> {
        // Group the processes by network namespace: each has its own socket tables.
        let mut by_netns: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
        for p in procs {
            match self.proc.net_namespace(p.pid) {
                Ok(ns) => by_netns.entry(ns).or_default().push(p.pid),
                Err(e) if crate::privileges::is_permission(&e) => *denied += 1,
                Err(_) => {} // exited meanwhile, or a kernel thread
            }
        }
        let mut owners = vec![];
        for pids in by_netns.values() {
            let listeners: BTreeMap<u64, u16> = pids
                .iter()
                .find_map(|pid| self.proc.listening_sockets(*pid, &self.ports).ok())
                .map(|l| l.into_iter().collect())
                .unwrap_or_default();
            if listeners.is_empty() {
                continue;
            }
            for pid in pids {
                match self.proc.socket_inodes(*pid) {
                    Ok(inodes) => {
                        if let Some(port) = inodes.iter().find_map(|i| listeners.get(i)) {
                            owners.push((*pid, *port));
                        }
                    }
                    Err(e) if is_permission(&e) => *denied += 1,
                    Err(_) => {}
                }
            }
        }
        owners
    }
}

/// `--exe NAME` matches the command name (kept to 15 bytes by the kernel) or the
/// executable's file name.
pub fn exe_matches(name: &str, comm: &str, exe: impl FnOnce() -> Option<String>) -> bool {
    let short = name.get(..COMM_LEN.min(name.len())).unwrap_or(name);
    if comm == name || (name.len() > COMM_LEN && comm == short) {
        return true;
    }
    exe().is_some_and(|e| e == name)
}

/// A `--cgroup` argument: a cgroup directory, given as a path that exists here
/// (`/sys/fs/cgroup/system.slice/app.service`), or relative to the root of a cgroup
/// hierarchy (`/system.slice/app.service`, `/kubepods/besteffort/pod<uid>`, as
/// /proc/PID/cgroup and systemd show it): cgroup v2 first, then the v1 hierarchies of hosts
/// that still have them. `roots` are the hierarchies' roots as `ProcRoot::cgroup_roots`
/// reaches them (the host's, from inside a container).
fn resolve_cgroup(arg: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    if roots.is_empty() {
        bail!("--cgroup needs a cgroup filesystem, and none is mounted (see /proc/self/mountinfo)");
    }
    if arg.is_absolute() && arg.join("cgroup.procs").exists() {
        return Ok(arg.to_path_buf());
    }
    if roots.iter().any(|r| arg.starts_with(r)) {
        bail!("--cgroup {}: not a cgroup directory (no cgroup.procs in it)", arg.display());
    }
    let relative = arg.strip_prefix("/").unwrap_or(arg);
    if let Some(full) = roots.iter().map(|r| r.join(relative)).find(|d| d.join("cgroup.procs").exists()) {
        return Ok(full);
    }
    bail!(
        "--cgroup {}: no such cgroup under the cgroup hierarchies at {}; \
         `systemctl status UNIT` or `cat /proc/PID/cgroup` shows a process's cgroup",
        arg.display(),
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// PIDs in a cgroup directory and all its sub-directories. A directory that disappears
/// (a unit stopped) has none.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_names() {
        assert!(exe_matches("gunicorn", "gunicorn", || None));
        assert!(!exe_matches("gunicorn", "python3", || Some("python3.11".into())));
        assert!(exe_matches("python3.11", "python3", || Some("python3.11".into())));
        // The kernel keeps 15 bytes of the command name.
        assert!(exe_matches("a-very-long-server-name", "a-very-long-ser", || None));
        assert!(!exe_matches("a-very-long-ser", "a-very-long-server", || None));
        assert!(!exe_matches("gunicorn", "gunicorn: maste", || None));
    }

    #[test]
    fn cgroups_need_a_cgroup2_mount() {
        let err = resolve_cgroup(Path::new("/system.slice/x.service"), &[]).unwrap_err().to_string();
        assert!(err.contains("cgroup filesystem"), "{err}");
    }

    #[test]
    fn bad_arguments() {
        let proc = ProcRoot::default();
        assert!(Selectors::new(&proc, &[0], &[], &[], &[]).is_err());
        assert!(Selectors::new(&proc, &[], &["/usr/bin/gunicorn".into()], &[], &[]).is_err());
        assert!(Selectors::new(&proc, &[], &[], &[], &["abc".into()]).is_err(), "too short to be unique");
        assert!(Selectors::new(&proc, &[], &[], &[], &["my-container".into()]).is_err(), "not an id");
        let s = Selectors::new(&proc, &[8000], &["gunicorn".into()], &[], &["FD984D2EF97E".into()]).unwrap();
        assert_eq!(s.to_string(), "--port 8000, --exe gunicorn, --container fd984d2ef97e");
    }

    #[test]
    fn this_process_is_found_by_its_command_name_but_never_the_agent_itself() {
        let proc = ProcRoot::default();
        let me = proc.info(std::process::id()).unwrap();
        let s = Selectors::new(&proc, &[], std::slice::from_ref(&me.comm), &[], &[]).unwrap();
        assert!(s.scan(0).matches.iter().any(|m| m.info.pid == me.pid));
        assert!(!s.scan(me.pid).matches.iter().any(|m| m.info.pid == me.pid));
        // Kernel threads are never selected.
        let kernel = Selectors::new(&proc, &[], &["kthreadd".into()], &[], &[]).unwrap();
        assert!(kernel.scan(0).matches.is_empty(), "{:?}", kernel.scan(0));
    }

    #[test]
    fn a_listening_socket_is_found_by_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Selectors::new(&ProcRoot::default(), &[port], &[], &[], &[]).unwrap();
        let scan = s.scan(0);
        let m = scan.matches.iter().find(|m| m.info.pid == std::process::id());
        assert_eq!(m.map(|m| m.selector.clone()), Some(format!("--port {port}")), "{scan:?}");
    }
}

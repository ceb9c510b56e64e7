//! Everything redprobe reads from /proc, in one place, parsed by the `procfs` crate, under
//! a root that tests point at fixture files (as node_exporter's `--path.procfs`).
use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
};

use procfs::{
    FromReadSI, KernelStats, ProcError,
    net::TcpState,
    process::{FDTarget, Process},
};

/// What /proc says about a process, for choosing and following targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    pub comm: String,
}

/// CPU seconds, memory and start time (seconds since boot) of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub utime_s: f64,
    pub stime_s: f64,
    /// CPU of waited-for children (cutime + cstime).
    pub children_s: f64,
    pub rss_bytes: f64,
    pub vsize_bytes: f64,
    pub threads: f64,
    pub start_s: f64,
}

/// A /proc tree: the host's (`/proc`), or fixtures.
#[derive(Clone, Debug)]
pub struct ProcRoot {
    root: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot { root: PathBuf::from("/proc") }
    }
}

/// Is this /proc error a permission problem (as opposed to a process that went away)?
pub fn is_permission(e: &ProcError) -> bool {
    matches!(e, ProcError::PermissionDenied(_))
}

/// Clock ticks per second (`USER_HZ`): the unit of /proc/PID/stat's times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcRoot { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn process(&self, pid: u32) -> procfs::ProcResult<Process> {
        Process::new_with_root(self.root.join(pid.to_string()))
    }

    fn myself(&self) -> procfs::ProcResult<Process> {
        Process::new_with_root(self.root.join("self"))
    }

    /// PID, parent, start time and command name.
    pub fn info(&self, pid: u32) -> Option<ProcInfo> {
        let s = self.process(pid).and_then(|p| p.stat()).ok()?;
        Some(ProcInfo { pid, ppid: s.ppid as u32, start_time: s.starttime, comm: s.comm })
    }

    /// Is the process that started at `start_time` still running at `pid` (not exiting,
    /// not a zombie waiting to be reaped, not replaced by another process with the same PID)?
    pub fn is_running(&self, pid: u32, start_time: u64) -> bool {
        /// `task_struct.flags` bit of a task in do_exit (it still shows as running).
        const PF_EXITING: u32 = 0x4;
        self.process(pid).and_then(|p| p.stat()).is_ok_and(|s| {
            s.starttime == start_time && !matches!(s.state, 'Z' | 'X') && s.flags & PF_EXITING == 0
        })
    }

    /// The PIDs in /proc now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .collect()
    }

    /// Every process running now.
    pub fn all(&self) -> Vec<ProcInfo> {
        self.pids().into_iter().filter_map(|p| self.info(p)).collect()
    }

    /// All descendants of `root` running now, parents before their children.
    pub fn descendants(&self, root: u32) -> Vec<ProcInfo> {
        let procs = self.all();
        let mut found: Vec<ProcInfo> = vec![];
        let mut frontier = vec![root];
        while let Some(parent) = frontier.pop() {
            for p in procs.iter().filter(|p| p.ppid == parent) {
                if !found.iter().any(|f| f.pid == p.pid) {
                    frontier.push(p.pid);
                    found.push(p.clone());
                }
            }
        }
        found
    }

    fn stats_of(p: procfs::ProcResult<Process>) -> procfs::ProcResult<ProcStats> {
        let s = p?.stat()?;
        let hz = ticks_per_second() as f64;
        Ok(ProcStats {
            utime_s: s.utime as f64 / hz,
            stime_s: s.stime as f64 / hz,
            children_s: (s.cutime + s.cstime) as f64 / hz,
            rss_bytes: (s.rss * procfs::page_size()) as f64,
            vsize_bytes: s.vsize as f64,
            threads: s.num_threads as f64,
            start_s: s.starttime as f64 / hz,
        })
    }

    /// CPU, memory and start time of `pid`.
    pub fn stats(&self, pid: u32) -> procfs::ProcResult<ProcStats> {
        Self::stats_of(self.process(pid))
    }

    /// The same for this process.
    pub fn own_stats(&self) -> procfs::ProcResult<ProcStats> {
        Self::stats_of(self.myself())
    }

    /// Open file descriptors of this process.
    pub fn own_open_fds(&self) -> procfs::ProcResult<usize> {
        self.myself()?.fd_count()
    }

    /// Boot time, seconds since the Unix epoch (`btime` of /proc/stat).
    pub fn boot_time_s(&self) -> procfs::ProcResult<u64> {
        Ok(KernelStats::from_file(self.root.join("stat"), procfs::current_system_info())?.btime)
    }

    /// The network namespace of `pid` (`net:[4026531840]`).
    pub fn net_namespace(&self, pid: u32) -> io::Result<PathBuf> {
        std::fs::read_link(self.root.join(pid.to_string()).join("ns/net"))
    }

    /// (inode, port) of the TCP sockets (IPv4 and IPv6) that listen on one of `ports` in the
    /// network namespace of `pid`.
    pub fn listening_sockets(&self, pid: u32, ports: &[u16]) -> procfs::ProcResult<Vec<(u64, u16)>> {
        let p = self.process(pid)?;
        let mut entries = p.tcp()?;
        entries.extend(p.tcp6().unwrap_or_default());
        Ok(entries
            .into_iter()
            .filter(|e| e.state == TcpState::Listen && e.inode != 0 && ports.contains(&e.local_address.port()))
            .map(|e| (e.inode, e.local_address.port()))
            .collect())
    }

    /// The TCP ports `pid` listens on (IPv4 and IPv6): sockets of its fds that listen.
    pub fn listening_ports(&self, pid: u32) -> procfs::ProcResult<Vec<u16>> {
        let inodes = self.socket_inodes(pid)?;
        let p = self.process(pid)?;
        let mut entries = p.tcp()?;
        entries.extend(p.tcp6().unwrap_or_default());
        let mut ports: Vec<u16> = entries
            .into_iter()
            .filter(|e| e.state == TcpState::Listen && inodes.contains(&e.inode))
            .map(|e| e.local_address.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// Inodes of the sockets `pid` holds open.
    pub fn socket_inodes(&self, pid: u32) -> procfs::ProcResult<HashSet<u64>> {
        let mut inodes = HashSet::new();
        for fd in self.process(pid)?.fd()? {
            if let Ok(fd) = fd
                && let FDTarget::Socket(inode) = fd.target
            {
                inodes.insert(inode);
            }
        }
        Ok(inodes)
    }

    /// The file name of the process's executable, if it can be read.
    pub fn exe_name(&self, pid: u32) -> Option<String> {
        let exe = self.process(pid).and_then(|p| p.exe()).ok()?;
        Some(exe.file_name()?.to_string_lossy().trim_end_matches(" (deleted)").to_string())
    }

    /// Where the root of the cgroup v2 hierarchy is mounted, as this process sees it (a
    /// cgroup2 mount of the hierarchy's root, not of a sub-directory).
    pub fn cgroup2_root(&self) -> Option<PathBuf> {
        let mounts = self.myself().and_then(|p| p.mountinfo()).ok()?;
        mounts.into_iter().find(|m| m.fs_type == "cgroup2" && m.root == "/").map(|m| m.mount_point)
    }

    /// Mount points of cgroup v2 filesystems, as this process sees them.
    pub fn cgroup2_mounts(&self) -> Vec<PathBuf> {
        let Ok(mounts) = self.myself().and_then(|p| p.mountinfo()) else { return vec![] };
        mounts.into_iter().filter(|m| m.fs_type == "cgroup2").map(|m| m.mount_point).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc tree of fixture files: `/proc/42/stat` of a process with an odd command name.
    fn fixture() -> (tempfile::TempDir, ProcRoot) {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("42");
        std::fs::create_dir(&pid_dir).unwrap();
        std::fs::write(
            pid_dir.join("stat"),
            "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 200 100 50 25 20 0 3 0 98765 4096000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "cpu  1 2 3 4 5 6 7 0 0 0\ncpu0 1 2 3 4 5 6 7 0 0 0\nintr 0\nctxt 100\nbtime 1700000000\n\
             processes 50\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        let root = ProcRoot::new(dir.path());
        (dir, root)
    }

    #[test]
    fn stat_fields_from_fixtures() {
        let (_dir, root) = fixture();
        let info = root.info(42).unwrap();
        assert_eq!(info, ProcInfo { pid: 42, ppid: 1, start_time: 98765, comm: "my (odd) name".into() });
        assert!(root.is_running(42, 98765));
        assert!(!root.is_running(42, 98766), "another process at the same PID");
        let hz = ticks_per_second() as f64;
        let s = root.stats(42).unwrap();
        assert_eq!((s.utime_s, s.stime_s, s.children_s, s.threads), (200.0 / hz, 100.0 / hz, 75.0 / hz, 3.0));
        assert_eq!(s.rss_bytes, (250 * procfs::page_size()) as f64);
        assert_eq!(root.boot_time_s().unwrap(), 1_700_000_000);
        assert_eq!(root.pids(), vec![42]);
        assert!(root.info(43).is_none());
    }

    #[test]
    fn a_zombie_is_not_running() {
        let (dir, root) = fixture();
        let stat = std::fs::read_to_string(dir.path().join("42/stat")).unwrap().replace(") S ", ") Z ");
        std::fs::write(dir.path().join("42/stat"), stat).unwrap();
        assert!(!root.is_running(42, 98765));
    }

    #[test]
    fn the_host_proc_has_this_process() {
        let root = ProcRoot::default();
        let me = root.info(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(root.own_stats().unwrap().rss_bytes > 0.0);
        assert!(root.own_open_fds().unwrap() > 0);
    }
}

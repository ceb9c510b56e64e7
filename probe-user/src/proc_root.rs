//! Everything redprobe reads from /proc, in one place, parsed by the `procfs` crate, under
//! a root that tests point at fixture files (as node_exporter's `--path.procfs`).
use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
};

use crate::labels::{Placement, container};
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
        self.process(pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == start_time && !matches!(s.state, 'Z' | 'X') && s.flags & PF_EXITING == 0)
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

    /// A small file in `pid`'s own filesystem (`path` relative to its root), read through
    /// /proc/PID/root with every symbolic link resolved inside that root: a container's
    /// `/var/run -> /run` is the container's /run, never the agent's (openat2
    /// RESOLVE_IN_ROOT). At most 4 KiB are read.
    pub fn read_in_root(&self, pid: u32, path: &str) -> io::Result<String> {
        use std::{
            ffi::CString,
            io::Read,
            os::fd::{AsRawFd, FromRawFd, OwnedFd},
        };
        let root = std::fs::File::open(self.root.join(pid.to_string()).join("root"))?;
        let path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain integers; all zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: a valid dirfd, a NUL-terminated path and an open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let mut text = String::new();
        file.take(4096).read_to_string(&mut text)?;
        Ok(text)
    }

    /// What `pid`'s cgroup paths say of its container and pod.
    pub fn placement_cgroup(&self, pid: u32) -> container::CgroupPlacement {
        let cgroups = std::fs::read_to_string(self.root.join(pid.to_string()).join("cgroup")).unwrap_or_default();
        container::from_cgroup_file(&cgroups)
    }

    /// Where `pid` runs: its container and Kubernetes pod (`labels::container` says how each
    /// is read). A process outside any container has none.
    pub fn placement(&self, pid: u32) -> Placement {
        let c = self.placement_cgroup(pid);
        let read = |path: &str| self.read_in_root(pid, path).ok().and_then(|t| container::dns_label(&t));
        let namespace = read("var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .or_else(|| read("run/secrets/kubernetes.io/serviceaccount/namespace"));
        // A pod's hostname is its name, unless it shares the node's (hostNetwork pods do):
        // then it is the node's.
        let uts = |p: &str| std::fs::read_link(self.root.join(p).join("ns/uts")).ok();
        let own_uts = uts(&pid.to_string()).is_some_and(|ns| Some(ns) != uts("1"));
        let in_pod = c.pod_uid.is_some() || namespace.is_some();
        let pod_name = (in_pod && own_uts).then(|| read("etc/hostname")).flatten();
        Placement {
            container_id: c.container_id,
            k8s_pod_uid: c.pod_uid,
            k8s_pod_name: pod_name,
            k8s_namespace_name: namespace,
        }
    }

    /// Whose mounts show the cgroup hierarchies, and how their roots look from here.
    /// This process's own mounts, unless it runs in a container (a mount or cgroup namespace
    /// of its own): a container's cgroup mounts show only its own cgroup. Then the host's,
    /// as kthreadd (PID 2, a kernel thread, always in the host's mount and cgroup
    /// namespaces) sees them, reached through /proc/2/root, which needs the host's PID
    /// namespace (`hostPID`). A hierarchy's root is where kthreadd's cgroup is (kernel
    /// threads stay in the root cgroup): `/`, or `/../..` as seen from a cgroup namespace.
    fn cgroup_view(&self) -> (procfs::ProcResult<Process>, PathBuf, Vec<String>) {
        const KTHREADD: &str = "2";
        let ns = |p: &str, kind: &str| std::fs::read_link(self.root.join(p).join("ns").join(kind)).ok();
        let contained = ["cgroup", "mnt"].iter().any(|kind| {
            let (mine, host) = (ns("self", kind), ns(KTHREADD, kind));
            mine.is_some() && host.is_some() && mine != host
        });
        let through = self.root.join(KTHREADD).join("root");
        if contained && std::fs::read_dir(&through).is_ok() {
            let roots = std::fs::read_to_string(self.root.join(KTHREADD).join("cgroup"))
                .map(|t| t.lines().filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string)).collect())
                .unwrap_or_default();
            return (self.process(2), through, roots);
        }
        (self.myself(), PathBuf::from("/"), vec!["/".to_string()])
    }

    /// Mounts of whole cgroup hierarchies as `cgroup_view` finds them, cgroup v2 first: the
    /// paths that reach them from here.
    fn cgroup_mounts(&self, v1: bool) -> Vec<PathBuf> {
        let (p, prefix, roots) = self.cgroup_view();
        let Ok(mounts) = p.and_then(|p| p.mountinfo()) else {
            return vec![];
        };
        let mut found: Vec<(bool, PathBuf)> = mounts
            .into_iter()
            .filter(|m| (m.fs_type == "cgroup2" || (v1 && m.fs_type == "cgroup")) && roots.contains(&m.root))
            .map(|m| (m.fs_type != "cgroup2", prefix.join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point))))
            .collect();
        found.sort_by_key(|(is_v1, _)| *is_v1);
        found.into_iter().map(|(_, path)| path).collect()
    }

    /// Where the root of the cgroup v2 hierarchy can be reached (a cgroup2 mount of the
    /// hierarchy's root, not of a sub-directory), the host's where this process runs in a
    /// cgroup namespace of its own.
    pub fn cgroup2_root(&self) -> Option<PathBuf> {
        self.cgroup_mounts(false).into_iter().next()
    }

    /// Where the roots of cgroup hierarchies can be reached: cgroup v2 first, then the v1
    /// ones (hosts that still have them), as `cgroup2_root` finds them.
    pub fn cgroup_roots(&self) -> Vec<PathBuf> {
        self.cgroup_mounts(true)
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

    /// A pod as the kubelet lays it out, seen through /proc: the cgroup path, the hostname,
    /// and the service-account namespace behind an absolute `/var/run -> /run` link, which
    /// must resolve inside the pod's root, not the agent's.
    #[test]
    fn a_pods_placement_from_fixtures() {
        let (dir, root) = fixture();
        let id = "ab".repeat(32);
        let uid = "0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c";
        let pid = dir.path().join("42");
        std::fs::write(pid.join("cgroup"), format!("0::/../../kubepods/besteffort/pod{uid}/{id}\n")).unwrap();
        let fs = pid.join("root");
        std::fs::create_dir_all(fs.join("run/secrets/kubernetes.io/serviceaccount")).unwrap();
        std::fs::create_dir_all(fs.join("etc")).unwrap();
        std::fs::create_dir_all(fs.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", fs.join("var/run")).unwrap();
        std::fs::write(fs.join("run/secrets/kubernetes.io/serviceaccount/namespace"), "prod").unwrap();
        std::fs::write(fs.join("etc/hostname"), "shop-7d9f8b6c5d-x2x7k\n").unwrap();
        std::fs::create_dir_all(pid.join("ns")).unwrap();
        std::os::unix::fs::symlink("uts:[4026532001]", pid.join("ns/uts")).unwrap();
        std::fs::create_dir_all(dir.path().join("1/ns")).unwrap();
        std::os::unix::fs::symlink("uts:[4026531838]", dir.path().join("1/ns/uts")).unwrap();
        let p = root.placement(42);
        assert_eq!(
            p,
            Placement {
                container_id: Some(id.clone()),
                k8s_pod_uid: Some(uid.into()),
                k8s_pod_name: Some("shop-7d9f8b6c5d-x2x7k".into()),
                k8s_namespace_name: Some("prod".into()),
            }
        );
        // An absolute link that leaves the root stays inside it.
        std::os::unix::fs::symlink("/etc/../../../../etc/hostname", fs.join("escape")).unwrap();
        assert_eq!(root.read_in_root(42, "escape").unwrap(), "shop-7d9f8b6c5d-x2x7k\n");
        // A hostNetwork pod shares the node's hostname: it is not the pod's name.
        std::fs::remove_file(dir.path().join("1/ns/uts")).unwrap();
        std::os::unix::fs::symlink("uts:[4026532001]", dir.path().join("1/ns/uts")).unwrap();
        assert_eq!(root.placement(42).k8s_pod_name, None);
        // Outside any container: nothing.
        assert_eq!(ProcRoot::default().placement(std::process::id()).k8s_pod_name, None);
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

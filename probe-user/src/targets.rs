//! Target selection: which processes are measured, kept in the kernel's `TARGETS` bitmap.
//!
//! A target is identified by PID *and* start time, so a new process that later gets a
//! dead target's PID is never measured. Child processes of targets (workers) are targets
//! too: those running at attach time are found in /proc, later ones come from the
//! kernel's fork hook.
use std::{collections::HashMap, fs, os::fd::{FromRawFd, OwnedFd}};

use anyhow::{Result, bail};
use aya::maps::{Array, MapData};

use crate::procfs::Stat;

/// What /proc says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    pub comm: String,
}

/// Parses /proc/PID/stat content.
pub fn parse_stat(pid: u32, stat: &str) -> Option<ProcInfo> {
    let s = Stat::parse(stat)?;
    Some(ProcInfo { pid, ppid: s.field(4)?, start_time: s.field(22)?, comm: s.comm.to_string() })
}

pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Is the process that started at `start_time` still running at `pid` (not exited, not a
/// zombie waiting to be reaped, not replaced by another process with the same PID)?
pub fn is_running(pid: u32, start_time: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat_is_running(&stat, start_time))
}

fn stat_is_running(stat: &str, start_time: u64) -> bool {
    Stat::parse(stat).is_some_and(|s| {
        s.field::<u64>(22) == Some(start_time) && !matches!(s.field::<char>(3), Some('Z') | Some('X'))
    })
}

/// Checks a PID given on the command line.
pub fn inspect(pid: u32) -> Result<ProcInfo> {
    if pid == 0 {
        bail!("--pid 0 is not a process");
    }
    match proc_info(pid) {
        Some(info) => Ok(info),
        None => bail!("no process with PID {pid} (nothing at /proc/{pid}); check the PID with `ps -p {pid}`"),
    }
}

/// The PIDs in /proc now.
pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// All descendants of `root` running now.
pub fn descendants(root: u32) -> Vec<ProcInfo> {
    let procs: Vec<ProcInfo> = pids().into_iter().filter_map(proc_info).collect();
    let mut found = vec![];
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f: &ProcInfo| f.pid == p.pid) {
                frontier.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found
}

/// A pidfd: becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The measured processes, mirrored into the kernel bitmap.
pub struct TargetSet {
    procs: HashMap<u32, ProcInfo>,
    map: Array<MapData, u64>,
    words: u32,
}

impl TargetSet {
    pub fn new(map: Array<MapData, u64>, words: u32) -> Self {
        TargetSet { procs: HashMap::new(), map, words }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    /// Is the process (`pid` started at `start_time`) in the set? A PID alone is not
    /// enough: it may be reused.
    pub fn contains(&self, pid: u32, start_time: u64) -> bool {
        self.get(pid).is_some_and(|p| p.start_time == start_time)
    }

    /// Rewrites the bitmap word holding `pid` from the set (the kernel may have set a
    /// bit for a fork; the set is the truth).
    fn sync_word(&mut self, pid: u32) -> Result<()> {
        let index = pid / 64;
        if index >= self.words {
            bail!("PID {pid} is above the kernel's pid_max");
        }
        let word = self.procs.keys().filter(|p| *p / 64 == index).fold(0u64, |w, p| w | 1 << (p % 64));
        self.map.set(index, word, 0)?;
        Ok(())
    }

    pub fn add(&mut self, info: ProcInfo) -> Result<()> {
        let pid = info.pid;
        self.procs.insert(pid, info);
        self.sync_word(pid)
    }

    pub fn remove(&mut self, pid: u32) -> Result<Option<ProcInfo>> {
        let gone = self.procs.remove(&pid);
        self.sync_word(pid)?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_means_same_start_and_not_a_zombie() {
        let line = |state: char| format!("42 (srv) {state} 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0");
        assert!(stat_is_running(&line('S'), 777));
        assert!(!stat_is_running(&line('S'), 778), "another process at the same PID");
        assert!(!stat_is_running(&line('Z'), 777), "a zombie has exited");
    }

    #[test]
    fn stat_with_odd_command_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 98765 1000 200";
        let info = parse_stat(1234, stat).unwrap();
        assert_eq!(info.comm, "my (odd) name");
        assert_eq!(info.ppid, 1);
        assert_eq!(info.start_time, 98765);
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn this_process_is_found_and_pid_zero_refused() {
        let me = inspect(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(inspect(0).is_err());
        let err = inspect(u32::MAX - 1).unwrap_err().to_string();
        assert!(err.contains("no process with PID"), "{err}");
    }
}

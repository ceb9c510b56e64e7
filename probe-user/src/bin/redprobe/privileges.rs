//! Clear answers for the most common reason the probe cannot load: privileges.
use anyhow::{Result, bail};
use aya::{EbpfError, programs::ProgramError};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    capget().map(|(effective, _)| effective).unwrap_or(0)
}

/// Names the capabilities missing to load and attach tp_btf programs.
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return vec![];
    }
    let mut missing = vec![];
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// What loading a sock_ops program (a networking program type) lacks: CAP_NET_ADMIN,
/// unless the process has CAP_SYS_ADMIN.
pub fn missing_for_sock_ops() -> Option<&'static str> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    (!has(CAP_NET_ADMIN) && !has(CAP_SYS_ADMIN)).then_some("CAP_NET_ADMIN")
}

/// What `--port` lacks to read /proc/PID/fd and /proc/PID/ns/net of processes of other
/// users or with capabilities the agent lacks (ptrace read access, and the fd directory's
/// permission bits).
pub fn missing_for_port_selector() -> Vec<&'static str> {
    let caps = effective_caps();
    KEPT_AFTER_ATTACH.iter().filter(|(c, _)| caps & (1u64 << c) == 0).map(|(_, name)| *name).collect()
}

pub fn check() -> Result<()> {
    let missing = missing_capabilities(effective_caps());
    if !missing.is_empty() {
        bail!(
            "redprobe needs {} to load its eBPF programs (or CAP_SYS_ADMIN on older kernels). \
             Run it as root (sudo redprobe ...), or grant them: \
             setcap cap_bpf,cap_perfmon+ep $(command -v redprobe)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Capabilities kept after attaching: reading other users' /proc/PID entries (targets,
/// their workers, their sockets), which `--port` needs. Everything else is dropped.
pub const KEPT_AFTER_ATTACH: &[(u32, &str)] = &[(CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH")];

/// Capabilities only loading and attaching need (faults.rs checks CAP_BPF, CAP_PERFMON,
/// CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_SYS_RESOURCE are gone from the agent's sets).
pub const DROPPED_AFTER_ATTACH: &[(u32, &str)] = &[
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"),
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted) capability sets of this process.
fn capget() -> std::io::Result<(u64, u64)> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data words, as capget(2) expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

fn capset(set: u64) -> std::io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let word = |w: u32| CapData { effective: w, permitted: w, inheritable: 0 };
    let data = [word(set as u32), word((set >> 32) as u32)];
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Drops CAP_DAC_OVERRIDE, which only the opening of tracefs's uprobe_events needs (the
/// HTTPS probes), before anything else runs: the first selector scan then has the
/// capabilities of the later ones.
pub fn drop_dac_override() {
    if let Ok((_, permitted)) = capget()
        && permitted & (1 << CAP_DAC_OVERRIDE) != 0
        && let Err(e) = capset(permitted & !(1 << CAP_DAC_OVERRIDE))
    {
        tracing::warn!("could not drop CAP_DAC_OVERRIDE: {e}");
    }
}

/// (major, minor) of the running kernel.
fn kernel_version() -> Option<(u32, u32)> {
    let v = procfs::sys::kernel::Version::current().ok()?;
    Some((v.major as u32, v.minor as u32))
}

/// Before Linux 6.5, every bpf(2) command, map reads and updates included, needs CAP_BPF
/// (or CAP_SYS_ADMIN) while `kernel.unprivileged_bpf_disabled` is set; from 6.5 on only
/// creating maps and loading programs do.
fn maps_need_caps() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    disabled && kernel_version().is_none_or(|v| v < (6, 5))
}

/// Drops every capability the running agent no longer needs once its programs are
/// attached and its maps open (map fds keep working), except CAP_PERFMON with
/// `keep_perfmon` (HTTPS). Returns the names dropped.
pub fn drop_after_attach(keep_perfmon: bool) -> Result<Vec<&'static str>> {
    let mut keep: u64 = KEPT_AFTER_ATTACH.iter().fold(0, |k, (c, _)| k | 1 << c);
    // The TLS probes open perf events on targets found later (tls_probes.rs).
    if keep_perfmon {
        keep |= 1 << CAP_PERFMON;
    }
    if maps_need_caps() {
        keep |= 1 << CAP_BPF | 1 << CAP_SYS_ADMIN;
    }
    let (_, permitted) = capget().map_err(|e| anyhow::anyhow!("capget: {e}"))?;
    // The bounding set first (needs CAP_SETPCAP, which is dropped right after).
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last_cap).filter(|c| keep & (1 << c) == 0) {
        // SAFETY: plain prctl; EPERM (no CAP_SETPCAP) leaves the bounding set as it is.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    // SAFETY: plain prctl calls.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0);
    }
    capset(permitted & keep).map_err(|e| anyhow::anyhow!("capset: {e}"))?;
    Ok(DROPPED_AFTER_ATTACH.iter().filter(|(c, _)| permitted & !keep & (1 << c) != 0).map(|(_, n)| *n).collect())
}

/// EPERM or EACCES.
pub fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

pub fn explain_load_error(e: EbpfError) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("Operation not permitted") || text.contains("Permission denied") {
        anyhow::anyhow!(
            "{text}: the kernel refused to load eBPF programs; run as root or with CAP_BPF and CAP_PERFMON"
        )
    } else {
        e.into()
    }
}

pub fn explain_program_error(tracepoint: &str, e: ProgramError) -> anyhow::Error {
    let detail = match &e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            if !log.trim().is_empty() && io_error.raw_os_error() == Some(libc::EACCES) {
                // EACCES with a log is the verifier refusing the program, not privileges.
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "the kernel's verifier rejected the program (a redprobe bug on this kernel; \
                     please report it with this log): {io_error}\nverifier log (last lines):\n{}",
                    tail.join("\n")
                )
            } else if is_permission(io_error) {
                format!("permission denied (needs CAP_BPF and CAP_PERFMON, or root): {io_error}")
            } else {
                format!("{io_error}\nverifier log:\n{verifier_log}")
            }
        }
        ProgramError::SyscallError(s) if is_permission(&s.io_error) => {
            format!("permission denied (needs CAP_BPF and CAP_PERFMON, or root): {s}")
        }
        // With its causes (a load error's Display leaves out the syscall that failed).
        other => {
            let mut detail = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                detail.push_str(&format!(": {c}"));
                cause = c.source();
            }
            detail
        }
    };
    anyhow::anyhow!("cannot attach to tracepoint {tracepoint}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }
}

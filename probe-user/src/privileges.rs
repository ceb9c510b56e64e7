//! Clear answers for the most common reason the probe cannot load: privileges.
use anyhow::{Result, bail};
use aya::{EbpfError, programs::ProgramError};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
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

/// What `--port` lacks to read /proc/PID/fd and /proc/PID/ns/net of processes of other
/// users or with capabilities the agent lacks (ptrace read access, and the fd directory's
/// permission bits).
pub fn missing_for_port_selector() -> Vec<&'static str> {
    let caps = effective_caps();
    [(CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH")]
        .into_iter()
        .filter(|(c, _)| caps & (1u64 << c) == 0)
        .map(|(_, name)| name)
        .collect()
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

fn is_permission(e: &std::io::Error) -> bool {
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
        other => other.to_string(),
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

//! Where a process runs: its container and Kubernetes pod, read from the kernel's and
//! /proc's view of it, with no container runtime or API server to ask.
//! - `container_id` and `k8s_pod_uid` come from its cgroup paths (/proc/PID/cgroup), in the
//!   layouts of docker, containerd (CRI), cri-o and podman, with the systemd or the cgroupfs
//!   driver, cgroup v2 or v1. A path seen from another cgroup namespace starts with
//!   `/..` components; they are skipped like any segment that names no container.
//! - `k8s_pod_name` is the pod's hostname (its /etc/hostname, which the kubelet writes), and
//!   `k8s_namespace_name` the service-account namespace file Kubernetes mounts into every
//!   pod by default; both are read through /proc/PID/root by the caller (`proc_root.rs`).
//!
//! The functions here are pure: they take the text read and say what it means.

/// What the cgroup paths of a process say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPlacement {
    /// The full 64-hex container id, as `docker ps --no-trunc`, `podman ps --no-trunc`
    /// and `crictl ps` show it.
    pub container_id: Option<String>,
    /// The Kubernetes pod's uid, with dashes (`kubectl get pod -o jsonpath={.metadata.uid}`).
    pub pod_uid: Option<String>,
}

/// Reads the paths of /proc/PID/cgroup (each line `hierarchy:controllers:path`; the cgroup
/// v2 line first where there is one). The last segment that names a container wins: a
/// process in a sub-cgroup of its container (podman's `libpod-ID.scope/container`) is in
/// that container.
pub fn from_cgroup_file(text: &str) -> CgroupPlacement {
    let mut paths: Vec<(bool, &str)> =
        text.lines().filter_map(|l| l.splitn(3, ':').nth(2).map(|p| (l.starts_with("0::"), p))).collect();
    paths.sort_by_key(|(v2, _)| !v2);
    let mut placement = CgroupPlacement::default();
    for (_, path) in paths {
        let p = from_path(path);
        if p.container_id.is_some() || p.pod_uid.is_some() {
            placement = p;
            if placement.container_id.is_some() {
                break;
            }
        }
    }
    placement
}

/// One cgroup path.
pub fn from_path(path: &str) -> CgroupPlacement {
    let mut placement = CgroupPlacement::default();
    for segment in path.split('/') {
        if let Some(uid) = pod_uid(segment) {
            placement.pod_uid = Some(uid);
        }
        if let Some(id) = container_id(segment) {
            placement.container_id = Some(id);
        }
    }
    placement
}

/// The container id a cgroup directory's name carries: `<64 hex>` (docker and containerd
/// with the cgroupfs driver), `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` or `libpod-<id>` (podman). The runtime's own
/// monitor (`crio-conmon-`, `libpod-conmon-`) is not a container.
fn container_id(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    if name.contains("conmon") {
        return None;
    }
    let id = name.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The pod uid a cgroup directory's name carries: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid with underscores>.slice` (systemd driver).
fn pod_uid(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = name.rfind("pod")?;
    if at > 0 && !name[..at].ends_with('-') {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-");
    let is_uid = uid.len() == 36
        && uid.bytes().enumerate().all(
            |(i, b)| {
                if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() }
            },
        );
    is_uid.then(|| uid.to_ascii_lowercase())
}

/// The characters of the random suffixes Kubernetes gives the names it generates (no
/// vowels, no 0, 1 or 3: `k8s.io/apimachinery/pkg/util/rand`).
fn is_generated(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The name of the workload a pod belongs to, from the pod's name alone: a Deployment's
/// `shop-7d9f8b6c5d-x2x7k` and a DaemonSet's or Job's `shop-x2x7k` are `shop`; a
/// StatefulSet's `db-0` is `db`; any other name is kept whole.
pub fn workload_of_pod(pod: &str) -> &str {
    let mut name = pod;
    if let Some((rest, suffix)) = name.rsplit_once('-')
        && !rest.is_empty()
    {
        if suffix.len() == 5 && is_generated(suffix) {
            name = rest;
            // A Deployment's ReplicaSet adds its pod-template hash before the pod's suffix.
            if let Some((rest, hash)) = name.rsplit_once('-')
                && !rest.is_empty()
                && (6..=10).contains(&hash.len())
                && is_generated(hash)
            {
                name = rest;
            }
        } else if !suffix.is_empty() && suffix.len() <= 5 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            name = rest; // a StatefulSet's ordinal
        }
    }
    name
}

/// A pod's hostname or namespace file as read: one line, trimmed; empty is none. Anything
/// that is not a DNS label (RFC 1123, as Kubernetes requires of both) is not taken.
pub fn dns_label(text: &str) -> Option<String> {
    let s = text.trim();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "fd984d2ef97e42856cd60b4f5a1d117b388381a9df8c7a9a33e3d6b4e2c195ec";
    const UID: &str = "0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c";

    #[test]
    fn container_and_pod_from_every_layout() {
        let uid_ = UID.replace('-', "_");
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            // docker, cgroupfs and systemd drivers
            (format!("/docker/{ID}"), Some(ID), None),
            (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
            // podman: cgroupfs (v1 and v2), systemd, and its sub-cgroup
            (format!("/libpod_parent/libpod-{ID}"), Some(ID), None),
            (format!("/machine.slice/libpod-{ID}.scope"), Some(ID), None),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some(ID), None),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None, None),
            // Kubernetes: containerd and cri-o, systemd and cgroupfs drivers, every QoS class
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
                Some(UID),
            ),
            (format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"), Some(ID), Some(UID)),
            (format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope"), None, Some(UID)),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), Some(ID), Some(UID)),
            (format!("/kubepods/pod{UID}/{ID}"), Some(ID), Some(UID)),
            // the pod's own cgroup, and a pod's pause container
            (format!("/kubepods/burstable/pod{UID}"), None, Some(UID)),
            // seen from another cgroup namespace
            (format!("/../../kubepods/besteffort/pod{UID}/{ID}"), Some(ID), Some(UID)),
            (format!("/../libpod-{ID}"), Some(ID), None),
            // not containers
            ("/".into(), None, None),
            ("/system.slice/nginx.service".into(), None, None),
            ("/user.slice/user-1000.slice/session-4.scope".into(), None, None),
            (format!("/system.slice/{}.service", &ID[..63]), None, None),
            ("/podcast.service".into(), None, None),
            ("/ipod-0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c".into(), None, None),
        ];
        for (path, id, uid) in cases {
            let p = from_path(&path);
            assert_eq!((p.container_id.as_deref(), p.pod_uid.as_deref()), (id, uid), "{path}");
        }
    }

    #[test]
    fn the_cgroup_file_prefers_v2_and_reads_v1_where_v2_says_nothing() {
        let hybrid = format!("4:memory:/libpod_parent/libpod-{ID}\n1:name=systemd:/libpod_parent/libpod-{ID}\n0::/\n");
        assert_eq!(from_cgroup_file(&hybrid).container_id.as_deref(), Some(ID));
        let v2 = format!("0::/kubepods/besteffort/pod{UID}/{ID}\n");
        assert_eq!(from_cgroup_file(&v2), CgroupPlacement { container_id: Some(ID.into()), pod_uid: Some(UID.into()) });
        assert_eq!(from_cgroup_file("0::/system.slice/sshd.service\n"), CgroupPlacement::default());
        assert_eq!(from_cgroup_file(""), CgroupPlacement::default());
    }

    #[test]
    fn workloads_from_pod_names() {
        for (pod, workload) in [
            ("shop-7d9f8b6c5d-x2x7k", "shop"),
            ("checkout-api-5c8d7f9b4-q8w2z", "checkout-api"),
            ("node-exporter-x2x7k", "node-exporter"),
            ("db-0", "db"),
            ("db-12", "db"),
            ("web-store", "web-store"),
            ("api-v2", "api-v2"),
            ("shop", "shop"),
            ("-x2x7k", "-x2x7k"),
            ("shop-abcde", "shop-abcde"),
        ] {
            assert_eq!(workload_of_pod(pod), workload, "{pod}");
        }
    }

    #[test]
    fn names_read_from_files() {
        assert_eq!(dns_label("shop-7d9f8b6c5d-x2x7k\n").as_deref(), Some("shop-7d9f8b6c5d-x2x7k"));
        assert_eq!(dns_label("  \n"), None);
        assert_eq!(dns_label("Not A Label"), None);
        assert_eq!(dns_label("a\"b"), None);
    }
}

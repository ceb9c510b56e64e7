//! The deployment files (`deploy/`), as the tests read them.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::procs::workspace_root;

/// A file of `deploy/`.
pub fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// A file of Kubernetes manifests as JSON documents (PyYAML reads them).
pub fn manifests(file: &str) -> Result<Vec<Value>> {
    let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let out = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(deploy(file))
        .output()
        .context("python3 with PyYAML (Debian package python3-yaml)")?;
    ensure!(out.status.success(), "reading {file}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice::<Vec<Value>>(&out.stdout)?)
}

/// The DaemonSet's container: its image, arguments and added capabilities.
pub struct DaemonSetAgent {
    pub image: String,
    pub args: Vec<String>,
    pub capabilities: Vec<String>,
}

pub fn daemonset_agent() -> Result<DaemonSetAgent> {
    let docs = manifests("kubernetes/daemonset.yaml")?;
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").context("no DaemonSet")?;
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect()
    };
    Ok(DaemonSetAgent {
        image: c["image"].as_str().context("image")?.to_string(),
        args: strings(&c["args"]),
        capabilities: strings(&c["securityContext"]["capabilities"]["add"]),
    })
}

//! Measure P: the `/metrics` page a node's agent serves at the label caps (50 services at
//! the default route cap, within the node-wide `--max-label-sets`), in bytes and render
//! time, as text and as protobuf (native histograms), with the default histograms and with
//! `--extra-histograms all`. Renders in probe-user's `page_at_caps` example: the agent's own encoders.
//! Also what `redprobe top` spends on that page at each refresh (decode, rows, quantiles).
use anyhow::{Context, Result, bail};
use xtask::{cargo, workspace_root};

use super::Row;

/// The goal: a page Prometheus takes from every node (node_exporter's is a few hundred KB).
const GOAL_BYTES: f64 = 10e6;

pub fn measure() -> Result<Vec<Row>> {
    let out = cargo()
        .args(["run", "--quiet", "--release", "--package", "probe-user", "--example", "page_at_caps", "--", "50", "100"])
        .current_dir(workspace_root())
        .output()
        .context("running probe-user's page_at_caps example")?;
    if !out.status.success() {
        bail!("page_at_caps failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut rows = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [shape, format, sets, bytes, lines, ms] = f[..] else { bail!("page_at_caps printed {line:?}") };
        let bytes: f64 = bytes.parse()?;
        if let Some(kind) = format.strip_prefix("top-read-") {
            // redprobe top's CPU per refresh, in its own process (1 refresh a second).
            let ms: f64 = ms.parse()?;
            rows.push(Row {
                id: "P",
                measure: format!("  redprobe top reading that page ({kind}: decode, rows, quantiles)"),
                without: String::new(),
                with: format!("{:.1} MB", bytes / 1e6),
                result: format!("{ms:.1} ms per read"),
                spread: format!("{:.1} % of a core at 1/s", ms / 10.0),
                goal: "-".into(),
                met: None,
            });
            continue;
        }
        let lines = if lines == "0" { String::new() } else { format!(", {lines} lines") };
        rows.push(Row {
            id: "P",
            measure: format!("/metrics at the caps, {shape}, {format} ({sets} label sets{lines})"),
            without: String::new(),
            with: format!("{:.1} MB", bytes / 1e6),
            result: format!("{ms} ms render"),
            spread: format!("{:.0} B per set", bytes / sets.parse::<f64>()?),
            // The default page has the goal; the other shape is the cost of opting in.
            goal: if shape == "default" { "<= 10 MB".into() } else { "-".into() },
            met: (shape == "default").then_some(bytes <= GOAL_BYTES),
        });
    }
    Ok(rows)
}

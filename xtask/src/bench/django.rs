//! Measure 4: gunicorn + Django (the test app, 2 sync workers) under wrk, requests/s:
//! - "without": the plain app, no agent running;
//! - "redprobe": the same gunicorn process with an agent attached to its master PID;
//! - "django-prometheus": a second gunicorn with django-prometheus's middleware on;
//! - "django-prometheus mp": a third one in prometheus_client's multiprocess mode (which
//!   it needs for correct counts with several workers).
//!
//! All three servers run for the whole measure; each round loads one side at a time.
use anyhow::{Context, Result};
use testkit::{
    procs::{Agent, pid_args},
    servers::{Bind, RealServer, gunicorn},
};

use super::{
    Row,
    stats::{Paired, interleave},
    wrk::{self, Load},
};

const PATH: &str = "/hello";
const WORKERS: u32 = 2;

fn url(server: &RealServer) -> String {
    super::url(server, PATH)
}

pub fn measure(load: &Load, rounds: usize) -> Result<Vec<Row>> {
    let plain = gunicorn(Bind::V4, WORKERS, &[], &[]).context("starting gunicorn")?;
    let dp = gunicorn(Bind::V4, WORKERS, &[], &[("REDPROBE_DJANGO_PROMETHEUS", "1")])
        .context("starting gunicorn with django-prometheus")?;
    let mp_dir = tempfile_dir()?;
    let mp_path = mp_dir.to_string_lossy().into_owned();
    let dp_mp = gunicorn(
        Bind::V4,
        WORKERS,
        &[],
        &[("REDPROBE_DJANGO_PROMETHEUS", "1"), ("PROMETHEUS_MULTIPROC_DIR", mp_path.as_str())],
    )
    .context("starting gunicorn with django-prometheus in multiprocess mode")?;
    let agent_args = pid_args(&[plain.pid()]);
    let sides = ["without", "redprobe", "django-prometheus", "django-prometheus mp"];
    let samples = interleave("measure 4 (gunicorn + Django)", &sides, rounds, |side| {
        let rps = match side {
            0 => wrk::run(load, &url(&plain))?.rps,
            1 => {
                let agent = Agent::start(&agent_args)?;
                let r = wrk::run(load, &url(&plain))?.rps;
                agent.stop()?;
                r
            }
            2 => wrk::run(load, &url(&dp))?.rps,
            _ => wrk::run(load, &url(&dp_mp))?.rps,
        };
        Ok(rps)
    })?;
    let _ = std::fs::remove_dir_all(&mp_dir);
    let row = |side: usize, measure: &str, goal: Option<f64>| {
        let p = Paired::new(samples[0].clone(), samples[side].clone());
        let (lo, hi) = p.ratio_spread();
        Row {
            id: "4",
            measure: measure.into(),
            without: format!("{:.0}", p.base_median()),
            with: format!("{:.0}", p.with_median()),
            result: format!("{:.3}", p.ratio()),
            spread: format!("{lo:.3}..{hi:.3}"),
            goal: goal.map(|g| format!(">= {g}")).unwrap_or_else(|| "-".into()),
            met: goal.map(|g| p.ratio() >= g),
        }
    };
    Ok(vec![
        row(1, "gunicorn+Django req/s, redprobe", Some(0.99)),
        row(2, "gunicorn+Django req/s, django-prometheus", None),
        row(3, "  same, django-prometheus multiprocess", None),
    ])
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("redprobe-bench-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

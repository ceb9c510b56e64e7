//! gunicorn + Django with sync workers, the agent given the master PID only: every worker
//! is seen, on TCP (IPv4, IPv6) and on a Unix socket, and workers forked after attach
//! (--max-requests recycling, TTIN, HUP) are picked up without counters going down.
use anyhow::Result;
use testkit::{
    procs::{Agent, children},
    servers::{Bind, gunicorn},
    workload::{Mix, Workload, assert_exact},
};

// 2 workers; gunicorn's sync workers close after each response: no pipelining.
testkit::full_mix_tests! { |bind| gunicorn(bind, 2, &[], &[]), Mix { pipelining: false, not_modified: true };
    gunicorn_django_ipv4_master_pid_sees_every_worker => V4,
    gunicorn_django_ipv6 => V6,
    gunicorn_django_unix_socket => Unix,
    gunicorn_django_https_certfile => Tls,
}

/// Every request on a fresh connection (sync workers close after each response); returns
/// the running total.
fn hellos(w: &mut Workload, n: usize) -> Result<u64> {
    for _ in 0..n {
        let r = testkit::client::one_shot_to(&w.to, "GET", "/hello", "HTTP/1.1")?;
        anyhow::ensure!(r.status == 200, "status {}", r.status);
        w.record("GET", "/hello", &r);
    }
    Ok(w.total())
}

/// Over HTTPS, the workers forked after attach inherit the TLS probes from the master.
fn workers_recycled(bind: Bind) -> Result<()> {
    // --max-requests 5: each worker exits after 5 requests and the master forks another.
    let server = gunicorn(bind, 2, &["--max-requests", "5"], &[])?;
    let master = server.pid();
    let agent = Agent::attach(master)?;
    let before = children(master);
    let mut w = Workload::new(&server.endpoint);
    // The truth is cumulative: counts equal to it after each phase never went down.
    let check = |w: &Workload, phase: &str| -> Result<()> {
        assert_exact(&agent, w, &format!("gunicorn workers ({bind:?}): {phase}"))?;
        Ok(())
    };
    hellos(&mut w, 30)?;
    check(&w, "--max-requests recycling")?;
    let recycled = children(master);
    assert!(recycled.iter().all(|p| !before.contains(p)), "workers were not recycled: {before:?} -> {recycled:?}");

    // TTIN: one more worker.
    unsafe { libc::kill(master as i32, libc::SIGTTIN) };
    testkit::wait_for("a third worker", std::time::Duration::from_secs(30), || (children(master).len() == 3).then_some(()))?;
    hellos(&mut w, 12)?;
    check(&w, "after TTIN")?;

    // HUP: every worker replaced by a new one.
    let old = children(master);
    unsafe { libc::kill(master as i32, libc::SIGHUP) };
    testkit::wait_for("workers replaced after HUP", std::time::Duration::from_secs(30), || {
        let now = children(master);
        (!now.is_empty() && now.iter().all(|p| !old.contains(p))).then_some(())
    })?;
    hellos(&mut w, 12)?;
    check(&w, "after HUP")?;
    // Workers that exited are forgotten: the targets are the master and today's workers.
    let live = 1.0 + children(master).len() as f64;
    agent.wait_metrics(&format!("{live} targets"), |m| m.sum("redprobe_targets", &[]) == live)?;
    Ok(())
}

testkit::per_bind_tests! { workers_recycled;
    gunicorn_workers_recycled_added_and_replaced_after_attach_are_all_counted => V4,
    gunicorn_https_workers_forked_after_attach_inherit_the_tls_probes => Tls,
}

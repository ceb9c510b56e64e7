//! `--buckets`: the classic duration boundaries are the agent's and the kernel's (the slot
//! table is patched into the kernel at load), and bad ones are refused with the reason.
use std::process::Command;

use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_bin, agent_fails_with},
};

#[test]
fn custom_buckets_are_served_and_the_kernel_counts_in_them() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::start(&["--pid".into(), server.pid().to_string(), "--buckets".into(), "0.02,1".into()])?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 6)?;
    conn.get_ok("/sleep?ms=50", 4)?;
    let m = agent.wait_metrics("10 requests counted", |m| m.request_counts().values().sum::<u64>() == 10)?;
    // Exactly the boundaries given, then +Inf.
    assert_eq!(m.buckets("/hello"), vec![(0.02, 6.0), (1.0, 6.0), (f64::INFINITY, 6.0)]);
    assert_eq!(m.buckets("/sleep"), vec![(0.02, 0.0), (1.0, 4.0), (f64::INFINITY, 4.0)]);
    // The kernel measured them (on the slots of the table the agent gave it).
    let kernel = m.sum("redprobe_requests_paired_total", &[("pairer", "kernel")]);
    assert!(kernel >= 8.0, "the kernel paired {kernel} of 10 requests");
    Ok(())
}

#[test]
fn bad_buckets_are_refused_with_the_reason() -> Result<()> {
    for (buckets, reason) in [
        ("0.1,0.05", "--buckets must rise: 0.05 comes after 0.1"),
        ("0", "--buckets: 0 is not a duration in seconds above 1 ns"),
        ("0.001,abc", "abc"),
    ] {
        let code = if buckets.contains("abc") { 2 } else { 1 };
        let stderr = agent_fails_with(Command::new(agent_bin()), &["--pid", "1", "--buckets", buckets, "--listen", "127.0.0.1:0"], code)?;
        assert!(stderr.contains(reason), "--buckets {buckets}: {stderr}");
    }
    let stderr = agent_fails_with(
        Command::new(agent_bin()),
        &["--pid", "1", "--buckets", "0.5", "--naming", "django-prometheus", "--listen", "127.0.0.1:0"],
        1,
    )?;
    assert!(stderr.contains("django-prometheus's own"), "{stderr}");
    Ok(())
}

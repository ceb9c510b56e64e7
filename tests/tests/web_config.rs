//! `--web.config.file`: /metrics over TLS with basic auth and client certificates, in the
//! exporters' web configuration format, checked with the tools an operator uses: openssl
//! makes the CAs and certificates, htpasswd the bcrypt hash, curl scrapes.
use std::{path::Path, process::Command};

use anyhow::{Result, ensure};
use testkit::{
    procs::{Agent, Server, agent_bin, agent_fails_with},
    tls::{Ca, bcrypt, run, scrape},
};

fn start(server: &Server, config: &Path, ready: Vec<String>) -> Result<Agent> {
    let args =
        vec!["--pid".to_string(), server.pid().to_string(), "--web.config.file".into(), config.display().to_string()];
    Agent::start_until(Command::new(agent_bin()), &args, move |addr| {
        let args: Vec<&str> = ready.iter().map(String::as_str).collect();
        scrape(addr, &args).is_ok_and(|s| s == 200)
    })
}

/// The agent's own count of refused connections, read with working credentials.
fn refused(addr: &str, reason: &str, args: &[&str]) -> Result<f64> {
    let out =
        run(Command::new("curl").args(["-s", "--max-time", "10"]).args(args).arg(format!("https://{addr}/metrics")))?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("redprobe_scrape_refused_total") && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[test]
fn tls_and_basic_auth_refuse_a_wrong_password_and_plain_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "ca")?;
    ca.sign("server", true)?;
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
             basic_auth_users:\n  prometheus: '{}'\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            bcrypt("s3cret")?
        ),
    )?;
    let server = Server::start_python()?;
    let cacert = ca.crt().display().to_string();
    let good = vec!["--cacert".to_string(), cacert.clone(), "-u".into(), "prometheus:s3cret".into()];
    let agent = start(&server, &config, good.clone())?;
    let good: Vec<&str> = good.iter().map(String::as_str).collect();

    assert_eq!(scrape(&agent.addr, &good)?, 200);
    assert_eq!(scrape(&agent.addr, &["--cacert", &cacert, "-u", "prometheus:wrong"])?, 401, "wrong password");
    assert_eq!(scrape(&agent.addr, &["--cacert", &cacert, "-u", "alice:s3cret"])?, 401, "unknown user");
    assert_eq!(scrape(&agent.addr, &["--cacert", &cacert])?, 401, "no credentials");
    assert_eq!(refused(&agent.addr, "unauthorized", &good)?, 3.0);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .arg(format!("http://{}/metrics", agent.addr))
        .output()?;
    ensure!(String::from_utf8_lossy(&plain.stdout).trim() != "200", "plain HTTP was served");
    // A bare TCP check (a Kubernetes tcpSocket probe) is not a refused scraper.
    drop(std::net::TcpStream::connect(&agent.addr)?);
    assert_eq!(scrape(&agent.addr, &good)?, 200);
    assert_eq!(refused(&agent.addr, "tls_handshake", &good)?, 1.0);
    // The configured header is on the answers.
    let head = run(Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .args(&good)
        .arg(format!("https://{}/metrics", agent.addr)))?;
    ensure!(head.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{head}");
    Ok(())
}

#[test]
fn a_client_certificate_is_required_when_configured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "ca")?;
    ca.sign("server", true)?;
    let clients = Ca::new(dir.path(), "clients")?;
    let (crt, key) = clients.sign("prometheus", false)?;
    let strangers = Ca::new(dir.path(), "strangers")?;
    let (other_crt, other_key) = strangers.sign("intruder", false)?;
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    )?;
    let server = Server::start_python()?;
    let cacert = ca.crt().display().to_string();
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let good = vec!["--cacert".to_string(), cacert.clone(), "--cert".into(), crt.clone(), "--key".into(), key.clone()];
    let agent = start(&server, &config, good.clone())?;
    let good: Vec<&str> = good.iter().map(String::as_str).collect();

    assert_eq!(scrape(&agent.addr, &good)?, 200);
    assert_eq!(scrape(&agent.addr, &["--cacert", &cacert])?, 0, "no client certificate");
    let (other_crt, other_key) = (other_crt.display().to_string(), other_key.display().to_string());
    assert_eq!(
        scrape(&agent.addr, &["--cacert", &cacert, "--cert", &other_crt, "--key", &other_key])?,
        0,
        "a certificate of another CA"
    );
    assert_eq!(refused(&agent.addr, "tls_handshake", &good)?, 2.0);
    Ok(())
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_change_is_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let old = Ca::new(dir.path(), "old")?;
    old.sign("server", true)?;
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")?;
    let server = Server::start_python()?;
    let (old_ca, new_dir) = (old.crt().display().to_string(), tempfile::tempdir()?);
    let agent = start(&server, &config, vec!["--cacert".into(), old_ca.clone()])?;
    assert_eq!(scrape(&agent.addr, &["--cacert", &old_ca])?, 200);

    // Renewed by another CA, the files replaced as a certificate manager does (rename).
    let new = Ca::new(new_dir.path(), "new")?;
    let (crt, key) = new.sign("server", true)?;
    std::fs::copy(&key, dir.path().join("server.key.tmp"))?;
    std::fs::rename(dir.path().join("server.key.tmp"), dir.path().join("server.key"))?;
    std::fs::copy(&crt, dir.path().join("server.crt.tmp"))?;
    std::fs::rename(dir.path().join("server.crt.tmp"), dir.path().join("server.crt"))?;
    let new_ca = new.crt().display().to_string();
    assert_eq!(scrape(&agent.addr, &["--cacert", &new_ca])?, 200, "the renewed certificate is served");
    assert_eq!(scrape(&agent.addr, &["--cacert", &old_ca])?, 0, "the old one is not");

    // A change that does not load leaves the configuration in force, and says so.
    std::fs::write(&config, "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n")?;
    assert_eq!(scrape(&agent.addr, &["--cacert", &new_ca])?, 200);
    let page =
        run(Command::new("curl").args(["-s", "--cacert", &new_ca]).arg(format!("https://{}/metrics", agent.addr)))?;
    ensure!(page.contains("redprobe_web_config_reload_failures_total 1"), "no reload failure counted");
    ensure!(agent.stderr().contains("web configuration not reloaded"), "{}", agent.stderr());
    Ok(())
}

#[test]
fn a_bad_web_config_stops_the_agent_before_it_attaches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_python()?;
    let pid = server.pid().to_string();
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "basic_auth_users:\n  prometheus: plaintext\n")?;
    let path = config.display().to_string();
    let err = agent_fails_with(Command::new(agent_bin()), &["--pid", &pid, "--web.config.file", &path], 1)?;
    ensure!(err.contains("not a bcrypt hash") && err.contains(&path), "{err}");
    let missing = dir.path().join("nope.yml").display().to_string();
    let err = agent_fails_with(Command::new(agent_bin()), &["--pid", &pid, "--web.config.file", &missing], 1)?;
    ensure!(err.contains("nope.yml"), "{err}");
    Ok(())
}

//! `--web.config.file`: /metrics over TLS with basic auth and client certificates, in the
//! exporters' web configuration format, checked with the tools an operator uses: openssl
//! makes the CAs and certificates, htpasswd the bcrypt hash, curl scrapes.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use testkit::procs::{Agent, Server, agent_bin, agent_fails_with};

fn run(cmd: &mut Command) -> Result<String> {
    let what = testkit::describe(cmd);
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    ensure!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A CA, and certificates it signs, made by openssl in `dir`.
struct Ca {
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Result<Self> {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt"))))?;
        Ok(Ca { dir: dir.to_path_buf(), name: name.into() })
    }

    fn crt(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// `name.crt` and `name.key`: a server certificate for 127.0.0.1, or a client one.
    fn sign(&self, name: &str, server: bool) -> Result<(PathBuf, PathBuf)> {
        let (crt, key, csr, ext) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        let usage = if server { "serverAuth\nsubjectAltName=IP:127.0.0.1" } else { "clientAuth" };
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"))?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(self.crt())
            .arg("-CAkey")
            .arg(self.dir.join(format!("{}.key", self.name)))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt))?;
        Ok((crt, key))
    }
}

/// The bcrypt hash of `password`, as htpasswd (apache2-utils) makes it.
fn bcrypt(password: &str) -> Result<String> {
    let line = run(Command::new("htpasswd").args(["-nbBC", "10", "prometheus", password]))?;
    Ok(line.trim().split_once(':').context("htpasswd output")?.1.to_string())
}

/// curl's HTTP status for a scrape of `addr` over https (0: no HTTP answer, e.g. the TLS
/// handshake failed), with extra curl arguments.
fn scrape(addr: &str, args: &[&str]) -> Result<u16> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(format!("https://{addr}/metrics"))
        .output()
        .context("curl")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
}

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

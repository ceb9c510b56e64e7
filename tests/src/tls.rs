//! TLS set-ups for the tests of `--web.config.file`, made with the tools an operator uses:
//! openssl makes CAs and certificates, htpasswd (apache2-utils) bcrypt hashes, and curl
//! scrapes over https.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let what = crate::describe(cmd);
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    ensure!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A CA, and certificates it signs, made by openssl in `dir`.
pub struct Ca {
    dir: PathBuf,
    name: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt"))))?;
        Ok(Ca { dir: dir.to_path_buf(), name: name.into() })
    }

    pub fn crt(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// `name.crt` and `name.key`: a server certificate for 127.0.0.1, or a client one.
    pub fn sign(&self, name: &str, server: bool) -> Result<(PathBuf, PathBuf)> {
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
pub fn bcrypt(password: &str) -> Result<String> {
    let line = run(Command::new("htpasswd").args(["-nbBC", "10", "prometheus", password]))?;
    Ok(line.trim().split_once(':').context("htpasswd output")?.1.to_string())
}

/// curl's HTTP status for a scrape of `addr` over https (0: no HTTP answer, e.g. the TLS
/// handshake failed), with extra curl arguments.
pub fn scrape(addr: &str, args: &[&str]) -> Result<u16> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(format!("https://{addr}/metrics"))
        .output()
        .context("curl")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
}

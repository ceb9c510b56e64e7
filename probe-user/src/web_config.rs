//! `--web.config.file`: TLS and basic auth for `/metrics`, configured with the file format
//! Prometheus' exporters share (exporter-toolkit's web configuration):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # paths relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':')
//! ```
//!
//! As the exporters do, the files are read again when they change: a certificate renewed
//! (or a Kubernetes Secret updated) is served from the next connection on, without a
//! restart. A change that does not load is logged and the previous configuration kept.
//! What redprobe does not implement (cipher suite and curve lists, client SAN allow-lists,
//! client certificates taken without verification) is refused with an error, never
//! ignored.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use anyhow::{Context, Result, bail};
use base64::Engine;
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    http_server_config: Option<HttpFormat>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFormat {
    /// redprobe serves HTTP/1.1 only, which every scraper speaks: accepted, not used.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// One loaded configuration.
pub struct Loaded {
    /// None: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User -> bcrypt hash; empty: no authentication.
    users: HashMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(String, String)>,
    /// Only clients with a certificate the configured CAs signed get in.
    pub requires_client_cert: bool,
    /// Credentials that verified (SHA-256 of user, password and hash): bcrypt is slow on
    /// purpose, and a scraper sends the same ones every time.
    verified: Mutex<HashSet<Vec<u8>>>,
    /// The files it was read from, with what they were then.
    stamps: Vec<(PathBuf, Option<Stamp>)>,
}

type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A bcrypt hash checked for unknown users, so that the answer takes as long as for a
/// known one (made once, at the usual cost).
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("redprobe: no such user", bcrypt::DEFAULT_COST).unwrap_or_default())
}

impl Loaded {
    /// Does an `Authorization` header (its value) let the request in?
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let hash = self.users.get(&user);
        let key = {
            let mut d = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), b"\0", password.as_bytes(), b"\0", hash.map_or(&b""[..], |h| h.as_bytes())] {
                d.update(part);
            }
            d.finish().as_ref().to_vec()
        };
        let verified = |v: &Mutex<HashSet<Vec<u8>>>| v.lock().unwrap_or_else(PoisonError::into_inner).contains(&key);
        if hash.is_some() && verified(&self.verified) {
            return true;
        }
        let ok =
            bcrypt::verify(&password, hash.map_or(dummy_hash(), String::as_str)).unwrap_or(false) && hash.is_some();
        if ok {
            self.verified.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        }
        ok
    }

    /// Does basic auth guard the endpoint?
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    fn changed(&self) -> bool {
        self.stamps.iter().any(|(path, was)| stamp(path) != *was)
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Reads and checks a web configuration file, and the files it names.
pub fn load(path: &Path) -> Result<Loaded> {
    let config_stamp = stamp(path);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileFormat = if text.trim().is_empty() {
        FileFormat::default()
    } else {
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a web configuration file", path.display()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut stamps = vec![(path.to_path_buf(), config_stamp)];
    let requires_client_cert = file.tls_server_config.as_ref().and_then(|t| t.client_auth_type.as_deref())
        == Some("RequireAndVerifyClientCert");
    let tls = match file.tls_server_config {
        Some(t) => Some(Arc::new(tls_config(t, dir, &mut stamps)?)),
        None => None,
    };
    let users: HashMap<String, String> = file.basic_auth_users.unwrap_or_default().into_iter().collect();
    for (user, hash) in &users {
        if user.contains(':') {
            bail!("basic_auth_users: user {user:?} has a ':' (basic auth cannot send it)");
        }
        if !hash.starts_with("$2") {
            bail!(
                "basic_auth_users: the password of {user:?} is not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            );
        }
    }
    let headers = file.http_server_config.and_then(|h| h.headers).unwrap_or_default();
    for name in headers.keys() {
        let lower = name.to_ascii_lowercase();
        if ["authorization", "www-authenticate", "content-type", "content-length", "content-encoding", "server", "date"]
            .contains(&lower.as_str())
        {
            bail!("http_server_config.headers: {name} is redprobe's to set");
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("http_server_config.headers: {name:?} is not a header name");
        }
    }
    Ok(Loaded { tls, users, headers: headers.into_iter().collect(), requires_client_cert, verified: Mutex::default(), stamps })
}

fn tls_config(t: TlsFormat, dir: &Path, stamps: &mut Vec<(PathBuf, Option<Stamp>)>) -> Result<ServerConfig> {
    let refused = |field: &str, what: &str| -> Result<()> {
        bail!("tls_server_config.{field}: not supported by redprobe ({what})")
    };
    if t.cipher_suites.is_some() {
        refused("cipher_suites", "rustls' own suites, all strong, are used; remove the field")?;
    }
    if t.curve_preferences.is_some() {
        refused("curve_preferences", "rustls' own key exchange groups are used; remove the field")?;
    }
    if t.client_allowed_sans.is_some() {
        refused("client_allowed_sans", "any client certificate the client_ca_file's CAs signed is let in")?;
    }
    let _ = t.prefer_server_cipher_suites; // rustls always prefers the server's order
    let mut file = |name: &str, value: Option<String>| -> Result<PathBuf> {
        let Some(value) = value.filter(|v| !v.is_empty()) else { bail!("tls_server_config.{name} is required") };
        let path = dir.join(value);
        stamps.push((path.clone(), stamp(&path)));
        Ok(path)
    };
    let cert_file = file("cert_file", t.cert_file)?;
    let key_file = file("key_file", t.key_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;

    let version = |v: &Option<String>, default: u8| -> Result<u8> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => bail!("TLS version {other}: rustls speaks TLS12 and TLS13"),
        }
    };
    let (min, max) = (version(&t.min_version, 12)?, version(&t.max_version, 13)?);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &TLS12), (13, &TLS13)].into_iter().filter(|(v, _)| (min..=max).contains(v)).map(|(_, p)| p).collect();
    if versions.is_empty() {
        bail!("tls_server_config: min_version is above max_version");
    }

    let verifier: Option<Arc<dyn ClientCertVerifier>> = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "" | "NoClientCert" => None,
        kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven") => {
            let ca_file = file("client_ca_file", t.client_ca_file)?;
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(&ca_file).map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?
            {
                roots.add(cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?)?;
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let builder = if kind == "VerifyClientCertIfGiven" { builder.allow_unauthenticated() } else { builder };
            Some(builder.build().with_context(|| format!("{}: client CAs", ca_file.display()))?)
        }
        kind @ ("RequestClientCert" | "RequireAnyClientCert") => {
            bail!(
                "tls_server_config.client_auth_type {kind}: redprobe verifies client certificates; use RequireAndVerifyClientCert with client_ca_file"
            )
        }
        other => bail!(
            "tls_server_config.client_auth_type {other:?}: one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    };
    let builder = ServerConfig::builder_with_provider(provider()).with_protocol_versions(&versions)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!("{} and {}: the key does not match the certificate", cert_file.display(), key_file.display())
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration in force, read again when a file of it changes.
pub struct WebConfig {
    path: PathBuf,
    current: Mutex<Arc<Loaded>>,
}

impl WebConfig {
    /// Loads the file; an error here stops the agent before it attaches anything.
    pub fn open(path: &Path) -> Result<Self> {
        let loaded = load(path)?;
        Ok(WebConfig { path: path.to_path_buf(), current: Mutex::new(Arc::new(loaded)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration for a new connection: reloaded first if a file changed. A change
    /// that does not load is logged (once per change) and the configuration in force kept.
    /// Returns it, and whether a reload failed.
    pub fn current(&self) -> (Arc<Loaded>, bool) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !current.changed() {
            return (current.clone(), false);
        }
        match load(&self.path) {
            Ok(loaded) => {
                tracing::info!(file = %self.path.display(), "web configuration reloaded");
                *current = Arc::new(loaded);
                (current.clone(), false)
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), "web configuration not reloaded, the previous one stays in force: {e:#}");
                // Take the failed files' stamps so that the error is logged once per change.
                let stamps = current.stamps.iter().map(|(p, _)| (p.clone(), stamp(p))).collect();
                let kept = Loaded {
                    tls: current.tls.clone(),
                    users: current.users.clone(),
                    headers: current.headers.clone(),
                    requires_client_cert: current.requires_client_cert,
                    verified: Mutex::default(),
                    stamps,
                };
                *current = Arc::new(kept);
                (current.clone(), true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&write(dir.path(), "web.yml", "")).unwrap();
        assert!(loaded.tls.is_none() && !loaded.requires_auth() && loaded.authorized(None));
    }

    #[test]
    fn basic_auth_with_bcrypt_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let loaded =
            load(&write(dir.path(), "web.yml", &format!("basic_auth_users:\n  prometheus: '{hash}'\n"))).unwrap();
        let header = |user: &str, password: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        };
        assert!(loaded.authorized(Some(&header("prometheus", "s3cret"))));
        assert!(loaded.authorized(Some(&header("prometheus", "s3cret"))), "and from the cache");
        assert!(!loaded.authorized(Some(&header("prometheus", "wrong"))));
        assert!(!loaded.authorized(Some(&header("nobody", "s3cret"))));
        assert!(!loaded.authorized(Some("Bearer s3cret")));
        assert!(!loaded.authorized(Some("Basic !!!")));
        assert!(!loaded.authorized(None));
    }

    #[test]
    fn what_is_not_implemented_or_wrong_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (text, error) in [
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites",
            ),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n", "client_allowed_sans"),
            ("tls_server_config:\n  key_file: b\n", "cert_file is required"),
            ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "missing.crt"),
            ("basic_auth_users:\n  alice: plain-text\n", "not a bcrypt hash"),
            ("tls_config:\n  cert_file: a\n", "unknown field"),
            ("http_server_config:\n  headers:\n    Content-Type: x\n", "redprobe's to set"),
        ] {
            let err = format!(
                "{:#}",
                load(&write(dir.path(), "web.yml", text)).err().unwrap_or_else(|| panic!("{text} loaded"))
            );
            assert!(err.contains(error), "{text}: {err}");
        }
    }
}

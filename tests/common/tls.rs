//! TLS material for Redis over TLS: [`TlsFiles`], a test CA and a server certificate made with
//! `openssl` in a temporary directory, and the `redis-server` / `redis-cli` arguments that use
//! them. [`redis_supports_tls`] tells whether this machine's redis-server can serve TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::redis::Node;

/// Runs `cmd`; its stdout, or everything it said when it failed.
fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A test CA and a server certificate for `127.0.0.1` / `localhost` signed by it, made
/// with `openssl` in a temporary directory.
#[derive(Clone)]
pub struct TlsFiles {
    dir: Arc<tempfile::TempDir>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(d)).expect("openssl must work");
        };
        Self::make_ca(d, "ca");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("server.crt"),
            key: d.join("server.key"),
            dir: Arc::new(dir),
        }
    }

    fn make_ca(dir: &Path, name: &str) -> PathBuf {
        run_ok(Command::new("openssl").current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=session-sidecar test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))
        .expect("openssl must work");
        dir.join(format!("{name}.crt"))
    }

    /// Another CA, which did not sign the server certificate.
    pub fn unrelated_ca(&self) -> PathBuf {
        Self::make_ca(self.dir.path(), "other-ca")
    }

    /// `redis-server` arguments: TLS only, on `port`, replication over TLS too.
    pub(super) fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.cert.display().to_string(),
            "--tls-key-file",
            &self.key.display().to_string(),
            "--tls-ca-cert-file",
            &self.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `redis-cli` arguments to talk to a node of these files.
    pub(super) fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// Whether this machine's redis-server was built with TLS (Debian's is): starts one.
pub fn redis_supports_tls(tls: &TlsFiles) -> Result<(), String> {
    Node::try_start(None, &[], Some(tls)).map(|_| ())
}

//! TLS for every Redis kind, set up in one place: a store's URLs are all `redis://` or all
//! `rediss://`; with `rediss://` the CAs of `store.ca_file` (read once) are trusted, else the
//! system roots. A plain `redis://` store has no use for `ca_file` and never reads it.

use std::path::Path;

use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisResult, TlsCertificates};

use crate::store::StoreError;

const TLS_SCHEME: &str = "rediss://";

/// The TLS settings of one Redis store, shared by all the clients it builds (data nodes and
/// sentinels alike).
#[derive(Clone)]
pub struct Tls {
    enabled: bool,
    /// PEM of `store.ca_file`; `None`: the system roots (or no TLS).
    root_cert: Option<Vec<u8>>,
}

impl Tls {
    /// The settings of a store reached through `urls`, the value of config key `key`: they
    /// must agree on the scheme; `ca_file` is read only when they use TLS.
    pub fn for_urls<U: AsRef<str>>(
        key: &str,
        urls: &[U],
        ca_file: Option<&Path>,
    ) -> Result<Tls, StoreError> {
        let enabled = urls
            .first()
            .is_some_and(|u| u.as_ref().starts_with(TLS_SCHEME));
        if urls
            .iter()
            .any(|u| u.as_ref().starts_with(TLS_SCHEME) != enabled)
        {
            return Err(StoreError::Unavailable(format!(
                "{key} must all use redis:// or all use rediss://"
            )));
        }
        let root_cert = match ca_file {
            Some(path) if enabled => Some(read_ca_file(path)?),
            _ => None,
        };
        Ok(Tls { enabled, root_cert })
    }

    /// `rediss` with TLS, else `redis`: the scheme of the store's other nodes (a master the
    /// sentinels name).
    pub fn scheme(&self) -> &'static str {
        if self.enabled {
            "rediss"
        } else {
            "redis"
        }
    }

    /// The CAs to trust, for a client builder; `None` when the defaults apply.
    pub fn certificates(&self) -> Option<TlsCertificates> {
        self.root_cert.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    /// A client for one node, trusting the configured CAs when it is reached over TLS.
    pub fn client(&self, node: impl IntoConnectionInfo) -> RedisResult<Client> {
        let info = node.into_connection_info()?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        match self.certificates() {
            Some(certificates) if tls => Client::build_with_tls(info, certificates),
            _ => Client::open(info),
        }
    }
}

/// The PEM bytes of `store.ca_file`.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot read store.ca_file {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISSING: &str = "/nonexistent/session-sidecar-ca.pem";

    #[test]
    fn plain_urls_never_read_the_ca_file() {
        let tls = Tls::for_urls(
            "store.url",
            &["redis://127.0.0.1:1"],
            Some(Path::new(MISSING)),
        )
        .unwrap();
        assert_eq!(tls.scheme(), "redis");
        assert!(tls.certificates().is_none());
        assert!(tls.client("redis://127.0.0.1:1").is_ok());
    }

    #[test]
    fn tls_urls_read_the_ca_file() {
        let err = Tls::for_urls(
            "store.url",
            &["rediss://127.0.0.1:1"],
            Some(Path::new(MISSING)),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("store.ca_file"), "{err}");
        let tls = Tls::for_urls("store.url", &["rediss://127.0.0.1:1"], None).unwrap();
        assert_eq!(tls.scheme(), "rediss");
        assert!(tls.certificates().is_none(), "system roots");
    }

    #[test]
    fn mixed_schemes_are_refused() {
        let urls = ["redis://127.0.0.1:1", "rediss://127.0.0.1:2"];
        let err = Tls::for_urls("store.nodes", &urls, None).err().unwrap();
        assert!(err.to_string().contains("store.nodes"), "{err}");
        assert!(Tls::for_urls::<&str>("store.nodes", &[], None).is_ok());
    }

    #[test]
    fn a_bad_url_is_an_error_not_a_panic() {
        let tls = Tls::for_urls("store.url", &["redis://127.0.0.1:1"], None).unwrap();
        assert!(tls.client("not a url").is_err());
    }
}

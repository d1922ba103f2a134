//! TLS for the Redis kinds: `rediss://` URLs, trusting `store.ca_file` when given.

use redis::Client;

use crate::store::StoreError;

/// The PEM bytes of `store.ca_file`.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot read store.ca_file {}: {e}", path.display()))
    })
}

/// A `redis::Client` for a URL, trusting `ca_file` for `rediss://` when given (a plain
/// `redis://` URL has no use for it).
pub fn client(url: &str, ca_file: Option<&std::path::Path>) -> Result<Client, StoreError> {
    let result = match ca_file {
        Some(path) if url.starts_with("rediss://") => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(read_ca_file(path)?),
            },
        ),
        _ => Client::open(url),
    };
    result.map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))
}

//! The store as the tests see it from outside the sidecar: [`open_store`] opens any Redis
//! store kind from the `store:` settings the sidecar would use, [`session_key`] names the
//! store key a session cookie maps to and [`user_index_key`] the key of a user's index.

use std::sync::Arc;
use std::time::Duration;

/// The store key (default prefix) of a session cookie value.
pub fn session_key(cookie: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let id = cookie.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap();
    format!("session:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The store key (default prefix) of the user index of `user`, the user field's JSON text
/// (e.g. `"\"alice\""`): hashed like session keys.
pub fn user_index_key(user: &str) -> String {
    use sha2::Digest;
    format!(
        "session:user:{}",
        hex::encode(sha2::Sha256::digest(user.as_bytes()))
    )
}

/// A Redis store of any kind, built from the `store:` settings the sidecar would use.
pub fn open_store(
    backend: session_sidecar::config::StoreBackend,
    timeout: Duration,
) -> Arc<dyn session_sidecar::store::SessionStore> {
    let config = session_sidecar::config::StoreConfig {
        key_prefix: "session:".into(),
        timeout,
        backend,
    };
    session_sidecar::store::open(&config).unwrap_or_else(|e| panic!("store did not open: {e}"))
}

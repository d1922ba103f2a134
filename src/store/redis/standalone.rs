//! One Redis server: the [`Connector`] for `store.kind: redis`.
//!
//! One reconnecting, multiplexed [`ConnectionManager`] per sidecar, made lazily on the runtime
//! of the first operation; every connect and reply is bounded by `store.timeout`.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;

use super::tls::Tls;
use super::{store_error, Connector};
use crate::store::StoreError;

/// One Redis server through a reconnecting, multiplexed [`ConnectionManager`].
pub struct Standalone {
    client: Client,
    timeout: Duration,
    manager: OnceLock<ConnectionManager>,
}

impl Standalone {
    /// Checks the URL and reads `ca_file` (for `rediss://`); connects nothing yet.
    pub fn open(
        url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Standalone, StoreError> {
        let client = Tls::for_urls("store.url", &[url], ca_file)?
            .client(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Standalone {
            client,
            timeout,
            manager: OnceLock::new(),
        })
    }
}

impl Connector for Standalone {
    type Conn = ConnectionManager;

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(store_error)?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

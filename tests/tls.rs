//! SPEC §8, TLS for every Redis kind: `rediss://` URLs with `store.ca_file`, against Redis
//! servers started by the tests with a CA and server certificate the test makes with
//! `openssl` (on free loopback ports).
//!
//! Guards: kind redis through the sidecar over `rediss://` (IP and host name); kind
//! redis-cluster (3 TLS masters, `tls-cluster yes`) and kind redis-sentinel (TLS sentinel,
//! TLS master and replica) with the store-trait semantics; a server whose certificate the
//! configured CA did not sign is refused, and so is plain `redis://` to a TLS port. If the
//! installed redis-server was built without TLS, each test says so and is skipped.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use session_sidecar::config::{RedisAuth, StoreBackend};

const TIMEOUT: Duration = Duration::from_millis(500);

/// The TLS files, or `None` (after saying why) when redis-server cannot do TLS here.
fn tls_or_skip(test: &str) -> Option<TlsFiles> {
    let tls = TlsFiles::generate();
    match redis_supports_tls(&tls) {
        Ok(()) => Some(tls),
        Err(e) => {
            eprintln!("SKIPPED {test}: this redis-server cannot serve TLS ({e})");
            None
        }
    }
}

fn with_ca(ca: &std::path::Path) -> RedisAuth {
    RedisAuth {
        username: None,
        password: None,
        ca_file: Some(ca.to_path_buf()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_standalone_through_the_sidecar() {
    let Some(tls) = tls_or_skip("rediss_standalone_through_the_sidecar") else {
        return;
    };
    let node = Node::start(None, &["--appendonly", "no"], Some(&tls));
    let port = node.port;
    let standalone =
        |url: String, ca_file: Option<std::path::PathBuf>| StoreBackend::Redis { url, ca_file };

    check_store_semantics(
        open_store(
            standalone(format!("rediss://127.0.0.1:{port}/0"), Some(tls.ca.clone())),
            TIMEOUT,
        ),
        "tls-standalone",
    )
    .await;

    // Refused: a CA that did not sign the server's certificate, the system roots, plain TCP.
    for (url, ca) in [
        (
            format!("rediss://127.0.0.1:{port}/0"),
            Some(tls.unrelated_ca()),
        ),
        (format!("rediss://127.0.0.1:{port}/0"), None),
        (format!("redis://127.0.0.1:{port}/0"), None),
    ] {
        let store = open_store(standalone(url.clone(), ca.clone()), TIMEOUT);
        assert!(
            store.ping().await.is_err(),
            "{url} with CA {ca:?} must be refused"
        );
    }

    // Through the sidecar, by host name (the certificate names localhost and 127.0.0.1).
    let yaml = format!(
        "  kind: redis\n  url: \"rediss://localhost:{port}/0\"\n  ca_file: \"{}\"\n",
        tls.ca.display()
    );
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(
        &Settings::with_store(StoreKind::Yaml(yaml)),
        &backend.addr(),
    );
    let mut client = Client::new(&sidecar);
    assert_eq!(client.set(r#"{"user":"alice"}"#).await.status, 200);
    assert_eq!(client.session().await, json!({"user": "alice"}));
    assert_eq!(
        node.keys("session:*"),
        vec![session_key(client.cookie.as_ref().unwrap())]
    );
    let ready = reqwest::get(sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster() {
    let Some(tls) = tls_or_skip("rediss_cluster") else {
        return;
    };
    let cluster = RedisCluster::start(3, 0, Some(&tls));
    let nodes: Vec<String> = cluster.nodes.iter().take(2).map(|n| n.url()).collect();
    assert!(nodes[0].starts_with("rediss://"));
    check_store_semantics(
        open_store(
            StoreBackend::RedisCluster {
                nodes: nodes.clone(),
                auth: with_ca(&tls.ca),
            },
            TIMEOUT,
        ),
        "tls-cluster",
    )
    .await;
    let untrusted = open_store(
        StoreBackend::RedisCluster {
            nodes,
            auth: with_ca(&tls.unrelated_ca()),
        },
        TIMEOUT,
    );
    assert!(untrusted.ping().await.is_err(), "untrusted cluster refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel() {
    let Some(tls) = tls_or_skip("rediss_sentinel") else {
        return;
    };
    let set = SentinelSet::start(1, Some(&tls));
    let backend = |ca: &std::path::Path| StoreBackend::RedisSentinel {
        sentinels: set.sentinels.iter().map(|s| s.url()).collect(),
        master_name: MASTER_NAME.into(),
        db: 0,
        auth: with_ca(ca),
        sentinel_username: None,
        sentinel_password: None,
    };
    assert!(set.sentinels[0].url().starts_with("rediss://"));
    check_store_semantics(open_store(backend(&tls.ca), TIMEOUT), "tls-sentinel").await;
    let untrusted = open_store(backend(&tls.unrelated_ca()), TIMEOUT);
    assert!(
        untrusted.ping().await.is_err(),
        "untrusted sentinel refused"
    );
}

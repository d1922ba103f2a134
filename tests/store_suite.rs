//! One behavioural suite for every `SessionStore`, run against each implementation: the
//! memory store, Redis (a real `redis-server`), Redis Cluster and Redis Sentinel. The suites
//! themselves live in the harness (`common/store_semantics.rs`, which lists what they guard),
//! so the cluster, sentinel and TLS tests run the same ones; other store kinds add themselves
//! by calling [`run_suite`] and [`run_index_suite`].
//!
//! Guards, on top of the suites: the TTL Redis keeps is the one given; stale index entries
//! are pruned from Redis; the cluster run wrote to the cluster's masters and the sentinel run
//! to the master the sentinel names.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{run_index_suite, run_suite};
use session_sidecar::store::{memory::MemoryStore, SessionStore};

#[tokio::test]
async fn memory_store_passes_the_suite() {
    run_suite(Arc::new(MemoryStore::open(1000, None)), "session:").await;
}

#[tokio::test]
async fn redis_store_passes_the_suite() {
    let redis = common::Redis::start();
    let store = common::open_store(
        session_sidecar::config::StoreBackend::Redis {
            url: redis.url(),
            ca_file: None,
        },
        Duration::from_millis(500),
    );
    run_suite(store, "session:").await;
    let ttl: i64 = redis
        .cli(&["PTTL", "session:many"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the TTL is the one given: {ttl}"
    );
}

#[tokio::test]
async fn memory_store_passes_the_index_suite() {
    run_index_suite(Arc::new(MemoryStore::open(1000, None)), "session:").await;
}

#[tokio::test]
async fn redis_store_passes_the_index_suite() {
    let redis = common::Redis::start();
    let store = common::open_store(
        session_sidecar::config::StoreBackend::Redis {
            url: redis.url(),
            ca_file: None,
        },
        Duration::from_millis(500),
    );
    run_index_suite(store, "session:").await;
    assert_eq!(
        redis.cli(&["ZCARD", "session:user:test"]).unwrap().trim(),
        "3",
        "the entry past its deadline pruned; those of the gone and the moved session kept \
         (a listing cannot tell them from writes in flight)"
    );
}

/// A Redis Cluster (3 masters) and a Sentinel-managed master (1 replica, 1 sentinel),
/// started by the test on free loopback ports; the same suites through `store::open`.
fn scale_store(backend: session_sidecar::config::StoreBackend) -> Arc<dyn SessionStore> {
    common::open_store(backend, Duration::from_millis(500))
}

#[tokio::test]
async fn redis_cluster_store_passes_the_suites() {
    let cluster = common::RedisCluster::start(3, 0, None);
    let store = scale_store(session_sidecar::config::StoreBackend::RedisCluster {
        nodes: cluster.nodes.iter().take(2).map(|n| n.url()).collect(),
        auth: Default::default(),
    });
    run_suite(store.clone(), "session:").await;
    run_index_suite(store, "index:").await;
    assert!(
        !cluster.key_owners("*").is_empty(),
        "the suite wrote to the cluster's masters"
    );
}

#[tokio::test]
async fn redis_sentinel_store_passes_the_suites() {
    let set = common::SentinelSet::start(1, None);
    let store = scale_store(session_sidecar::config::StoreBackend::RedisSentinel {
        sentinels: set.sentinels.iter().map(|s| s.url()).collect(),
        master_name: common::MASTER_NAME.into(),
        db: 0,
        auth: Default::default(),
        sentinel_username: None,
        sentinel_password: None,
    });
    run_suite(store.clone(), "session:").await;
    run_index_suite(store, "index:").await;
    assert_eq!(
        set.master
            .cli(&["ZCARD", "index:user:test"])
            .unwrap()
            .trim(),
        "3",
        "written to the master the sentinel names"
    );
}

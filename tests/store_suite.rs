//! One behavioural suite for every `SessionStore`, run against each implementation: the
//! memory store and Redis (a real `redis-server`). Other store kinds add themselves by
//! calling [`run_suite`].
//!
//! Guards: load of a missing key; create/load round trip with metadata; update applies sets
//! and deletes atomically and never recreates a missing session; regenerate moves the data
//! and leaves the old key dead; destroy; expiry (TTL) and its refresh; ping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use session_sidecar::protocol::Change;
use session_sidecar::store::{memory::MemoryStore, now_ms, SessionStore};

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// The suite. `prefix` keeps keys of parallel runs apart.
pub async fn run_suite(store: Arc<dyn SessionStore>, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let ttl = Duration::from_secs(60);

    store.ping().await.expect("ping");
    assert_eq!(store.load(&key("missing")).await.unwrap(), None);

    // create + load
    let now = now_ms();
    store
        .create(&key("a"), &fields(&[("n", "1"), ("s", "\"x\"")]), now, ttl)
        .await
        .unwrap();
    let rec = store.load(&key("a")).await.unwrap().expect("created");
    assert_eq!(sorted(rec.fields), fields(&[("n", "1"), ("s", "\"x\"")]));
    assert_eq!(rec.created_ms, now);
    assert_eq!(rec.touched_ms, now);

    // update: sets and deletes, metadata refreshed, creation time kept
    let change = Change {
        set: fields(&[("n", "2"), ("o", "{\"k\":[1]}")]),
        delete: vec!["s".into(), "never-there".into()],
    };
    assert!(store
        .update(&key("a"), &change, now + 5, ttl)
        .await
        .unwrap());
    let rec = store.load(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        sorted(rec.fields),
        fields(&[("n", "2"), ("o", "{\"k\":[1]}")])
    );
    assert_eq!(rec.created_ms, now);
    assert_eq!(rec.touched_ms, now + 5);

    // update never recreates a missing session
    assert!(!store
        .update(&key("ghost"), &change, now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&key("ghost")).await.unwrap(), None);

    // an empty change only refreshes
    assert!(store
        .update(&key("a"), &Change::default(), now + 9, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.load(&key("a")).await.unwrap().unwrap().touched_ms,
        now + 9
    );

    // regenerate: data moves (with the change), old key dead, creation time kept
    let change = Change {
        set: fields(&[("user", "\"alice\"")]),
        delete: vec!["o".into()],
    };
    assert!(store
        .regenerate(&key("a"), &key("b"), &change, now + 10, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&key("a")).await.unwrap(), None);
    let rec = store.load(&key("b")).await.unwrap().unwrap();
    assert_eq!(
        sorted(rec.fields),
        fields(&[("n", "2"), ("user", "\"alice\"")])
    );
    assert_eq!(rec.created_ms, now);
    assert!(!store
        .regenerate(&key("a"), &key("c"), &change, now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&key("c")).await.unwrap(), None);

    // destroy
    assert!(store.destroy(&key("b")).await.unwrap());
    assert!(!store.destroy(&key("b")).await.unwrap());
    assert_eq!(store.load(&key("b")).await.unwrap(), None);

    // expiry, and refresh pushing it out
    store
        .create(
            &key("short"),
            &fields(&[("a", "1")]),
            now_ms(),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
    store
        .create(
            &key("kept"),
            &fields(&[("a", "1")]),
            now_ms(),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store
        .update(
            &key("kept"),
            &Change::default(),
            now_ms(),
            Duration::from_millis(1000)
        )
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.load(&key("short")).await.unwrap(), None, "expired");
    assert!(
        store.load(&key("kept")).await.unwrap().is_some(),
        "refreshed"
    );
    assert!(!store
        .update(&key("short"), &Change::default(), now_ms(), ttl)
        .await
        .unwrap());

    // many fields in one write
    let many: Vec<(String, String)> = (0..500).map(|i| (format!("f{i}"), i.to_string())).collect();
    store
        .create(&key("many"), &many, now_ms(), ttl)
        .await
        .unwrap();
    assert_eq!(
        store
            .load(&key("many"))
            .await
            .unwrap()
            .unwrap()
            .fields
            .len(),
        500
    );
}

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

/// The user index part of the suite.
pub async fn run_index_suite(store: Arc<dyn SessionStore>, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let index = format!("{prefix}user:test");
    let ttl = Duration::from_secs(60);
    let now = now_ms();
    for name in ["u1", "u2", "moved"] {
        store
            .create(&key(name), &fields(&[("user_id", "\"ann\"")]), now, ttl)
            .await
            .unwrap();
        store
            .index_add(&index, &key(name), now + 60_000, now)
            .await
            .unwrap();
    }
    // A session whose user field changed is not the user's any more (and gets pruned).
    let change = Change {
        set: fields(&[("user_id", "\"ben\"")]),
        delete: vec![],
    };
    assert!(store
        .update(&key("moved"), &change, now, ttl)
        .await
        .unwrap());
    // An entry whose session is gone, and one past its deadline.
    store
        .index_add(&index, &key("gone"), now + 60_000, now)
        .await
        .unwrap();
    store
        .create(&key("old"), &fields(&[("user_id", "\"ann\"")]), now, ttl)
        .await
        .unwrap();
    store
        .index_add(&index, &key("old"), now + 1, now)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let mut found: Vec<String> = store
        .user_sessions(&index, "user_id", "\"ann\"", now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    found.sort();
    assert_eq!(found, vec![key("u1"), key("u2")]);
    store.index_remove(&index, &[key("u1")]).await.unwrap();
    let found = store
        .user_sessions(&index, "user_id", "\"ann\"", now_ms())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, key("u2"));
    assert_eq!(found[0].1.fields, fields(&[("user_id", "\"ann\"")]));
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
        "1",
        "stale entries pruned"
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
        "1",
        "written to the master the sentinel names"
    );
}

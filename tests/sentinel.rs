//! SPEC §8, `store.kind: redis-sentinel`, on real local Redis servers and sentinels started
//! by the tests on free loopback ports (down-after-milliseconds 1000, failover-timeout 2000).
//!
//! Guards: the sentinel store has the store-trait semantics; `db` is selected on the master;
//! data-node credentials (`password`) and sentinel credentials (`sentinel_password`) are
//! separate and both used, and a wrong one fails; when the master is killed the sidecar
//! follows the failover by itself (no restart, no config change), the sessions come back
//! from the promoted replica and take writes, and no request waits past `store.timeout`;
//! when the old master returns and a graceful `SENTINEL FAILOVER` moves the master back,
//! the sidecar follows again. Both gaps are printed (`sentinel failover gap`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::json;
use session_sidecar::config::{RedisAuth, StoreBackend};

const STORE_TIMEOUT_MS: u64 = 500;

fn backend_for(
    set: &SentinelSet,
    db: i64,
    data: Option<&str>,
    sentinel: Option<&str>,
) -> StoreBackend {
    StoreBackend::RedisSentinel {
        sentinels: set.sentinels.iter().map(|s| s.url()).collect(),
        master_name: MASTER_NAME.into(),
        db,
        auth: RedisAuth {
            username: None,
            password: data.map(str::to_string),
            ca_file: None,
        },
        sentinel_username: None,
        sentinel_password: sentinel.map(str::to_string),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_semantics_db_and_separate_credentials() {
    let auth = SentinelAuth {
        data: "data-secret",
        sentinel: "sentinel-secret",
    };
    let set = SentinelSet::start_with(1, None, Some(auth));
    let timeout = Duration::from_millis(STORE_TIMEOUT_MS);

    let store = open_store(
        backend_for(&set, 3, Some(auth.data), Some(auth.sentinel)),
        timeout,
    );
    check_store_semantics(store, "sentinel").await;
    let in_db = |db: &str| {
        set.master
            .cli(&["-n", db, "--scan", "--pattern", "check:*"])
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(in_db("3") > 0, "keys in store.db 3");
    assert_eq!(in_db("0"), 0);

    // Each credential is used where it belongs: swapped or missing ones fail.
    for (data, sentinel) in [
        (Some(auth.data), Some("wrong")),
        (Some(auth.data), None),
        (Some("wrong"), Some(auth.sentinel)),
        (Some(auth.sentinel), Some(auth.data)),
    ] {
        let store = open_store(backend_for(&set, 0, data, sentinel), timeout);
        assert!(
            store.ping().await.is_err(),
            "data {data:?} sentinel {sentinel:?} must fail"
        );
    }

    // Through the sidecar.
    let yaml = format!(
        "{}  db: 3\n  password: \"{}\"\n  sentinel_password: \"{}\"\n",
        set.store_yaml(),
        auth.data,
        auth.sentinel
    );
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(
        &Settings::with_store(StoreKind::Yaml(yaml)),
        &backend.addr(),
    );
    let mut client = Client::new(&sidecar);
    assert_eq!(client.set(r#"{"user":"alice"}"#).await.status, 200);
    assert_eq!(client.session().await, json!({"user": "alice"}));
    let key = session_key(client.cookie.as_ref().unwrap());
    assert_eq!(
        set.master.cli(&["-n", "3", "EXISTS", &key]).unwrap().trim(),
        "1"
    );
    let ready = reqwest::get(sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// One round: every client reads its session; client `writer` also writes. Returns
/// (index, ok, status, latency) per request.
async fn round(clients: &[Client], writer: usize) -> Vec<(usize, bool, u16, Duration)> {
    let reads = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut c)| async move {
            let start = Instant::now();
            let r = if i == writer {
                c.try_get("/", &[("x-reply-x-session-set", r#"{"w":1}"#)])
                    .await
            } else {
                c.try_get("/", &[]).await
            };
            let latency = start.elapsed();
            match r {
                Ok(r) => (
                    i,
                    r.status == 200 && r.session()["n"] == json!(i),
                    r.status,
                    latency,
                ),
                Err(_) => (i, false, 0, latency),
            }
        });
    join_all(reads).await
}

struct Gap {
    first_fail: f64,
    last_fail: f64,
    recovered: f64,
    failures: usize,
    requests: usize,
    slowest: Duration,
    statuses: std::collections::BTreeSet<u16>,
}

/// Runs rounds every ~50 ms; calls `fault` once after 500 ms; stops after 5 healthy rounds
/// that follow the fault and satisfy `settled`.
async fn measure(clients: &[Client], mut fault: impl FnMut(), settled: impl Fn() -> bool) -> Gap {
    let start = Instant::now();
    let mut at: Option<Instant> = None;
    let mut records = Vec::new();
    let mut healthy = 0;
    let mut n = 0;
    loop {
        if at.is_none() && start.elapsed() > Duration::from_millis(500) {
            fault();
            at = Some(Instant::now());
        }
        let t = at.map(|a| a.elapsed().as_secs_f64()).unwrap_or(-1.0);
        n += 1;
        let results = round(clients, n % clients.len()).await;
        let ok = results.iter().all(|r| r.1);
        for r in results {
            records.push((t, r));
        }
        if let Some(a) = at {
            if ok && a.elapsed() > Duration::from_millis(300) && settled() {
                healthy += 1;
                if healthy >= 5 {
                    break;
                }
            } else {
                healthy = 0;
            }
            assert!(
                a.elapsed() < Duration::from_secs(90),
                "the sidecar never recovered"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fails: Vec<_> = records.iter().filter(|(_, r)| !r.1).collect();
    let last_fail = fails.iter().map(|(t, _)| *t).fold(0.0, f64::max);
    Gap {
        first_fail: fails.iter().map(|(t, _)| *t).fold(f64::INFINITY, f64::min),
        last_fail,
        recovered: records
            .iter()
            .map(|(t, _)| *t)
            .filter(|&t| t > last_fail)
            .fold(f64::INFINITY, f64::min),
        failures: fails.len(),
        requests: records.len(),
        slowest: records.iter().map(|(_, r)| r.3).max().unwrap(),
        statuses: fails.iter().map(|(_, r)| r.2).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_by_the_sidecar_by_itself() {
    let mut set = SentinelSet::start(3, None);
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(
        &Settings::with_store(StoreKind::Yaml(set.store_yaml())),
        &backend.addr(),
    );
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = Client::new(&sidecar);
        assert_eq!(c.set(&json!({ "n": i }).to_string()).await.status, 200);
        clients.push(c);
    }
    set.master.cli(&["WAIT", "1", "5000"]);
    let old_port = set.master.port;
    let new_port = set.replica.port;

    // 1. The master dies; the sentinels promote the replica.
    let gap = {
        let master = &mut set.master;
        let sentinels = &set.sentinels;
        let reported = move || {
            sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                    .is_some_and(|o| o.contains(&new_port.to_string()))
            })
        };
        measure(&clients, || master.kill(), reported).await
    };
    eprintln!(
        "sentinel failover gap (master killed): requests failed in rounds started {:.2}s to {:.2}s \
         after the kill, all served again from {:.2}s; {} of {} requests failed (statuses {:?}); \
         slowest request {:?}",
        gap.first_fail, gap.last_fail, gap.recovered, gap.failures, gap.requests, gap.statuses, gap.slowest
    );
    assert!(gap.failures > 0, "the kill was noticed");
    assert!(gap.statuses.iter().all(|s| *s == 503), "{:?}", gap.statuses);
    assert!(
        gap.slowest < Duration::from_millis(STORE_TIMEOUT_MS + 700),
        "{:?}",
        gap.slowest
    );
    assert_eq!(set.replica.role().as_deref(), Some("master"));
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.set(r#"{"after":1}"#).await.status, 200);
        let s = c.session().await;
        assert_eq!(s["n"], json!(i));
        assert_eq!(s["after"], json!(1));
    }
    assert!(
        sidecar.log().contains(&format!("127.0.0.1:{new_port}")),
        "the sidecar logged the new master"
    );

    // 2. The old master returns, and is made a replica of the new one, as an operator
    //    bringing a crashed master back does (Sentinel would do the same by itself, but only
    //    after 8 to 20 s, and not at all while it is in TILT mode on a stalled machine). Then
    //    a graceful failover moves the master back.
    set.master.restart();
    set.master
        .cli(&["REPLICAOF", "127.0.0.1", &new_port.to_string()])
        .expect("REPLICAOF accepted");
    let returned = Instant::now();
    // Ready once it has synced and every sentinel lists it as a healthy replica (what
    // SENTINEL FAILOVER needs to pick it).
    let rejoined = wait_until(Duration::from_secs(90), || {
        set.master
            .info("replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up")
            && set.sentinels.iter().all(|s| {
                let m = s.sentinel_master();
                let r = s.sentinel_replica(old_port).unwrap_or_default();
                m.get("flags").map(String::as_str) == Some("master")
                    && r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
                    && r.get("master-port") == Some(&new_port.to_string())
            })
    });
    assert!(
        rejoined,
        "the old master rejoined as a replica within 90 s\n{}",
        set.describe()
    );
    eprintln!(
        "the old master was a healthy replica {:.1}s after it returned",
        returned.elapsed().as_secs_f64()
    );
    set.replica.cli(&["WAIT", "1", "5000"]);
    let gap = {
        let sentinel = &set.sentinels[0];
        let sentinels = &set.sentinels;
        let sidecar = &sidecar;
        // Settled once the sentinels name the old master again and the sidecar moved to it
        // (its second "connected" line for that address).
        let reported = move || {
            let switched = sidecar
                .log()
                .lines()
                .filter(|l| {
                    l.contains("connected to the Redis master")
                        && l.contains(&format!("127.0.0.1:{old_port}"))
                })
                .count()
                >= 2;
            switched
                && sentinels.iter().all(|s| {
                    s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                        .is_some_and(|o| o.contains(&old_port.to_string()))
                })
        };
        measure(
            &clients,
            || {
                sentinel
                    .cli(&["SENTINEL", "FAILOVER", MASTER_NAME])
                    .expect("SENTINEL FAILOVER accepted");
            },
            reported,
        )
        .await
    };
    eprintln!(
        "sentinel failover gap (graceful SENTINEL FAILOVER): {} of {} requests failed{}; slowest \
         request {:?}",
        gap.failures,
        gap.requests,
        if gap.failures > 0 {
            format!(
                " in rounds started {:.2}s to {:.2}s after the command, all served again from {:.2}s (statuses {:?})",
                gap.first_fail, gap.last_fail, gap.recovered, gap.statuses
            )
        } else {
            String::new()
        },
        gap.slowest
    );
    assert!(
        gap.slowest < Duration::from_millis(STORE_TIMEOUT_MS + 700),
        "{:?}",
        gap.slowest
    );
    assert_eq!(set.master.role().as_deref(), Some("master"));
    // Sentinel demotes the other node only seconds later (about 9 s here); until then it
    // still takes writes, which it will drop. The sidecar already writes to the new master.
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.set(r#"{"back":1}"#).await.status, 200);
        let s = c.session().await;
        assert_eq!(s["n"], json!(i));
        assert_eq!(s["back"], json!(1));
        let key = session_key(c.cookie.as_ref().unwrap());
        assert_eq!(
            set.master.cli(&["HGET", &key, "back"]).unwrap().trim(),
            "1",
            "the write reached the master the sentinels name"
        );
    }
}

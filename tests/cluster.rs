//! SPEC §8, `store.kind: redis-cluster`, on a real local Redis Cluster (3 masters, 3
//! replicas, `cluster-node-timeout 1000`, started by the tests on free loopback ports).
//!
//! Guards: the cluster store has the store-trait semantics (load / create / update /
//! regenerate / destroy / ping, expiry, concurrent field writes); sessions spread over the
//! slots of every master; `regenerate` across slots kills the old cookie and keeps the data;
//! the number of Redis connections per node stays bounded under 100 concurrent clients; when
//! a master is killed, sessions on the other masters never stop, the failed master's sessions
//! come back from its replica (data intact, writable), and no request waits past
//! `store.timeout` meanwhile. The measured gap is printed (`cluster failover gap`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::json;
use session_sidecar::config::{RedisAuth, StoreBackend};

const STORE_TIMEOUT_MS: u64 = 500;

fn sidecar_on(cluster: &RedisCluster, backend: &Backend) -> Sidecar {
    let mut settings = Settings::with_store(StoreKind::Yaml(cluster.store_yaml()));
    settings.store_timeout = "500ms";
    Sidecar::start(&settings, &backend.addr())
}

/// `n` clients, each with a session `{"n": i}`.
async fn sessions(sidecar: &Sidecar, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::new(sidecar);
        let r = c.set(&json!({ "n": i }).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(c.cookie.is_some());
        clients.push(c);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_semantics_slots_regenerate_and_bounded_connections() {
    let cluster = RedisCluster::start(3, 1, None);
    {
        let nodes = cluster.nodes.iter().take(2).map(|n| n.url()).collect();
        let store = open_store(
            StoreBackend::RedisCluster {
                nodes,
                auth: RedisAuth::default(),
            },
            Duration::from_millis(STORE_TIMEOUT_MS),
        );
        check_store_semantics(store, "cluster").await;
    }

    let backend = Backend::start().await;
    let sidecar = sidecar_on(&cluster, &backend);
    let mut clients = sessions(&sidecar, 60).await;
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.session().await, json!({ "n": i }));
    }

    // Spread over the slots of every master.
    let owners = cluster.key_owners("session:*");
    assert_eq!(owners.len(), 60);
    let mut per_master: HashMap<usize, usize> = HashMap::new();
    for m in owners.values() {
        *per_master.entry(*m).or_default() += 1;
    }
    assert_eq!(
        per_master.len(),
        3,
        "sessions on every master: {per_master:?}"
    );
    assert!(per_master.values().all(|&n| n >= 5), "{per_master:?}");

    // Regenerate across slots: new cookie, data kept, old cookie dead.
    let mut crossed_nodes = 0;
    for (i, c) in clients.iter_mut().enumerate().take(12) {
        let old_cookie = c.cookie.clone().unwrap();
        let old_key = session_key(&old_cookie);
        let r = c
            .get(
                "/",
                &[
                    ("x-reply-x-session-action", "regenerate"),
                    ("x-reply-x-session-set", r#"{"login":true}"#),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let new_cookie = c.cookie.clone().unwrap();
        assert_ne!(new_cookie, old_cookie);
        assert_eq!(c.session().await, json!({ "n": i, "login": true }));
        let mut stale = Client::new(&sidecar);
        stale.cookie = Some(old_cookie);
        let r = stale.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.session(), json!({}), "the old ID is dead");
        let owners = cluster.key_owners("session:*");
        assert!(!owners.contains_key(&old_key), "old key removed");
        let new_owner = owners[&session_key(&new_cookie)];
        if new_owner != owners.get(&old_key).copied().unwrap_or(usize::MAX) {
            crossed_nodes += 1;
        }
    }
    assert!(
        crossed_nodes > 0,
        "some regenerates moved a session to another node"
    );
    assert_eq!(
        cluster.key_owners("session:*").len(),
        60,
        "regenerate neither loses nor duplicates"
    );

    // Bounded connections: 100 concurrent clients, each node sees a handful of connections.
    let mut more = sessions(&sidecar, 40).await;
    more.extend(clients.iter().cloned());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut max = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for port in &ports {
                    let out = std::process::Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "INFO", "clients"])
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    if let Some(n) = text
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("connected_clients:"))
                        .and_then(|v| v.parse::<usize>().ok())
                    {
                        max = max.max(n);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    };
    let start = Instant::now();
    let load = more.into_iter().enumerate().map(|(i, mut c)| async move {
        let mut ok = 0;
        while start.elapsed() < Duration::from_secs(3) {
            let r = c.set(&json!({ "hit": i }).to_string()).await;
            assert_eq!(r.status, 200);
            ok += 1;
        }
        ok
    });
    let done: usize = join_all(load).await.into_iter().sum();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_clients = sampler.await.unwrap();
    eprintln!("cluster: {done} writes by 100 concurrent clients in 3 s; max connected_clients on any node: {max_clients} (incl. redis-cli)");
    assert!(
        max_clients <= 4,
        "connections per node bounded, saw {max_clients}"
    );
}

/// What [`kill_a_master`] saw: per request (round start since the kill, session index, ok,
/// status, latency).
struct Failover {
    cluster: RedisCluster,
    clients: Vec<Client>,
    owner_of: Vec<usize>,
    victim: usize,
    replica: usize,
    records: Vec<(f64, usize, bool, u16, Duration)>,
    sidecar: Sidecar,
    _backend: Backend,
}

/// Failed rounds of `records` (first, last) and the first healthy round after the last failure.
fn window(
    records: &[&(f64, usize, bool, u16, Duration)],
    all: &[(f64, usize, bool, u16, Duration)],
) -> (f64, f64, f64) {
    let first = records.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let last = records.iter().map(|r| r.0).fold(0.0, f64::max);
    let recovered = all
        .iter()
        .map(|r| r.0)
        .filter(|&t| t > last)
        .fold(f64::INFINITY, f64::min);
    (first, last, recovered)
}

/// 60 sessions over a 3+3 cluster; kills the master holding most of them and reads every
/// session concurrently every ~50 ms until all have been served 5 rounds in a row.
async fn kill_a_master(require_full_coverage: bool) -> Failover {
    let mut cluster = RedisCluster::start_with(3, 1, None, require_full_coverage);
    let backend = Backend::start().await;
    let sidecar = sidecar_on(&cluster, &backend);
    let clients = sessions(&sidecar, 60).await;
    cluster.wait_replicated();

    let owners = cluster.key_owners("session:*");
    let owner_of: Vec<usize> = clients
        .iter()
        .map(|c| owners[&session_key(c.cookie.as_ref().unwrap())])
        .collect();
    let mut per_master: HashMap<usize, usize> = HashMap::new();
    for m in &owner_of {
        *per_master.entry(*m).or_default() += 1;
    }
    let victim = *per_master.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let replica = cluster
        .replica_of(victim)
        .expect("the victim has a replica");

    let mut records: Vec<(f64, usize, bool, u16, Duration)> = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let test_start = Instant::now();
    let mut healthy_rounds_after = 0;
    loop {
        if killed_at.is_none() && test_start.elapsed() > Duration::from_millis(500) {
            cluster.nodes[victim].kill();
            killed_at = Some(Instant::now());
        }
        let t = killed_at.map(|k| k.elapsed().as_secs_f64()).unwrap_or(-1.0);
        let round = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut c)| async move {
                let start = Instant::now();
                let r = c.try_get("/", &[]).await;
                let latency = start.elapsed();
                match r {
                    Ok(r) => (
                        i,
                        r.status == 200 && r.session() == json!({ "n": i }),
                        r.status,
                        latency,
                    ),
                    Err(_) => (i, false, 0, latency),
                }
            });
        let results = join_all(round).await;
        let all_ok = results.iter().all(|r| r.1);
        for (i, ok, status, latency) in results {
            records.push((t, i, ok, status, latency));
        }
        if let Some(k) = killed_at {
            if all_ok && k.elapsed() > Duration::from_millis(300) {
                healthy_rounds_after += 1;
                if healthy_rounds_after >= 5 {
                    break;
                }
            } else {
                healthy_rounds_after = 0;
            }
            if k.elapsed() > Duration::from_secs(30) {
                let survivor = cluster.masters()[0];
                let failing: Vec<_> = records.iter().rev().take(60).filter(|r| !r.2).collect();
                panic!(
                    "not all sessions served 30 s after the kill; last round's failures {failing:?}\n\
                     CLUSTER NODES: {}\nCLUSTER INFO: {}\nsidecar log tail: {}",
                    cluster.nodes[survivor].cli(&["CLUSTER", "NODES"]).unwrap_or_default(),
                    cluster.nodes[survivor].cli(&["CLUSTER", "INFO"]).unwrap_or_default(),
                    sidecar.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Failover {
        cluster,
        clients,
        owner_of,
        victim,
        replica,
        records,
        sidecar,
        _backend: backend,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_other_masters_never_stop_and_replica_takes_over() {
    let f = kill_a_master(false).await;
    let (owner_of, victim, records) = (&f.owner_of, f.victim, &f.records);
    let on_victim = owner_of.iter().filter(|&&m| m == victim).count();
    let others_failed: Vec<_> = records
        .iter()
        .filter(|r| owner_of[r.1] != victim && !r.2)
        .collect();
    let victim_failures: Vec<_> = records
        .iter()
        .filter(|r| owner_of[r.1] == victim && !r.2)
        .collect();
    let (first_fail, last_fail, recovered) = window(&victim_failures, records);
    let max_latency = records.iter().map(|r| r.4).max().unwrap();
    let statuses: std::collections::BTreeSet<u16> = victim_failures.iter().map(|r| r.3).collect();
    eprintln!(
        "cluster failover gap: requests for sessions on the killed master ({on_victim} of 60) failed \
         in rounds started {first_fail:.2}s to {last_fail:.2}s after the kill, all served again from \
         {recovered:.2}s (statuses {statuses:?}); {} requests for sessions on the other masters, \
         {} failed; slowest request {max_latency:?}",
        records.iter().filter(|r| owner_of[r.1] != victim).count(),
        others_failed.len(),
    );
    // redis-rs 1.8's cluster driver sometimes deadlocks in a slot refresh during the
    // failover; then every command times out until the sidecar's watchdog rebuilds the
    // client (`store::redis::cluster`). That is the only way other masters' sessions may fail.
    if !others_failed.is_empty() {
        let (o_first, o_last, _) = window(&others_failed, records);
        let rebuilt = f
            .sidecar
            .log()
            .contains("rebuilding the cluster connection");
        eprintln!(
            "NOTE: {} requests for sessions on the other masters failed, in rounds {o_first:.2}s \
             to {o_last:.2}s (watchdog rebuilt the cluster client: {rebuilt})",
            others_failed.len()
        );
        assert!(
            rebuilt,
            "sessions on other masters stop only while the client is wedged: {others_failed:?}"
        );
        assert!(
            o_last - o_first < 3.0,
            "the watchdog ends a wedge within about a second: {o_first:.2}..{o_last:.2}"
        );
    }
    assert!(!victim_failures.is_empty(), "the kill was noticed");
    assert!(
        statuses.iter().all(|s| *s == 503),
        "fail_closed answers 503: {statuses:?}"
    );
    assert!(
        max_latency < Duration::from_millis(STORE_TIMEOUT_MS + 700),
        "no request waits past store.timeout (+ margin): {max_latency:?}"
    );

    // The replica is the master now, holds the sessions, and takes writes.
    let replica = f.replica;
    assert_eq!(f.cluster.nodes[replica].role().as_deref(), Some("master"));
    assert_eq!(f.cluster.nodes[replica].keys("session:*").len(), on_victim);
    let mut moved = 0;
    for (i, c) in f.clients.iter().enumerate() {
        if owner_of[i] != victim {
            continue;
        }
        let mut c = c.clone();
        let r = c.set(r#"{"after":"failover"}"#).await;
        assert_eq!(r.status, 200);
        assert_eq!(c.session().await, json!({ "n": i, "after": "failover" }));
        let key = session_key(c.cookie.as_ref().unwrap());
        assert_eq!(
            f.cluster.nodes[replica]
                .cli(&["HGET", &key, "after"])
                .unwrap()
                .trim(),
            "\"failover\""
        );
        moved += 1;
    }
    assert_eq!(moved, on_victim);
}

/// For the docs: the same failure with Redis's default `cluster-require-full-coverage yes`,
/// where every shard refuses queries (CLUSTERDOWN) while a failed master's slots are
/// uncovered. Prints how long sessions on the *other* masters failed.
/// Run: `cargo test --test cluster -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for the docs; about 15 s"]
async fn master_killed_with_full_coverage_required_stops_every_shard_briefly() {
    let f = kill_a_master(true).await;
    let (owner_of, victim, records) = (&f.owner_of, f.victim, &f.records);
    let others: Vec<_> = records
        .iter()
        .filter(|r| owner_of[r.1] != victim && !r.2)
        .collect();
    let mine: Vec<_> = records
        .iter()
        .filter(|r| owner_of[r.1] == victim && !r.2)
        .collect();
    let (o_first, o_last, o_back) = window(&others, records);
    let (v_first, v_last, v_back) = window(&mine, records);
    eprintln!(
        "cluster failover with cluster-require-full-coverage yes: sessions on the killed master \
         failed in rounds {v_first:.2}s..{v_last:.2}s (back from {v_back:.2}s); sessions on the \
         OTHER masters failed in rounds {o_first:.2}s..{o_last:.2}s (back from {o_back:.2}s), \
         {} of {} requests",
        others.len(),
        records.iter().filter(|r| owner_of[r.1] != victim).count()
    );
}

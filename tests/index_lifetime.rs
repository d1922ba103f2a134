//! SPEC §9's index rule and §4's "metadata read back from the store is input", through the
//! real binary with a real Redis.
//!
//! Guards: a user index key never has a TTL above `idle_timeout` and slides with the
//! sessions it lists, so `destroy-all` still finds a session kept alive by use for longer
//! than `idle_timeout`, and nothing of a user is left once the last session idles out;
//! `__` fields that are missing, non-numeric, negative or absurdly large make a session
//! read as no session (a miss), in the proxy and in the admin API, never a panic; so do a
//! session key of another type and index members that are not the sidecar's, which never make
//! a listing or a logout fail.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-for-tests-0123456789";
const IDLE_MS: i64 = 2000;

fn settings(redis: &Redis, idle: &'static str) -> Settings {
    let mut s = Settings::redis(redis);
    s.idle_timeout = idle;
    s.session_extra = "  user_field: user_id\n".into();
    s.extra = format!("admin:\n  token: \"{TOKEN}\"\n");
    s
}

async fn login(sidecar: &Sidecar, user: &str) -> Client {
    let mut c = Client::new(sidecar);
    let set = json!({ "user_id": user }).to_string();
    let r = c.set(&set).await;
    assert_eq!(r.status, 200);
    assert!(c.cookie.is_some());
    c
}

fn index_keys(redis: &Redis) -> Vec<String> {
    redis.keys("session:user:*")
}

fn pttl(redis: &Redis, key: &str) -> i64 {
    redis
        .cli(&["PTTL", key])
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-3)
}

async fn admin_get(sidecar: &Sidecar, user: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(sidecar.admin_url(&format!("/sessions?user={user}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_index_ttl_stays_within_idle_timeout_and_slides_with_its_sessions() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis, "2s"), &backend.addr());
    let mut phone = login(&sidecar, "alice").await;
    let mut laptop = login(&sidecar, "alice").await;
    let index = index_keys(&redis);
    assert_eq!(index.len(), 1, "one index for alice: {index:?}");
    let index = &index[0];

    // Both devices keep using their sessions for more than twice idle_timeout.
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_millis(5000) {
        assert_eq!(phone.session().await["user_id"], "alice");
        assert_eq!(laptop.session().await["user_id"], "alice");
        let left = pttl(&redis, index);
        assert!(
            left > 0 && left <= IDLE_MS,
            "index TTL {left} ms at {:?}: never above idle_timeout",
            start.elapsed()
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(checks >= 10);

    // destroy-all from the laptop still finds the phone's session, alive for > idle_timeout.
    let r = laptop.action("destroy-all").await;
    assert_eq!(r.status, 200);
    assert_eq!(phone.session().await, json!({}), "the phone is logged out");
    assert!(redis.keys("session:*").is_empty(), "{:?}", redis.keys("*"));
}

#[tokio::test]
async fn nothing_of_a_user_is_left_after_the_last_session_idles_out() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis, "1s"), &backend.addr());
    let _a = login(&sidecar, "bob").await;
    let _b = login(&sidecar, "bob").await;
    assert_eq!(index_keys(&redis).len(), 1);
    for key in redis.keys("session:*") {
        let left = pttl(&redis, &key);
        assert!(left > 0 && left <= 1000, "{key}: TTL {left} ms");
    }
    assert!(
        wait_until(Duration::from_secs(4), || redis
            .keys("session:*")
            .is_empty()),
        "left behind: {:?}",
        redis.keys("*")
    );
}

/// Writes a metadata field of the client's session directly in Redis.
fn corrupt(redis: &Redis, client: &Client, args: &[&str]) {
    let key = session_key(client.cookie.as_deref().unwrap());
    let mut cmd = vec![args[0], key.as_str()];
    cmd.extend_from_slice(&args[1..]);
    assert!(redis.cli(&cmd).is_some(), "redis-cli {cmd:?}");
}

#[tokio::test]
async fn unreadable_metadata_is_no_session_never_a_panic() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis, "30m"), &backend.addr());
    let cases: [&[&str]; 6] = [
        &["HSET", "__created", "18446744073709551615"],
        &["HSET", "__touched", "18446744073709551615"],
        &["HSET", "__created", "-5"],
        &["HSET", "__created", "yesterday"],
        &["HDEL", "__created"],
        &["HSET", "__touched", "1e999"],
    ];
    for case in cases {
        let mut client = login(&sidecar, "carol").await;
        corrupt(&redis, &client, case);
        let misses = sidecar
            .metric("sidecar_session_loads_total{result=\"miss\"}")
            .await;
        let r = client.get("/", &[]).await;
        assert_eq!(r.status, 200, "{case:?}");
        assert_eq!(r.session(), json!({}), "{case:?}: treated as no session");
        assert!(
            sidecar
                .metric("sidecar_session_loads_total{result=\"miss\"}")
                .await
                >= misses + 1.0,
            "{case:?}: counted as a miss"
        );
        // The admin API answers (no panic, no dropped connection) and lists no session
        // with such metadata.
        let (status, body) = admin_get(&sidecar, "carol").await;
        assert_eq!(status, 200, "{case:?}: {body}");
        assert_eq!(body["count"], 0, "{case:?}: {body}");
        // A logout everywhere still ends it: it names the user.
        let resp = reqwest::Client::new()
            .delete(sidecar.admin_url("/sessions?user=carol"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{case:?}");
        assert!(
            redis.keys("session:*").is_empty(),
            "{case:?}: {:?}",
            redis.keys("session:*")
        );
    }
    assert!(
        sidecar.log().contains("unreadable session"),
        "the first one is logged"
    );
    assert_eq!(
        sidecar.log().matches("unreadable session").count(),
        1,
        "logged once, not once per request"
    );
}

/// Keys under the prefix that the sidecar did not write as they are: a session key holding a
/// string, an index member that is not UTF-8, an index member naming a string key, a user
/// index holding a string. Each is no session: a miss for the proxy (not a 503 until the key
/// expires), skipped by the admin API and by a logout, which still end the user's real
/// sessions; and a user's sessions still take writes.
#[tokio::test]
async fn keys_of_another_type_and_foreign_index_members_are_no_session() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis, "30m"), &backend.addr());
    let mut broken = login(&sidecar, "dave").await;
    let mut real = login(&sidecar, "dave").await;
    let key = session_key(broken.cookie.as_deref().unwrap());
    assert!(redis.cli(&["DEL", &key]).is_some());
    assert!(redis.cli(&["SET", &key, "not a hash"]).is_some());
    let r = broken.get("/", &[]).await;
    assert_eq!(r.status, 200, "a miss, not a store failure");
    assert_eq!(r.session(), json!({}));

    let index = user_index_key(&json!("dave").to_string());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let far = i64::MAX / 2;
    let _: i64 = redis::cmd("ZADD")
        .arg(&index)
        .arg(far)
        .arg(&b"\xff\xfe not utf-8"[..])
        .query(&mut conn)
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(&index)
        .arg(far)
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    let (status, body) = admin_get(&sidecar, "dave").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "only the real session: {body}");
    let resp = reqwest::Client::new()
        .delete(sidecar.admin_url("/sessions?user=dave"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["destroyed"], 1, "{body}");
    assert_eq!(real.session().await, json!({}), "logged out");

    // A user index replaced by a string: the user's sessions still take writes (the session
    // is written; only its index entry cannot be).
    let mut erin = login(&sidecar, "erin").await;
    let index = user_index_key(&json!("erin").to_string());
    assert!(redis.cli(&["DEL", &index]).is_some());
    assert!(redis.cli(&["SET", &index, "not an index"]).is_some());
    let r = erin.set(r#"{"cart":[1]}"#).await;
    assert_eq!(r.status, 200, "the write is saved and answered as such");
    assert_eq!(
        erin.session().await,
        json!({"user_id": "erin", "cart": [1]})
    );
}

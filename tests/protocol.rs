//! SPEC §4, the header protocol, through the real binary with a real Redis and a real app.
//!
//! Guards: lazy creation; exactly one `X-Session`; client copies of `X-Session*` stripped in
//! every spelling; the session cookie hidden from the app; set/merge/delete semantics with
//! types; several `X-Session-Set` headers in order; regenerate and destroy; rejected sets
//! applied not at all; ASCII-only encoding; hashed store keys; forged, tampered and
//! expired cookies never adopted; secret rotation; instructions never reaching the client;
//! the several `Cookie` fields of an HTTP/2 request reaching the app as one header.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

async fn setup() -> (Redis, Backend, Sidecar) {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    (redis, backend, sidecar)
}

fn session_keys(redis: &Redis) -> Vec<String> {
    redis.keys("session:*")
}

#[tokio::test]
async fn anonymous_traffic_gets_empty_session_no_cookie_and_no_store_write() {
    let (redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    for _ in 0..3 {
        let r = client.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["x_session_raw"], "{}");
        assert_eq!(r.body["x_session_count"], 1);
        assert!(r.set_cookies().is_empty());
    }
    assert!(session_keys(&redis).is_empty());
    let r = client.action("regenerate").await;
    assert!(
        r.set_cookies().is_empty(),
        "regenerate without a session creates nothing"
    );
    let r = client.action("destroy").await;
    assert!(r.set_cookies().is_empty());
    assert!(session_keys(&redis).is_empty());
}

#[tokio::test]
async fn first_set_creates_a_session_and_fields_come_back_with_their_types() {
    let (redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    let fields = json!({
        "s": "text", "i": 42, "f": 1.5, "neg": -7, "big": 123456789012345678901234567890u128,
        "t": true, "fa": false, "arr": [1, "two", null, {"x": []}], "obj": {"k": {"z": [1.25e10]}}
    });
    let r = client.set(&fields.to_string()).await;
    assert_eq!(r.status, 200);
    let set_cookie = r.set_cookies();
    assert_eq!(set_cookie.len(), 1);
    for attr in ["sid=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie[0].contains(attr), "{set_cookie:?}");
    }
    assert!(r.header("cache-control").unwrap().contains("private"));
    assert!(client.cookie.is_some());
    let seen = client.get("/", &[]).await;
    assert_eq!(seen.session(), fields);
    assert!(
        seen.set_cookies().is_empty(),
        "a plain read sends no Set-Cookie"
    );
    assert_eq!(session_keys(&redis).len(), 1);
}

#[tokio::test]
async fn null_deletes_objects_replace_whole_and_headers_apply_in_order() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1,"b":{"x":1,"y":2},"c":"keep"}"#).await;
    client.set(r#"{"a":null,"b":{"z":3}}"#).await;
    assert_eq!(client.session().await, json!({"b": {"z": 3}, "c": "keep"}));
    client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"n":1,"m":1}"#),
                ("x-reply-x-session-set", r#"{"n":2}"#),
                ("x-reply-x-session-set", r#"{"m":null}"#),
            ],
        )
        .await;
    assert_eq!(
        client.session().await,
        json!({"b": {"z": 3}, "c": "keep", "n": 2})
    );
}

#[tokio::test]
async fn client_copies_of_session_headers_are_stripped_in_every_spelling() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    let spoofs = [
        ("X-Session", r#"{"admin":true}"#),
        ("x_session", r#"{"admin":true}"#),
        ("X_SESSION", r#"{"admin":true}"#),
        ("X-Session-Set", r#"{"admin":true}"#),
        ("x_session_set", r#"{"admin":true}"#),
        ("X-Session-Action", "destroy"),
        ("X_Session_Action", "destroy"),
        ("X-Session-Signature", "t=1,v1=00"),
        ("x_session_signature", "t=1,v1=00"),
    ];
    let r = client.get("/", &spoofs).await;
    assert_eq!(r.body["x_session_count"], 1);
    assert_eq!(r.body["x_session_raw"], "{}");
    let names: Vec<String> = r.body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h[0].as_str()
                .unwrap()
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .filter(|n| n.starts_with("x-session"))
        .collect();
    assert_eq!(
        names,
        vec!["x-session"],
        "only the sidecar's own X-Session reaches the app"
    );

    // With a real session too: the spoofed value never replaces it.
    client.set(r#"{"user":"alice"}"#).await;
    let r = client.get("/", &spoofs).await;
    assert_eq!(r.body["x_session_count"], 1);
    assert_eq!(r.session(), json!({"user": "alice"}));
}

#[tokio::test]
async fn instructions_never_reach_the_client() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"a":1}"#),
                ("x-reply-x-session-action", "regenerate"),
                ("x-reply-x_session_set", r#"{"b":1}"#),
                ("x-reply-x-session", r#"{"echo":1}"#),
            ],
        )
        .await;
    for name in r.headers.keys() {
        let n = name.as_str().replace('_', "-");
        assert!(!n.starts_with("x-session"), "{name} reached the client");
    }
    assert_eq!(
        client.session().await,
        json!({"a": 1}),
        "only the hyphen spelling is an instruction"
    );
}

#[tokio::test]
async fn session_cookie_is_hidden_from_the_app_and_other_cookies_pass_unchanged() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let cookie = client.cookie.clone().unwrap();
    let mut raw = Client::new(&sidecar);
    let r = raw
        .get(
            "/",
            &[("cookie", &format!("theme=dark; sid={cookie}; lang=en"))],
        )
        .await;
    assert_eq!(r.session(), json!({"a": 1}));
    assert_eq!(r.body["cookie"], json!(["theme=dark; lang=en"]));
    // HTTP/2 browsers send several cookie headers: all are read.
    let r = raw
        .get(
            "/",
            &[
                ("cookie", "theme=dark"),
                ("cookie", &format!("sid={cookie}")),
            ],
        )
        .await;
    assert_eq!(r.session(), json!({"a": 1}));
    assert_eq!(r.body["cookie"], json!(["theme=dark"]));
    // Only the session cookie: no Cookie header left at all.
    let r = raw.get("/", &[("cookie", &format!("sid={cookie}"))]).await;
    assert_eq!(r.body["cookie"], json!([]));
}

/// One GET over h2c (HTTP/2 with prior knowledge, no TLS) with a real HTTP/2 client (hyper);
/// each `(name, value)` is a header field of its own, as browsers send `cookie` over HTTP/2.
async fn h2c_get(port: u16, headers: &[(&str, &str)]) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::get(format!("http://127.0.0.1:{port}/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = http_body_util::Empty::<hyper::body::Bytes>::new();
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn http2_cookie_fields_reach_the_app_as_one_header_with_or_without_the_session() {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let session = format!("{COOKIE}={}", client.cookie.clone().unwrap());

    // RFC 9113 §8.2.3: joined with "; " before the HTTP/1.1 hop.
    let (status, seen) = h2c_get(sidecar.port, &[("cookie", "a=1"), ("cookie", "b=2")]).await;
    assert_eq!(status, 200);
    assert_eq!(seen["cookie"], json!(["a=1; b=2"]), "{seen}");
    assert_eq!(seen["x_session"], json!({}));

    let (status, seen) = h2c_get(
        sidecar.port,
        &[("cookie", "a=1"), ("cookie", &session), ("cookie", "b=2")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen["cookie"], json!(["a=1; b=2"]), "{seen}");
    assert_eq!(seen["x_session"], json!({"a": 1}));

    let (_, seen) = h2c_get(sidecar.port, &[("cookie", "a=1;  b=2")]).await;
    assert_eq!(
        seen["cookie"],
        json!(["a=1;  b=2"]),
        "one field passes unchanged"
    );
}

#[tokio::test]
async fn tampered_forged_and_unsigned_cookies_go_on_as_anonymous_and_are_counted() {
    let (_redis, backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let good = client.cookie.clone().unwrap();
    let mut tampered = good.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (id_part, _) = good.split_once('.').unwrap();
    let cases = [
        (tampered.clone(), "malformed_or_bad"),
        (format!("{id_part}.{}", "A".repeat(43)), "bad_signature"),
        (id_part.to_string(), "malformed"),
        (good[..good.len() - 3].to_string(), "malformed"),
        ("garbage".to_string(), "malformed"),
        (String::new(), "malformed"),
    ];
    let before_bad = sidecar
        .metric("sidecar_cookies_rejected_total{reason=\"bad_signature\"}")
        .await;
    let before_malformed = sidecar
        .metric("sidecar_cookies_rejected_total{reason=\"malformed\"}")
        .await;
    for (value, _) in &cases {
        let mut c = Client::new(&sidecar);
        let r = c
            .get("/", &[("cookie", &format!("sid={value}; other=1"))])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["x_session_raw"], "{}",
            "cookie {value:?} was accepted"
        );
        assert_eq!(
            r.body["cookie"],
            json!(["other=1"]),
            "the bad cookie is not forwarded"
        );
    }
    let bad = sidecar
        .metric("sidecar_cookies_rejected_total{reason=\"bad_signature\"}")
        .await
        - before_bad;
    let malformed = sidecar
        .metric("sidecar_cookies_rejected_total{reason=\"malformed\"}")
        .await
        - before_malformed;
    assert_eq!(bad + malformed, cases.len() as f64);
    assert!(
        bad >= 1.0 && malformed >= 4.0,
        "bad={bad} malformed={malformed}"
    );
    assert_eq!(
        backend.hits.load(std::sync::atomic::Ordering::SeqCst),
        1 + cases.len()
    );
}

#[tokio::test]
async fn made_up_or_dead_ids_are_never_adopted() {
    let (redis, _backend, sidecar) = setup().await;
    // A well-formed but unknown (client-made) value: a new ID is issued for the new session.
    let mut attacker = Client::new(&sidecar);
    attacker.set(r#"{"x":1}"#).await;
    let real = attacker.cookie.clone().unwrap();
    attacker.action("destroy").await;
    assert!(attacker.cookie.is_none());
    // Replay the destroyed session's cookie and write: the sidecar must mint a fresh ID.
    let mut replay = Client::new(&sidecar);
    replay.cookie = Some(real.clone());
    let r = replay.get("/", &[]).await;
    assert_eq!(r.body["x_session_raw"], "{}");
    let expired_before = sidecar
        .metric("sidecar_cookies_rejected_total{reason=\"expired\"}")
        .await;
    assert!(expired_before >= 1.0);
    replay.set(r#"{"y":2}"#).await;
    let fresh = replay.cookie.clone().unwrap();
    assert_ne!(fresh, real);
    assert_eq!(replay.session().await, json!({"y": 2}));
    let mut old = Client::new(&sidecar);
    old.cookie = Some(real);
    assert_eq!(old.session().await, json!({}));
    assert_eq!(session_keys(&redis).len(), 1);
}

#[tokio::test]
async fn regenerate_keeps_data_and_kills_the_old_id_at_once() {
    let (redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"cart":[1,2]}"#).await;
    let old_cookie = client.cookie.clone().unwrap();
    let old_keys = session_keys(&redis);
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"user":"alice"}"#),
                ("x-reply-x-session-action", "regenerate"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies().len(), 1);
    let new_cookie = client.cookie.clone().unwrap();
    assert_ne!(old_cookie, new_cookie);
    assert_eq!(
        client.session().await,
        json!({"cart": [1, 2], "user": "alice"})
    );
    let new_keys = session_keys(&redis);
    assert_eq!(new_keys.len(), 1);
    assert_ne!(new_keys, old_keys);
    let mut old = Client::new(&sidecar);
    old.cookie = Some(old_cookie);
    assert_eq!(old.session().await, json!({}));
    assert_eq!(
        sidecar.metric("sidecar_sessions_regenerated_total").await,
        1.0
    );
}

#[tokio::test]
async fn destroy_expires_the_cookie_deletes_the_key_and_wins_over_sets() {
    let (redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"alice"}"#).await;
    let cookie = client.cookie.clone().unwrap();
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"more":1}"#),
                ("x-reply-x-session-action", "destroy"),
            ],
        )
        .await;
    let sc = r.set_cookies();
    assert_eq!(sc.len(), 1);
    assert!(
        sc[0].starts_with("sid=;") && sc[0].contains("Max-Age=0"),
        "{sc:?}"
    );
    assert!(session_keys(&redis).is_empty());
    let mut old = Client::new(&sidecar);
    old.cookie = Some(cookie);
    assert_eq!(old.session().await, json!({}));
    assert_eq!(
        sidecar
            .metric("sidecar_sessions_destroyed_total{reason=\"app\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn invalid_sets_are_rejected_whole_and_the_response_still_arrives() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.max_bytes = 40;
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let cases: [(&[&str], &str); 5] = [
        (&[r#"{"b":2}"#, "[1,2]"], "malformed"),
        (&[r#"{"b":2}"#, "{not json"], "malformed"),
        (&[r#"{"b":2,"":3}"#], "malformed"),
        (&[r#"{"b":2}"#, r#"{"__created":0}"#], "reserved_key"),
        (&[r#"{"b":"0123456789012345678901234567890"}"#], "too_large"),
    ];
    for (headers, reason) in cases {
        let before = sidecar
            .metric(&format!(
                "sidecar_session_set_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await;
        let hs: Vec<(&str, &str)> = headers
            .iter()
            .map(|h| ("x-reply-x-session-set", *h))
            .collect();
        let r = client.get("/", &hs).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["path"], "/",
            "the app's response still reaches the client"
        );
        assert_eq!(client.session().await, json!({"a": 1}), "case {headers:?}");
        let after = sidecar
            .metric(&format!(
                "sidecar_session_set_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert_eq!(after, before + 1.0, "{reason}");
    }
    // max_bytes is measured on the compact JSON the app receives: {"a":1,"b":"..."} = 40.
    let value = "x".repeat(40 - r#"{"a":1,"b":""}"#.len());
    client.set(&format!(r#"{{"b":"{value}"}}"#)).await;
    assert_eq!(client.session().await["b"], json!(value));
    assert!(
        client.get("/", &[]).await.body["x_session_raw"]
            .as_str()
            .unwrap()
            .len()
            == 40
    );
    // Escaping counts: "é" is 6 bytes as \u00e9.
    client.set(r#"{"b":null}"#).await;
    let before = sidecar
        .metric("sidecar_session_set_rejected_total{reason=\"too_large\"}")
        .await;
    client
        .set(&format!(r#"{{"b":"{}"}}"#, "\u{e9}".repeat(5)))
        .await;
    assert_eq!(
        sidecar
            .metric("sidecar_session_set_rejected_total{reason=\"too_large\"}")
            .await,
        before + 1.0
    );
    // Nothing anonymous is created by a rejected set.
    let mut anon = Client::new(&sidecar);
    anon.get("/", &[("x-reply-x-session-set", "[]")]).await;
    assert!(anon.cookie.is_none());
}

#[tokio::test]
async fn non_ascii_and_control_characters_are_escaped_and_round_trip() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    let value = "h\u{e9}llo\r\nSet-Cookie: x=1\u{0}\u{7f}\u{1f600}\"\\";
    // The app sends UTF-8 as is (obs-text) and escapes what a header cannot carry.
    let set = json!({ "s": value, "k\u{e9}y": 1 })
        .to_string()
        .replace('\u{7f}', "\\u007f");
    let r = client.get("/", &[("x-reply-x-session-set", &set)]).await;
    assert_eq!(r.status, 200);
    let r = client.get("/", &[]).await;
    let raw = r.body["x_session_raw"].as_str().unwrap();
    assert!(raw.bytes().all(|b| (0x20..0x7f).contains(&b)), "{raw:?}");
    assert!(raw.contains("\\u007f") && raw.contains("\\r\\n"), "{raw}");
    assert_eq!(r.session(), json!({ "s": value, "k\u{e9}y": 1 }));
}

#[tokio::test]
async fn store_keys_are_hashed_values_are_json_and_foreign_writes_show_up() {
    let (redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"n":1,"s":"x"}"#).await;
    let cookie = client.cookie.clone().unwrap();
    let (id_part, _) = cookie.split_once('.').unwrap();
    let keys = session_keys(&redis);
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    let digest = key.strip_prefix("session:").unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!key.contains(id_part));
    assert_eq!(redis.cli(&["HGET", key, "n"]).unwrap().trim(), "1");
    assert_eq!(redis.cli(&["HGET", key, "s"]).unwrap().trim(), "\"x\"");
    assert!(redis
        .cli(&["HGET", key, "__created"])
        .unwrap()
        .trim()
        .parse::<u64>()
        .is_ok());
    // Another process (another sidecar, an admin script) writes a field: it shows up.
    redis
        .cli(&["HSET", key, "from_elsewhere", "[true]"])
        .unwrap();
    redis.cli(&["HSET", key, "not_json", "plain text"]).unwrap();
    let s = client.session().await;
    assert_eq!(s["from_elsewhere"], json!([true]));
    assert_eq!(s["not_json"], json!("plain text"));
    assert!(
        s.get("__created").is_none(),
        "metadata is never shown to the app"
    );
    let ttl: i64 = redis.cli(&["PTTL", key]).unwrap().trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 30 * 60 * 1000, "ttl {ttl}");
}

#[tokio::test]
async fn secret_rotation_keeps_old_cookies_until_the_old_secret_is_removed() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    let old = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&old);
    client.set(r#"{"a":1}"#).await;
    let cookie = client.cookie.clone().unwrap();
    drop(old);

    settings.secrets = vec![SECRET_2, SECRET];
    let rotated = Sidecar::start(&settings, &backend.addr());
    let mut c = Client::new(&rotated);
    c.cookie = Some(cookie.clone());
    assert_eq!(
        c.session().await,
        json!({"a": 1}),
        "old cookie verifies with the second secret"
    );
    let mut fresh = Client::new(&rotated);
    fresh.set(r#"{"b":2}"#).await;
    let new_cookie = fresh.cookie.clone().unwrap();
    drop(rotated);

    settings.secrets = vec![SECRET_2];
    let only_new = Sidecar::start(&settings, &backend.addr());
    let mut c = Client::new(&only_new);
    c.cookie = Some(cookie);
    assert_eq!(
        c.session().await,
        json!({}),
        "old secret removed: old cookie rejected"
    );
    assert_eq!(
        only_new
            .metric("sidecar_cookies_rejected_total{reason=\"bad_signature\"}")
            .await,
        1.0
    );
    let mut c = Client::new(&only_new);
    c.cookie = Some(new_cookie);
    assert_eq!(
        c.session().await,
        json!({"b": 2}),
        "new sessions were signed with the new secret"
    );
}

#[tokio::test]
async fn signed_x_session_header_verifies_with_hmac() {
    use hmac::{Hmac, Mac};
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    let header_secret = "header-secret-0123456789abcdef-0123456789";
    settings.session_extra = format!("  sign_header: true\n  header_secret: \"{header_secret}\"\n");
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":"b"}"#).await;
    let r = client
        .get("/", &[("x-session-signature", "t=1,v1=forged")])
        .await;
    let headers = r.body["headers"].as_array().unwrap();
    let sigs: Vec<&str> = headers
        .iter()
        .filter(|h| h[0] == "x-session-signature")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(sigs.len(), 1);
    let (t, v1) = sigs[0].split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t.parse::<u64>().unwrap()) < 10);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(header_secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body["x_session_raw"].as_str().unwrap()).as_bytes());
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
}

#[tokio::test]
async fn max_age_cookie_is_refreshed_only_when_the_expiry_is() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.cookie_extra = "  max_age: 1h\n".into();
    settings.idle_timeout = "2s";
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    let r = client.set(r#"{"a":1}"#).await;
    assert!(r.set_cookies()[0].contains("Max-Age=3600"));
    let r = client.get("/", &[]).await;
    assert!(
        r.set_cookies().is_empty(),
        "no refresh right after creation"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let r = client.get("/", &[]).await;
    assert_eq!(
        r.set_cookies().len(),
        1,
        "a quarter of the idle timeout passed: refreshed"
    );
    assert_eq!(r.session(), json!({"a": 1}));
    let _: Value = Value::Null;
}

#[tokio::test]
async fn the_app_cannot_set_the_session_cookie_itself() {
    let (_redis, _backend, sidecar) = setup().await;
    let mut client = Client::new(&sidecar);
    let r = client
        .get(
            "/",
            &[
                ("x-reply-set-cookie", "sid=attacker-chosen; Path=/"),
                ("x-reply-set-cookie", "theme=dark; Path=/"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies(), vec!["theme=dark; Path=/".to_string()]);
    assert!(client.cookie.is_none());
    // Its other cookies stay beside the sidecar's own.
    let r = client
        .get(
            "/",
            &[
                ("x-reply-set-cookie", "theme=light"),
                ("x-reply-x-session-set", r#"{"a":1}"#),
            ],
        )
        .await;
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(cookies.iter().any(|c| c == "theme=light"));
    assert!(client.cookie.is_some());
}

//! The store-trait semantics every store kind must have, for the store kinds that need a
//! running topology (cluster, sentinel, TLS): [`check_store_semantics`].

use std::sync::Arc;
use std::time::Duration;

/// The store-trait semantics every store kind must have (a subset of tests/store_suite.rs,
/// for the store kinds that need a running topology): load / create / update / regenerate /
/// destroy / ping, expiry, concurrent writes of different fields, and keys in many slots.
pub async fn check_store_semantics(
    store: Arc<dyn session_sidecar::store::SessionStore>,
    tag: &str,
) {
    use session_sidecar::protocol::Change;
    use session_sidecar::store::now_ms;
    let k = |name: &str| format!("check:{tag}:{name}");
    let set = |pairs: &[(&str, &str)]| Change {
        set: pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        delete: vec![],
    };
    let ttl = Duration::from_secs(60);
    let now = now_ms();

    store.ping().await.expect("ping");
    assert_eq!(store.load(&k("missing")).await.unwrap(), None);

    // create, load
    let fields = vec![
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "\"x\"".to_string()),
    ];
    store.create(&k("s1"), &fields, now, ttl).await.unwrap();
    let rec = store.load(&k("s1")).await.unwrap().expect("created");
    let mut got = rec.fields.clone();
    got.sort();
    assert_eq!(got, fields);
    assert_eq!(rec.created_ms, now);

    // update: set, delete, untouched fields kept
    let change = Change {
        set: vec![("c".into(), "true".into()), ("a".into(), "2".into())],
        delete: vec!["b".into()],
    };
    assert!(store.update(&k("s1"), &change, now + 1, ttl).await.unwrap());
    let mut got = store.load(&k("s1")).await.unwrap().unwrap().fields;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "2".to_string()),
            ("c".to_string(), "true".to_string())
        ]
    );

    // update of a missing session writes nothing
    assert!(!store
        .update(&k("gone"), &set(&[("z", "1")]), now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&k("gone")).await.unwrap(), None);

    // regenerate: data and creation time move, the change applies, the old key is gone
    assert!(store
        .regenerate(&k("s1"), &k("s1-new"), &set(&[("d", "4")]), now + 2, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.load(&k("s1")).await.unwrap(),
        None,
        "old key dead after regenerate"
    );
    let rec = store.load(&k("s1-new")).await.unwrap().expect("moved");
    let mut got = rec.fields.clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "2".to_string()),
            ("c".to_string(), "true".to_string()),
            ("d".to_string(), "4".to_string())
        ]
    );
    assert_eq!(rec.created_ms, now, "creation time survives regenerate");

    // regenerate of a missing session creates nothing
    assert!(!store
        .regenerate(&k("nope"), &k("nope-new"), &set(&[("x", "1")]), now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&k("nope-new")).await.unwrap(), None);

    // destroy
    assert!(store.destroy(&k("s1-new")).await.unwrap());
    assert!(!store.destroy(&k("s1-new")).await.unwrap());
    assert_eq!(store.load(&k("s1-new")).await.unwrap(), None);

    // concurrent writes of different fields all land
    store
        .create(&k("conc"), &[("base".into(), "0".into())], now, ttl)
        .await
        .unwrap();
    let writes = (0..20).map(|i| {
        let store = store.clone();
        let key = k("conc");
        async move {
            let change = Change {
                set: vec![(format!("f{i}"), i.to_string())],
                delete: vec![],
            };
            store.update(&key, &change, now_ms(), ttl).await.unwrap()
        }
    });
    assert!(futures_util::future::join_all(writes)
        .await
        .into_iter()
        .all(|ok| ok));
    assert_eq!(
        store.load(&k("conc")).await.unwrap().unwrap().fields.len(),
        21
    );

    // many keys (many slots in a cluster)
    for i in 0..50 {
        store
            .create(
                &k(&format!("many{i}")),
                &[("i".into(), i.to_string())],
                now,
                ttl,
            )
            .await
            .unwrap();
    }
    for i in 0..50 {
        let rec = store.load(&k(&format!("many{i}"))).await.unwrap().unwrap();
        assert_eq!(rec.fields, vec![("i".to_string(), i.to_string())]);
    }

    // expiry
    store
        .create(
            &k("short"),
            &[("a".into(), "1".into())],
            now,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(store.load(&k("short")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&k("short")).await.unwrap(), None, "expired");
}

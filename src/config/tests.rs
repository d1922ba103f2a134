//! `Config::parse` end to end: YAML text in, a validated `Config` or the exact problem lines
//! out.

use std::time::Duration;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn env(name: &str) -> Option<String> {
    match name {
        "SESSION_SECRET" => Some(SECRET.to_string()),
        _ => None,
    }
}

fn minimal() -> String {
    format!("listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"{SECRET}\"]\n")
}

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, &env) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse(&minimal(), &env).expect("valid");
    assert_eq!(c.cookie.name, DEFAULT_COOKIE_NAME);
    assert!(c.cookie.secure && c.cookie.http_only);
    assert_eq!(c.cookie.same_site, SameSite::Lax);
    assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(86400));
    assert_eq!(c.session.max_bytes, 4096);
    assert_eq!(c.store.timeout, Duration::from_millis(500));
    assert_eq!(c.store.key_prefix, "session:");
    assert!(matches!(
        c.store.backend,
        StoreBackend::Memory {
            max_sessions: 100_000,
            ..
        }
    ));
    assert_eq!(c.on_store_error, StoreErrorPolicy::FailClosed);
    assert_eq!(c.limits.max_header_bytes, 16384);
    assert!(c.admin_listen.is_none());
}

#[test]
fn env_variables_are_expanded_and_unset_ones_named() {
    let text = "listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"${SESSION_SECRET}\", \"${MISSING_ONE}\"]\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        vec!["cookie.secrets[1]: environment variable MISSING_ONE is not set"]
    );
}

#[test]
fn short_secret_is_named_with_its_index() {
    let text = format!("listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"{SECRET}\", \"short\"]\n");
    assert_eq!(
        errors(&text),
        vec!["cookie.secrets[1]: must be at least 32 bytes (got 5)"]
    );
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let text = format!("{}session:\n  idle_timeot: 5m\n", minimal());
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("session"), "{errs:?}");
    assert!(errs[0].contains("idle_timeot"), "{errs:?}");
    let errs = errors(&format!("{}bogus: 1\n", minimal()));
    assert!(errs[0].contains("bogus"), "{errs:?}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = "listen: nowhere\ncookie:\n  same_site: sideways\nstore:\n  kind: redis\nlog:\n  level: loud\n";
    let errs = errors(text);
    for key in [
        "listen:",
        "upstream:",
        "cookie.same_site:",
        "cookie.secrets:",
        "store.url:",
        "log.level:",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(key)),
            "missing {key} in {errs:?}"
        );
    }
}

#[test]
fn host_prefix_rules() {
    let text = format!(
        "{}  secure: false\n  domain: example.com\n  path: /app\n",
        minimal()
    );
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.starts_with("cookie.secure:")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("cookie.domain:")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("cookie.path:")),
        "{errs:?}"
    );
}

#[test]
fn same_site_none_requires_secure() {
    let text = format!(
        "{}  name: sid\n  secure: false\n  same_site: none\n",
        minimal()
    );
    assert_eq!(
        errors(&text),
        vec!["cookie.same_site: none requires cookie.secure: true"]
    );
}

#[test]
fn durations_accept_units_and_reject_bare_numbers() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(
        parse_duration("7d").unwrap(),
        Duration::from_secs(7 * 86400)
    );
    assert!(parse_duration("30").is_err());
    assert!(parse_duration("soon").is_err());
    let text = format!("{}session:\n  idle_timeout: 30\n", minimal());
    let errs = errors(&text);
    assert!(errs[0].starts_with("session.idle_timeout:"), "{errs:?}");
}

#[test]
fn store_keys_of_other_kinds_are_rejected() {
    let text = format!("{}store:\n  kind: memory\n  url: redis://x\n", minimal());
    assert_eq!(
        errors(&text),
        vec!["store.url: is only valid with kind redis"]
    );
    let text = format!("{}store:\n  kind: redis\n  url: http://x\n", minimal());
    assert_eq!(
        errors(&text),
        vec!["store.url: must start with redis:// or rediss://"]
    );
}

#[test]
fn tls_settings_must_be_consistent() {
    let text = format!(
        "{}store:\n  kind: redis\n  url: redis://x:6379\n  ca_file: /ca.pem\n",
        minimal()
    );
    assert_eq!(
        errors(&text),
        vec!["store.ca_file: is only used with rediss:// URLs"]
    );
    let text = format!(
        "{}store:\n  kind: redis-cluster\n  nodes: [\"rediss://a:1\", \"redis://b:2\"]\n",
        minimal()
    );
    assert_eq!(
        errors(&text),
        vec!["store: mixes redis:// and rediss:// URLs; use one scheme for every node"]
    );
}

#[test]
fn sign_header_requires_a_secret() {
    let text = format!("{}session:\n  sign_header: true\n", minimal());
    assert_eq!(
        errors(&text),
        vec!["session.header_secret: is required when session.sign_header is true"]
    );
}

#[test]
fn invalid_yaml_is_an_error_not_a_panic() {
    assert!(!errors("listen: [unclosed").is_empty());
    assert!(!errors("- just\n- a list\n").is_empty());
    assert!(!errors("\u{0}").is_empty());
}

#[test]
fn secrets_are_not_in_debug_output() {
    let c = Config::parse(&minimal(), &env).unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
}

/// `minimal()` ends inside the `cookie` section: `extra` may add cookie keys (indented) and
/// then further sections.
fn with(extra: &str) -> String {
    format!("{}{extra}", minimal())
}

#[test]
fn every_duration_key_has_an_upper_bound() {
    for (extra, line) in [
        (
            "grace_period: 500000000000y\n",
            "grace_period: must be at most 1h",
        ),
        ("grace_period: 61m\n", "grace_period: must be at most 1h"),
        (
            "upstream_connect_timeout: 6m\n",
            "upstream_connect_timeout: must be at most 5m",
        ),
        (
            "upstream_read_timeout: 25h\n",
            "upstream_read_timeout: must be at most 24h",
        ),
        (
            "store:\n  timeout: 1000y\n",
            "store.timeout: must be at most 60s",
        ),
        (
            "store:\n  timeout: 61s\n",
            "store.timeout: must be at most 60s",
        ),
        (
            "session:\n  idle_timeout: 366d\n",
            "session.idle_timeout: must be at most 365d",
        ),
        (
            "session:\n  absolute_timeout: 500000000000y\n",
            "session.absolute_timeout: must be at most 365d",
        ),
        (
            "  max_age: 401d\nsession:\n  absolute_timeout: 365d\n",
            "cookie.max_age: must be at most 400d",
        ),
        (
            "grace_period: 999999999999999999999d\n",
            "grace_period: `999999999999999999999d` is too large",
        ),
        (
            "store:\n  timeout: 18446744073709551615s 1000ms\n",
            "store.timeout: `18446744073709551615s 1000ms` is too large",
        ),
    ] {
        assert_eq!(errors(&with(extra)), vec![line], "{extra}");
    }
}

#[test]
fn durations_at_their_bounds_are_accepted() {
    let c = Config::parse(
        &with(
            "  max_age: 365d\n\
             session:\n  idle_timeout: 365d\n  absolute_timeout: 365d\n\
             store:\n  timeout: 60s\n\
             grace_period: 1h\n\
             upstream_connect_timeout: 5m\n\
             upstream_read_timeout: 24h\n",
        ),
        &env,
    )
    .expect("valid");
    assert_eq!(c.cookie.max_age, Some(MAX_SESSION_TIMEOUT));
    assert_eq!(c.session.idle_timeout, MAX_SESSION_TIMEOUT);
    assert_eq!(c.session.absolute_timeout, MAX_SESSION_TIMEOUT);
    assert_eq!(c.store.timeout, MAX_STORE_TIMEOUT);
    assert_eq!(c.grace_period, MAX_GRACE_PERIOD);
    assert_eq!(c.upstream_connect_timeout, MAX_UPSTREAM_CONNECT_TIMEOUT);
    assert_eq!(c.upstream_read_timeout, MAX_UPSTREAM_READ_TIMEOUT);
    // the bounds leave the clocks room: the largest values still add to a timestamp
    let now = std::time::SystemTime::now();
    assert!(now.checked_add(MAX_COOKIE_MAX_AGE).is_some());
    assert!(MAX_STORE_TIMEOUT.checked_mul(4).is_some());
}

#[test]
fn zero_is_refused_where_it_means_nothing() {
    for (extra, line) in [
        (
            "upstream_connect_timeout: 0s\n",
            "upstream_connect_timeout: must be at least 1ms",
        ),
        (
            "upstream_read_timeout: 0ms\n",
            "upstream_read_timeout: must be at least 1ms",
        ),
        (
            "store:\n  timeout: 0s\n",
            "store.timeout: must be at least 1ms",
        ),
        (
            "session:\n  idle_timeout: 0s\n",
            "session.idle_timeout: must be at least 1s",
        ),
        (
            "session:\n  absolute_timeout: 500ms\n",
            "session.absolute_timeout: must be at least 1s",
        ),
        ("  max_age: 0s\n", "cookie.max_age: must be at least 1s"),
        // Max-Age is whole seconds: 500ms would expire the cookie at once
        ("  max_age: 500ms\n", "cookie.max_age: must be at least 1s"),
    ] {
        assert_eq!(errors(&with(extra)), vec![line], "{extra}");
    }
    // a grace period of zero is meaningful: stop at once
    let c = Config::parse(&with("grace_period: 0s\n"), &env).expect("valid");
    assert_eq!(c.grace_period, Duration::ZERO);
}

#[test]
fn a_bad_enum_value_names_its_key_and_the_allowed_values() {
    for (extra, key, allowed) in [
        (
            "  same_site: sideways\n",
            "cookie.same_site: ",
            "`strict`, `lax`, `none`",
        ),
        (
            "log:\n  level: loud\n",
            "log.level: ",
            "`error`, `warn`, `info`, `debug`",
        ),
        ("log:\n  format: xml\n", "log.format: ", "`text` or `json`"),
        (
            "on_store_error: shrug\n",
            "on_store_error: ",
            "`fail_closed` or `fail_open`",
        ),
        (
            "csrf:\n  mode: strict\n",
            "csrf.mode: ",
            "`enforce`, `report`, `off`",
        ),
        (
            "store:\n  kind: memcached\n",
            "store.kind: ",
            "`redis`, `redis-cluster`, `redis-sentinel`, `memory`",
        ),
    ] {
        let errs = errors(&with(extra));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with(key), "{errs:?}");
        assert!(errs[0].contains(allowed), "{errs:?}");
    }
}

#[test]
fn enum_values_are_read_into_the_config() {
    let c = Config::parse(
        &with(
            "  same_site: strict\non_store_error: fail_open\nlog:\n  level: debug\n  format: json\n",
        ),
        &env,
    )
    .expect("valid");
    assert_eq!(c.cookie.same_site, SameSite::Strict);
    assert_eq!(c.on_store_error, StoreErrorPolicy::FailOpen);
    assert_eq!(c.log.level, tracing::Level::DEBUG);
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn an_unknown_store_kind_hides_the_kind_specific_checks() {
    let text = with("store:\n  kind: memcached\n  url: redis://x\n  max_sessions: 5\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("store.kind: "), "{errs:?}");
}

#[test]
fn each_kind_specific_store_key_is_refused_for_other_kinds() {
    for (store, line) in [
        (
            "kind: redis-cluster\n  nodes: [\"redis://a:1\"]\n  url: redis://x",
            "store.url: is only valid with kind redis",
        ),
        (
            "kind: redis\n  url: redis://x\n  nodes: [\"redis://a:1\"]",
            "store.nodes: is only valid with kind redis-cluster",
        ),
        (
            "kind: memory\n  sentinels: [\"redis://a:1\"]",
            "store.sentinels: is only valid with kind redis-sentinel",
        ),
        (
            "kind: memory\n  master_name: m",
            "store.master_name: is only valid with kind redis-sentinel",
        ),
        ("kind: memory\n  db: 1", "store.db: is only valid with kind redis-sentinel"),
        (
            "kind: redis-cluster\n  nodes: [\"redis://a:1\"]\n  sentinel_username: u",
            "store.sentinel_username: is only valid with kind redis-sentinel",
        ),
        (
            "kind: memory\n  sentinel_password: p",
            "store.sentinel_password: is only valid with kind redis-sentinel",
        ),
        (
            "kind: redis\n  url: redis://x\n  username: u",
            "store.username: is only valid with kind redis-cluster or redis-sentinel (for kind redis, put user:password@ in the url)",
        ),
        (
            "kind: memory\n  password: p",
            "store.password: is only valid with kind redis-cluster or redis-sentinel (for kind redis, put user:password@ in the url)",
        ),
        (
            "kind: memory\n  ca_file: /ca.pem",
            "store.ca_file: is only valid with kind redis, redis-cluster or redis-sentinel",
        ),
        (
            "kind: redis\n  url: redis://x\n  max_sessions: 5",
            "store.max_sessions: is only valid with kind memory",
        ),
        (
            "kind: redis\n  url: redis://x\n  persist_path: /s",
            "store.persist_path: is only valid with kind memory",
        ),
        // no kind means memory
        ("url: redis://x", "store.url: is only valid with kind redis"),
    ] {
        assert_eq!(
            errors(&with(&format!("store:\n  {store}\n"))),
            vec![line],
            "{store}"
        );
    }
}

#[test]
fn a_value_that_cannot_be_read_hides_nothing_else_and_adds_no_noise() {
    // `cookie: 5` is one problem, not also "cookie.secrets is required"
    let errs =
        errors("listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie: 5\nthreads: 0\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("cookie: invalid type"), "{errs:?}");
    assert_eq!(errs[1], "threads: must be at least 1");
    let errs = errors(
        "listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie: 5\nthreads: 100000\n",
    );
    assert!(
        errs.iter().any(|e| e == "threads: must be at most 1024"),
        "{errs:?}"
    );
    // a bad list item is reported with its index; the rest of the file is still checked
    let errs = errors(
        "listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [[1]]\n  same_site: none\n  secure: false\n  name: sid\nbogus: 1\nlog:\n  level: loud\n",
    );
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(
        errs[0].starts_with("cookie.secrets[0]: invalid type"),
        "{errs:?}"
    );
    assert!(errs[1].starts_with("bogus: unknown field"), "{errs:?}");
    assert!(
        errs[2].starts_with("log.level: unknown variant"),
        "{errs:?}"
    );
    assert_eq!(
        errs[3],
        "cookie.same_site: none requires cookie.secure: true"
    );
}

#[test]
fn a_file_full_of_unknown_keys_ends_with_a_bounded_report() {
    let mut text = minimal();
    for i in 0..500 {
        text.push_str(&format!("bogus{i}: 1\n"));
    }
    let errs = errors(&text);
    assert!(!errs.is_empty() && errs.len() <= 64, "{}", errs.len());
    assert!(errs.iter().all(|e| e.starts_with("bogus")), "{errs:?}");
}

#[test]
fn csrf_section_absent_means_enforce_with_nothing_trusted() {
    let c = Config::parse(&minimal(), &env).expect("valid");
    assert_eq!(c.csrf, CsrfConfig::default());
    assert_eq!(c.csrf.mode, CsrfMode::Enforce);
    assert!(c.csrf.trusted_origins.is_empty() && c.csrf.exempt_paths.is_empty());
    let c = Config::parse(&with("csrf: ~\n"), &env).expect("valid");
    assert_eq!(c.csrf, CsrfConfig::default());
}

#[test]
fn csrf_section_is_read_and_origins_normalized() {
    let c = Config::parse(
        &with(
            "csrf:\n  mode: report\n  trusted_origins: [\"HTTPS://Admin.Example.com:443\", \"http://localhost:3000\"]\n  exempt_paths: [\"/webhooks/\"]\n",
        ),
        &env,
    )
    .expect("valid");
    assert_eq!(c.csrf.mode, CsrfMode::Report);
    assert_eq!(
        c.csrf.trusted_origins,
        ["https://admin.example.com", "http://localhost:3000"]
    );
    assert_eq!(c.csrf.exempt_paths, ["/webhooks/"]);
    let c = Config::parse(&with("csrf:\n  mode: \"off\"\n"), &env).expect("valid");
    assert_eq!(c.csrf.mode, CsrfMode::Off);
}

#[test]
fn csrf_problems_name_the_entry() {
    let text = with(
        "csrf:\n  trusted_origins:\n    - https://ok.example.com\n    - https://a.example.com/\n    - \"https://*.example.com\"\n    - https://${TRUSTED_HOST}\n  exempt_paths: [\"webhooks/\", \"/ok/\", \"/hooks/*\"]\n",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert!(
        errs[0].starts_with("csrf.trusted_origins[3]: environment variable TRUSTED_HOST"),
        "{errs:?}"
    );
    assert!(
        errs[1]
            .starts_with("csrf.trusted_origins[1]: `https://a.example.com/` must not have a path"),
        "{errs:?}"
    );
    assert!(
        errs[2].starts_with("csrf.trusted_origins[2]: `https://*.example.com` has a wildcard"),
        "{errs:?}"
    );
    assert_eq!(
        errs[3],
        "csrf.exempt_paths[0]: `webhooks/` must start with /"
    );
    assert!(errs[4].starts_with("csrf.exempt_paths[2]: "), "{errs:?}");
    let errs = errors(&with("csrf:\n  trusted: []\n"));
    assert!(
        errs[0].starts_with("csrf.trusted: unknown field"),
        "{errs:?}"
    );
}

#[test]
fn a_type_error_names_the_types_never_the_value() {
    // A secret written where a list belongs, and one that is not a string.
    let text = "listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\n\
                cookie:\n  secrets: \"${SESSION_SECRET}\"\n\
                admin:\n  token: 12345678901234567890\n";
    let lines = errors(text);
    assert!(
        lines
            .iter()
            .any(|l| l == "cookie.secrets: invalid type: string, expected a sequence"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("admin.token: invalid type: integer, expected")),
        "{lines:?}"
    );
    for l in &lines {
        assert!(!l.contains(SECRET) && !l.contains("1234567890"), "{l}");
    }
}

#[test]
fn a_persist_path_in_a_missing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("sessions.json");
    let missing = dir.path().join("no-such-dir/sessions.json");
    let yaml = |path: &std::path::Path| {
        format!(
            "{}store:\n  kind: memory\n  persist_path: \"{}\"\n",
            minimal(),
            path.display()
        )
    };
    assert_eq!(errors(&yaml(&ok)), Vec::<String>::new());
    assert_eq!(
        errors(&yaml(&missing)),
        [format!(
            "store.persist_path: `{}`: the directory `{}` does not exist",
            missing.display(),
            dir.path().join("no-such-dir").display()
        )]
    );
    assert_eq!(
        errors(&yaml(dir.path())),
        [format!(
            "store.persist_path: `{}` is a directory; name a file",
            dir.path().display()
        )]
    );
}

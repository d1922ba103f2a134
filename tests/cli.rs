//! SPEC §2: the command line. `--check` exits 0 on a valid file and non-zero with one line
//! per problem naming its key; running with an invalid file fails the same way; `${VAR}`
//! expansion names unset variables. Never a panic or a backtrace.

mod common;

use std::process::Command;

use common::binary;

fn run(args: &[&str], yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("SESSION_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
listen: "127.0.0.1:8080"
upstream: "127.0.0.1:3000"
cookie:
  secrets: ["${SESSION_SECRET}"]
store:
  kind: redis
  url: "redis://127.0.0.1:6379/0"
"#;

#[test]
fn check_accepts_a_valid_file() {
    let (code, out, err) = run(
        &["--check"],
        GOOD,
        &[("SESSION_SECRET", "0123456789abcdef0123456789abcdef")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
}

#[test]
fn check_names_an_unset_variable() {
    let (code, _, err) = run(&["--check"], GOOD, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cookie.secrets[0]: environment variable SESSION_SECRET is not set"),
        "{err}"
    );
}

const BAD: &str = r#"
listen: "nowhere"
upstream: "http://app:3000"
threads: 0
cookie:
  secrets: ["short"]
  same_site: sideways
  bogus: 1
session:
  idle_timeout: 30
store:
  kind: memcached
log:
  level: loud
"#;

fn assert_every_problem_named(code: i32, err: &str) {
    assert_ne!(code, 0);
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    for key in [
        "listen:",
        "upstream:",
        "threads:",
        "cookie.bogus:",
        "cookie.secrets[0]:",
        "cookie.same_site:",
        "session.idle_timeout:",
        "store.kind:",
        "log.level:",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!(" {key}")) || l.contains(&format!(": {key}"))),
            "no line names {key}:\n{err}"
        );
    }
}

#[test]
fn check_reports_every_problem_on_its_own_line() {
    let (code, _, err) = run(&["--check"], BAD, &[]);
    assert_every_problem_named(code, &err);
    let (code, _, err) = run(
        &["--check"],
        &GOOD.replace("${SESSION_SECRET}", "short"),
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("cookie.secrets[0]: must be at least 32 bytes"),
        "{err}"
    );
}

#[test]
fn running_with_an_invalid_file_fails_like_check() {
    let (code, _, err) = run(&[], BAD, &[]);
    assert_every_problem_named(code, &err);
}

#[test]
fn garbage_and_missing_files_are_clear_errors() {
    for yaml in ["\u{0}\u{1}", "[1, 2", "- a\n- b\n", ""] {
        let (code, _, err) = run(&["--check"], yaml, &[]);
        assert_ne!(code, 0, "{yaml:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.trim().is_empty());
    }
    let out = Command::new(binary())
        .args(["--check", "--config", "/nonexistent/proxy.yaml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

const SECRET_ENV: (&str, &str) = ("SESSION_SECRET", "0123456789abcdef0123456789abcdef");

/// Appended to `GOOD`, which ends inside its `store` section.
const ABSURD_DURATIONS: &str = "  timeout: 100000000000d
grace_period: 500000000000y
upstream_connect_timeout: 0s
upstream_read_timeout: 999999999999999999999d
session:
  idle_timeout: 18446744073709551615s 1000ms
  absolute_timeout: 400d
";

#[test]
fn absurd_durations_are_refused_by_check_and_at_start_naming_each_key() {
    let yaml = format!("{GOOD}{ABSURD_DURATIONS}");
    let expected = [
        "grace_period: must be at most 1h",
        "upstream_connect_timeout: must be at least 1ms",
        "upstream_read_timeout: `999999999999999999999d` is too large",
        "store.timeout: must be at most 60s",
        "session.idle_timeout: `18446744073709551615s 1000ms` is too large",
        "session.absolute_timeout: must be at most 365d",
    ];
    for args in [&["--check"][..], &[][..]] {
        let (code, out, err) = run(args, &yaml, &[SECRET_ENV]);
        assert_ne!(code, 0, "{args:?}: {out}{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{args:?}: {err}"
        );
        for line in expected {
            assert!(
                err.lines().any(|l| l.ends_with(&format!(": {line}"))),
                "{args:?}: no line ends with {line}:\n{err}"
            );
        }
        assert_eq!(err.lines().count(), expected.len(), "{args:?}: {err}");
    }
}

#[test]
fn a_cookie_max_age_past_the_browsers_cap_is_refused() {
    let yaml = GOOD.replace("  secrets:", "  max_age: 401d\n  secrets:")
        + "session:\n  absolute_timeout: 365d\n";
    let (code, _, err) = run(&["--check"], &yaml, &[SECRET_ENV]);
    assert_ne!(code, 0);
    assert!(
        err.trim_end()
            .ends_with(": cookie.max_age: must be at most 400d"),
        "{err}"
    );
}

#[test]
fn check_reports_bad_csrf_entries_with_their_index() {
    let yaml = format!(
        "{GOOD}csrf:\n  mode: enforce\n  trusted_origins: [\"https://ok.example.com\", \"https://bad.example.com/\"]\n  exempt_paths: [\"webhooks/\"]\n"
    );
    let (code, _, err) = run(&["--check"], &yaml, &[SECRET_ENV]);
    assert_ne!(code, 0);
    assert!(
        err.contains(": csrf.trusted_origins[1]: `https://bad.example.com/` must not have a path"),
        "{err}"
    );
    assert!(
        err.contains(": csrf.exempt_paths[0]: `webhooks/` must start with /"),
        "{err}"
    );
    let fixed = yaml
        .replace("https://bad.example.com/", "https://bad.example.com")
        .replace("webhooks/", "/webhooks/");
    let (code, _, err) = run(&["--check"], &fixed, &[SECRET_ENV]);
    assert_eq!(code, 0, "{err}");
}

/// Starts the binary on `yaml` and waits (20 s at most) for it to exit: its code and stderr.
fn start_and_wait_for_exit(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .env("SESSION_SECRET", SECRET_ENV.1)
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after 20 s: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

#[test]
fn an_address_in_use_is_a_start_error_naming_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let memory = "upstream: \"127.0.0.1:9\"\ncookie:\n  secrets: [\"${SESSION_SECRET}\"]\n";

    let yaml = format!("listen: \"127.0.0.1:{port}\"\n{memory}");
    let (code, err) = start_and_wait_for_exit(&yaml);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("listen: 127.0.0.1:{port}: ")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // The admin listener on the client listener's port.
    drop(taken);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let yaml = format!("listen: \"127.0.0.1:{port}\"\nadmin_listen: \"0.0.0.0:{port}\"\n{memory}");
    let (code, err) = start_and_wait_for_exit(&yaml);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("admin_listen: 0.0.0.0:{port}: ")),
        "{err}"
    );
}

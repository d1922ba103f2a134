//! SPEC §10 in a real browser: headless Chromium (driven over WebDriver by Debian's
//! chromedriver) against the real binary.
//!
//! Guards: a user logs in through the sidecar; pages from another port of 127.0.0.1
//! (same-site, cross-origin: SameSite=Lax still sends the cookie) and from `localhost`
//! (cross-site) auto-submit a form POST and send `fetch` POSTs (no-cors and cors) to the
//! sidecar; the app never receives one of them, the sidecar counts each refusal, and the
//! session is unchanged. Pages served through the sidecar itself still POST with a form and
//! with `fetch`. A control run with `csrf.mode: off` shows the same forgeries reaching the
//! app, the same-site ones with the victim's session, so the test would catch a missing
//! check.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`); without them
//! the test fails and says to run `scripts/install-deps`.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// One request the app received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    sec_fetch_site: Option<String>,
    origin: Option<String>,
    session: Value,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serves `handler` on an ephemeral loopback port.
async fn serve<F>(handler: F) -> u16
where
    F: Fn(&str, &str, &str, &hyper::HeaderMap, String) -> Response<Full<Bytes>>
        + Send
        + Sync
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                            .unwrap_or_default();
                        let query = parts.uri.query().unwrap_or("").to_string();
                        Ok::<_, Infallible>(handler(
                            parts.method.as_str(),
                            parts.uri.path(),
                            &query,
                            &parts.headers,
                            body,
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn html(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn form_field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
}

/// A page that POSTs `to=<label>` to `action` with a form as soon as it loads.
fn auto_form(action: &str, label: &str) -> String {
    format!(
        "<!doctype html><title>form</title>\
         <form id=f method=post action=\"{action}\"><input name=to value=\"{label}\"></form>\
         <script>document.getElementById('f').submit()</script>"
    )
}

/// A page that sends `to=<label>-<mode>` to `url` with fetch, credentials included, in
/// each of `modes`, then writes `finished ...` into `#done`.
fn fetch_page(url: &str, label: &str, modes: &[&str]) -> String {
    let modes: Vec<String> = modes.iter().map(|m| format!("'{m}'")).collect();
    format!(
        "<!doctype html><title>fetch</title><p id=done>running</p><script>\
         (async () => {{ const out = []; \
           for (const mode of [{}]) {{ \
             try {{ const r = await fetch('{url}', {{method: 'POST', mode, credentials: 'include', \
                 headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, \
                 body: 'to={label}-' + mode}}); \
               out.push(mode + ':' + r.type + ':' + r.status); }} \
             catch (e) {{ out.push(mode + ':error'); }} }} \
           document.getElementById('done').textContent = 'finished ' + out.join(' '); \
         }})();</script>",
        modes.join(", ")
    )
}

/// The app behind the sidecar: a login, a page showing the session, a state-changing
/// `POST /transfer`, and same-origin pages that POST to it with a form and with fetch.
async fn start_app(log: Log) -> u16 {
    serve(move |method, path, _query, headers, body| {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let session: Value = header("x-session")
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        log.lock().unwrap().push(Seen {
            method: method.to_string(),
            path: path.to_string(),
            sec_fetch_site: header("sec-fetch-site"),
            origin: header("origin"),
            session: session.clone(),
            body: body.clone(),
        });
        match (method, path) {
            ("GET", "/login-page") => html(
                200,
                "<!doctype html><form id=f method=post action=/login>\
                 <input name=user value=alice></form>\
                 <script>document.getElementById('f').submit()</script>"
                    .into(),
            ),
            ("POST", "/login") => {
                let user = form_field(&body, "user").to_string();
                Response::builder()
                    .status(303)
                    .header("location", "/whoami")
                    .header("x-session-set", json!({ "user": user }).to_string())
                    .header("x-session-action", "regenerate")
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            ("GET", "/whoami") => html(
                200,
                format!(
                    "<!doctype html><title>whoami</title><pre id=session>{}</pre>",
                    escape(&session.to_string())
                ),
            ),
            ("POST", "/transfer") => {
                let to = form_field(&body, "to").to_string();
                let mut resp = html(200, format!("<p id=result>transfer to {to} done</p>"));
                resp.headers_mut().insert(
                    "x-session-set",
                    json!({ "last_transfer": to }).to_string().parse().unwrap(),
                );
                resp
            }
            ("GET", "/own-form") => html(200, auto_form("/transfer", "own-form")),
            ("GET", "/own-fetch") => html(200, fetch_page("/transfer", "own-fetch", &["cors"])),
            _ => html(404, "not here".into()),
        }
    })
    .await
}

/// The attacker's site: `/form?target=URL` and `/fetch?target=URL` POST to `URL/transfer`.
async fn start_attacker() -> u16 {
    serve(|_method, path, query, _headers, _body| {
        let target = query.strip_prefix("target=").unwrap_or("");
        let action = format!("{target}/transfer");
        match path {
            "/form" => html(200, auto_form(&action, "attacker-form")),
            "/fetch" => html(
                200,
                fetch_page(&action, "attacker-fetch", &["no-cors", "cors"]),
            ),
            _ => html(404, "not here".into()),
        }
    })
    .await
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver with one Chromium session; both are killed when it is dropped.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let missing = "headless Chromium is needed for this test: run scripts/install-deps \
                       (it installs Debian's chromium and chromium-driver)";
        let chromium = find_in_path(&["chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("chromium not found in PATH; {missing}"));
        let chromedriver = find_in_path(&["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found in PATH; {missing}"));
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = {
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {}: {e}; {missing}", chromedriver.display())
                })
        };
        let mut browser = Browser {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            driver,
            _profile: profile,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "chromedriver did not listen"
        );
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 15000, "script": 15000},
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let value: Value = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    /// Ends the WebDriver session, which closes Chromium.
    async fn quit(self) {
        let path = format!("/session/{}", self.session);
        let _ = self.try_call("DELETE", &path, None).await;
    }

    async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url }))).await;
    }

    /// The current URL and the page's text; `None` while a navigation is under way.
    async fn page(&self) -> Option<(String, String)> {
        let path = format!("/session/{}/execute/sync", self.session);
        let script = "return [location.href, document.body ? document.body.innerText : ''];";
        let v = self
            .try_call("POST", &path, Some(json!({"script": script, "args": []})))
            .await
            .ok()?;
        Some((v[0].as_str()?.to_string(), v[1].as_str()?.to_string()))
    }

    /// Waits until the page satisfies `check`; returns its text.
    async fn wait_for(&self, what: &str, check: impl Fn(&str, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some((url, text)) = self.page().await {
                if check(&url, &text) {
                    return text;
                }
                last = Some((url, text));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; last page: {last:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers are descendants of chromedriver: collect them first, then
        // kill each by its own (positive) pid. Never a negative pid: the `kill` of Debian
        // 12's procps turns `kill -KILL -<pgid>` into kill(-1), i.e. every process.
        let descendants = descendants_of(self.driver.id());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for pid in descendants {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Pids of every live descendant of `root`, from `/proc/<pid>/stat`.
fn descendants_of(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(pid, ppid)| *ppid == parent && *pid > 1 && !found.contains(pid))
                .map(|(pid, _)| *pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    found.retain(|pid| *pid != root && *pid > 1);
    found
}

fn posts_since(log: &Log, mark: usize) -> Vec<Seen> {
    log.lock().unwrap()[mark..]
        .iter()
        .filter(|s| s.method != "GET")
        .cloned()
        .collect()
}

fn mark(log: &Log) -> usize {
    log.lock().unwrap().len()
}

/// Logs in through the sidecar at `base` with a form POST from its own page.
async fn log_in(browser: &Browser, base: &str) {
    browser.open(&format!("{base}/login-page")).await;
    browser
        .wait_for("the session page after login", |url, text| {
            url.ends_with("/whoami") && text.contains("alice")
        })
        .await;
}

async fn session_in_browser(browser: &Browser, base: &str) -> Value {
    browser.open(&format!("{base}/whoami")).await;
    let text = browser
        .wait_for("the session page", |url, _| url.ends_with("/whoami"))
        .await;
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("not a session: {text}"))
}

/// Opens the attacker's form page and fetch page aimed at `target` from `attacker`.
async fn attack(browser: &Browser, attacker: &str, target: &str, refused: bool) {
    browser
        .open(&format!("{attacker}/form?target={target}"))
        .await;
    browser
        .wait_for(
            "the forged form POST to arrive at the sidecar",
            |url, text| {
                url == format!("{target}/transfer")
                    && if refused {
                        text.contains("cross-origin request refused")
                    } else {
                        text.contains("attacker-form")
                    }
            },
        )
        .await;
    browser
        .open(&format!("{attacker}/fetch?target={target}"))
        .await;
    browser
        .wait_for("the forged fetches", |_, text| text.starts_with("finished"))
        .await;
}

const REFUSED_BY_FETCH_SITE: &str =
    "sidecar_cross_origin_rejected_total{reason=\"sec_fetch_site\"}";

#[tokio::test]
async fn browsers_cannot_forge_writes_but_the_sites_own_pages_can() {
    let log: Log = Arc::default();
    let app_port = start_app(log.clone()).await;
    let attacker_port = start_attacker().await;
    let app = format!("127.0.0.1:{app_port}");
    let sidecar = Sidecar::start(&Settings::memory(), &app);
    let base = format!("http://127.0.0.1:{}", sidecar.port);
    let browser = Browser::start().await;

    // Log in, then write through the sidecar from its own pages: a form and a fetch.
    log_in(&browser, &base).await;
    let login = posts_since(&log, 0);
    assert_eq!(login.len(), 1, "{login:?}");
    assert_eq!(login[0].sec_fetch_site.as_deref(), Some("same-origin"));
    let m = mark(&log);
    browser.open(&format!("{base}/own-form")).await;
    browser
        .wait_for("the own form POST", |_, text| {
            text.contains("transfer to own-form done")
        })
        .await;
    browser.open(&format!("{base}/own-fetch")).await;
    let done = browser
        .wait_for("the own fetch", |_, text| text.starts_with("finished"))
        .await;
    assert_eq!(done, "finished cors:basic:200");
    let own: Vec<String> = posts_since(&log, m)
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(own, vec!["to=own-form", "to=own-fetch-cors"]);
    let before = session_in_browser(&browser, &base).await;
    assert_eq!(
        before,
        json!({"user": "alice", "last_transfer": "own-fetch-cors"})
    );

    // The attacks: same-site (another port of 127.0.0.1) and cross-site (localhost).
    for attacker in [
        format!("http://127.0.0.1:{attacker_port}"),
        format!("http://localhost:{attacker_port}"),
    ] {
        let m = mark(&log);
        let refused_before = sidecar.metric(REFUSED_BY_FETCH_SITE).await;
        attack(&browser, &attacker, &base, true).await;
        let reached = posts_since(&log, m);
        assert!(reached.is_empty(), "forged from {attacker}: {reached:?}");
        assert_eq!(
            sidecar.metric(REFUSED_BY_FETCH_SITE).await - refused_before,
            3.0,
            "one form POST and two fetches from {attacker} were refused by Sec-Fetch-Site"
        );
        assert_eq!(session_in_browser(&browser, &base).await, before);
    }
    assert_eq!(
        sidecar
            .metric("sidecar_cross_origin_rejected_total{reason=\"origin\"}")
            .await,
        0.0
    );

    // Control: with the check off, the same pages do reach the app; from the same site
    // with the victim's session, since SameSite=Lax does not stop a sibling origin.
    let unprotected = Sidecar::start(
        &{
            let mut s = Settings::memory();
            s.extra.push_str("csrf:\n  mode: off\n");
            s
        },
        &app,
    );
    let open_base = format!("http://127.0.0.1:{}", unprotected.port);
    log_in(&browser, &open_base).await;
    for (attacker, sees_session) in [
        (format!("http://127.0.0.1:{attacker_port}"), true),
        (format!("http://localhost:{attacker_port}"), false),
    ] {
        let m = mark(&log);
        attack(&browser, &attacker, &open_base, false).await;
        let reached = posts_since(&log, m);
        let bodies: Vec<&str> = reached.iter().map(|s| s.body.as_str()).collect();
        assert_eq!(
            bodies,
            vec![
                "to=attacker-form",
                "to=attacker-fetch-no-cors",
                "to=attacker-fetch-cors"
            ],
            "from {attacker}"
        );
        for seen in &reached {
            assert_eq!(seen.path, "/transfer", "{seen:?}");
            assert_eq!(seen.origin.as_deref(), Some(attacker.as_str()), "{seen:?}");
            let expected_site = if sees_session {
                "same-site"
            } else {
                "cross-site"
            };
            assert_eq!(
                seen.sec_fetch_site.as_deref(),
                Some(expected_site),
                "{seen:?}"
            );
            assert_eq!(
                seen.session.get("user").is_some(),
                sees_session,
                "the session cookie rode along from {attacker}: {seen:?}"
            );
        }
    }
    browser.quit().await;
}

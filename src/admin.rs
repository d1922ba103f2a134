//! The admin listener: `/healthz` (the process serves), `/readyz` (the store answers within
//! `store.timeout`), `/metrics` (Prometheus text) and, with `admin.token`, the session API
//! `GET|DELETE /sessions?user=ID` behind `Authorization: Bearer <token>`. Never served on the
//! client listener. The session API shows metadata only: no IDs, no keys, no field values.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::protocol::to_ascii_json;
use crate::session::Engine;
use crate::store::{SessionRecord, StoreError};

/// The admin session API's access check.
#[derive(Clone)]
pub struct SessionApi {
    /// SHA-256 of the bearer token; compared in constant time.
    token_digest: [u8; 32],
}

impl SessionApi {
    pub fn new(token: &str) -> SessionApi {
        SessionApi {
            token_digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Constant-time check of an `Authorization` header value.
    fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(bearer_token) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The token of an `Authorization: Bearer <token>` header value: the scheme in any case
/// (RFC 9110 §11.1), then one or more spaces; `None` for another scheme or no token.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.trim_ascii().split_at_checked(b"Bearer".len())?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (token.len() < rest.len() && !token.is_empty()).then_some(token)
}

pub struct AdminApp {
    /// The session engine over the admin listener's own store connection.
    engine: Engine,
    metrics: Arc<Metrics>,
    sessions: Option<SessionApi>,
}

type Answer = (&'static str, StatusCode, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn json_answer(status: StatusCode, body: Value) -> Answer {
    ("sessions", status, JSON, format!("{body}\n").into_bytes())
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The `user=` of an admin query, decoded (`+` is a space, as in any form-encoded query: send
/// a `+` as `%2B`). A repeated `user=`, or one that does not decode to UTF-8, is refused rather
/// than guessed at: a logout must end the sessions of exactly the user meant.
fn user_param(query: Option<&str>) -> Result<Option<String>, &'static str> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "user" {
            continue;
        }
        if found.is_some() {
            return Err("give user= once");
        }
        // Invalid UTF-8 decodes to U+FFFD; a real U+FFFD arrives encoded as %EF%BF%BD.
        if value.contains('\u{FFFD}') && !query.to_ascii_uppercase().contains("%EF%BF%BD") {
            return Err("user= is not percent-encoded UTF-8");
        }
        found = Some(value.into_owned());
    }
    Ok(found)
}

/// The user field values an admin's `user=ID` may mean: the string, and the JSON scalar
/// it spells (so `user=42` finds sessions whose user field is `42` or `"42"`).
fn user_candidates(id: &str) -> Vec<String> {
    let mut out = vec![to_ascii_json(&Value::String(id.to_string()))];
    if let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(id) {
        // Only as spelled: ` 42` or `042` is the string, not the number.
        let scalar = to_ascii_json(&v);
        if scalar == id {
            out.push(scalar);
        }
    }
    out
}

impl AdminApp {
    pub fn new(engine: Engine, metrics: Arc<Metrics>, sessions: Option<SessionApi>) -> AdminApp {
        AdminApp {
            engine,
            metrics,
            sessions,
        }
    }

    async fn route(&self, session: &ServerSession) -> Answer {
        let req = session.req_header();
        let method = &req.method;
        let path = req.uri.path();
        let read_only = method == Method::GET || method == Method::HEAD;
        match path {
            "/healthz" | "/readyz" | "/metrics" if !read_only => (
                "other",
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                b"method not allowed\n".to_vec(),
            ),
            "/healthz" => ("healthz", StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => match self.ready().await {
                Ok(()) => ("readyz", StatusCode::OK, TEXT, b"ready\n".to_vec()),
                Err(e) => (
                    "readyz",
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("store not ready: {e}\n").into_bytes(),
                ),
            },
            "/metrics" => (
                "metrics",
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/sessions" => match &self.sessions {
                None => (
                    "other",
                    StatusCode::NOT_FOUND,
                    TEXT,
                    b"not found\n".to_vec(),
                ),
                Some(api) => {
                    let auth = req
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes());
                    if !api.authorized(auth) {
                        return json_answer(
                            StatusCode::UNAUTHORIZED,
                            json!({"error": "missing or wrong bearer token"}),
                        );
                    }
                    match user_param(req.uri.query()) {
                        Ok(user) => self.sessions_api(method, user).await,
                        Err(error) => {
                            json_answer(StatusCode::BAD_REQUEST, json!({ "error": error }))
                        }
                    }
                }
            },
            _ => (
                "other",
                StatusCode::NOT_FOUND,
                TEXT,
                b"not found\n".to_vec(),
            ),
        }
    }

    /// Ready when the store answers within `store.timeout`. A broken connection fails its
    /// first command and reconnects, so a failure that is not a timeout is retried once (a
    /// store that is back reads as ready), both attempts within that one `store.timeout`.
    async fn ready(&self) -> Result<(), StoreError> {
        let store = self.engine.store();
        let limit = store.timeout();
        let attempts = async {
            match store.ping().await {
                Err(StoreError::Timeout(_)) => Err(StoreError::Timeout(limit)),
                Err(_) => store.ping().await,
                Ok(()) => Ok(()),
            }
        };
        tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    async fn sessions_api(&self, method: &Method, user: Option<String>) -> Answer {
        // A request without a user is refused first (400, SPEC §9), whatever the config.
        let user = match user {
            Some(u) if !u.is_empty() => u,
            _ => {
                return json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "give the user: /sessions?user=ID (no mass logout)"}),
                )
            }
        };
        if self.engine.policy().user_field.is_none() {
            return json_answer(
                StatusCode::CONFLICT,
                json!({"error": "session.user_field is not configured, so sessions are not indexed by user"}),
            );
        }
        let store_failed = |e: StoreError, destroyed: Option<usize>| {
            let mut body = json!({"error": format!("store: {e}")});
            if let Some(n) = destroyed {
                body["destroyed"] = json!(n);
            }
            json_answer(StatusCode::SERVICE_UNAVAILABLE, body)
        };
        if method == Method::GET {
            let mut found: Vec<SessionRecord> = Vec::new();
            for candidate in user_candidates(&user) {
                match self.engine.sessions_of(&candidate).await {
                    Ok(list) => found.extend(list),
                    Err(e) => return store_failed(e, None),
                }
            }
            found.sort_by_key(|r| r.created_ms);
            let expiry = self.engine.policy().expiry;
            let sessions: Vec<Value> = found
                .iter()
                .map(|r| {
                    json!({
                        "created": rfc3339(r.created_ms),
                        "last_seen": rfc3339(r.touched_ms),
                        "expires": rfc3339(expiry.expires_at(r.created_ms, r.touched_ms)),
                    })
                })
                .collect();
            return json_answer(
                StatusCode::OK,
                json!({"user": user, "count": sessions.len(), "sessions": sessions}),
            );
        }
        if method != Method::DELETE {
            return json_answer(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "use GET or DELETE"}),
            );
        }
        let mut destroyed = 0;
        for candidate in user_candidates(&user) {
            match self.engine.log_out_user(&candidate).await {
                Ok(n) => destroyed += n,
                Err(e) => return store_failed(e, Some(destroyed)),
            }
        }
        tracing::info!(
            sessions = destroyed,
            "admin API destroyed every session of a user"
        );
        json_answer(
            StatusCode::OK,
            json!({"user": user, "destroyed": destroyed}),
        )
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (endpoint, status, content_type, body) = self.route(session).await;
        self.metrics
            .admin_requests
            .with_label_values(&[endpoint, status.as_str()])
            .inc();
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "Bearer");
        }
        builder.body(body).expect("static response parts are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let api = SessionApi::new("the-admin-token-123");
        assert!(api.authorized(Some(b"Bearer the-admin-token-123")));
        assert!(!api.authorized(Some(b"Bearer the-admin-token-12")));
        assert!(!api.authorized(Some(b"Bearer the-admin-token-1234")));
        assert!(!api.authorized(Some(b"Bearer The-admin-token-123")));
        assert!(!api.authorized(Some(b"the-admin-token-123")));
        assert!(!api.authorized(None));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_may_be_followed_by_several_spaces() {
        let api = SessionApi::new("the-admin-token-123");
        for ok in [
            &b"bearer the-admin-token-123"[..],
            b"BEARER the-admin-token-123",
            b"bEaReR the-admin-token-123",
            b"Bearer   the-admin-token-123",
            b"Bearer \tthe-admin-token-123",
        ] {
            assert!(api.authorized(Some(ok)), "{}", ok.escape_ascii());
        }
        for refused in [
            &b"Bearerthe-admin-token-123"[..],
            b"Bearer",
            b"Bearer ",
            b"Basic the-admin-token-123",
            b"Bearers the-admin-token-123",
            b"Bearer the-admin-token-123 extra",
            b"",
        ] {
            assert!(!api.authorized(Some(refused)), "{}", refused.escape_ascii());
        }
    }

    #[test]
    fn the_user_parameter_is_decoded_once_and_never_guessed() {
        assert_eq!(user_param(None), Ok(None));
        assert_eq!(user_param(Some("other=1")), Ok(None));
        assert_eq!(user_param(Some("user=alice")), Ok(Some("alice".into())));
        assert_eq!(
            user_param(Some("user=a%2Bb%40x.com")),
            Ok(Some("a+b@x.com".into()))
        );
        assert_eq!(user_param(Some("user=a+b")), Ok(Some("a b".into())));
        assert_eq!(
            user_param(Some("user=%C3%A9l%C3%A9na")),
            Ok(Some("éléna".into()))
        );
        assert_eq!(
            user_param(Some("user=%EF%BF%BD")),
            Ok(Some("\u{FFFD}".into()))
        );
        assert!(user_param(Some("user=%E9")).is_err(), "not UTF-8");
        assert!(user_param(Some("user=42&user=alice")).is_err(), "twice");
    }

    #[test]
    fn numeric_ids_match_numbers_and_strings() {
        assert_eq!(
            user_candidates("42"),
            vec!["\"42\"".to_string(), "42".to_string()]
        );
        assert_eq!(user_candidates("alice"), vec!["\"alice\"".to_string()]);
        assert_eq!(user_candidates("true"), vec!["\"true\"", "true"]);
        // Only the canonical spelling means the number.
        for loose in [" 42", "42 ", "042", "+42"] {
            assert_eq!(user_candidates(loose).len(), 1, "{loose:?}");
        }
    }
}

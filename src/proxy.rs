//! The pingora `ProxyHttp` implementation: thin glue over the modules that do the work.
//!
//! Request: refuse forged cross-origin writes ([`crate::csrf`]) -> strip client `X-Session*`
//! headers -> verify the session cookie and remove it from `Cookie` -> load the session ->
//! send the app exactly one `X-Session`. Response: read and remove `X-Session-Set` /
//! `X-Session-Action` -> apply them to the store in one write -> add `Set-Cookie` when the
//! client's cookie must change. Store failures are mapped to
//! HTTP in one place, [`SessionProxy::store_failed`], according to `on_store_error`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use sha2::Sha256;

use crate::config::{Config, StoreErrorPolicy};
use crate::cookie::{self, CookieCodec, SessionId};
use crate::csrf;
use crate::metrics::Metrics;
use crate::protocol::{self, Action, Change, SetRejection};
use crate::store::{now_ms, SessionRecord, Store, StoreError};

/// Seconds a client is told to wait after a 503 caused by the store.
const RETRY_AFTER_SECS: &str = "1";

/// Keeps `sidecar_requests_in_flight` (which shutdown waits on) right: one per request
/// context, released when the context is dropped, whatever path the request took.
pub struct InFlightGuard(prometheus::IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What happened to the request's session, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Anonymous,
    Rejected,
    Miss,
    Hit,
    Created,
    Updated,
    Regenerated,
    Destroyed,
    SetRejected,
    StoreError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Anonymous => "none",
            Outcome::Rejected => "rejected",
            Outcome::Miss => "miss",
            Outcome::Hit => "hit",
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Regenerated => "regenerated",
            Outcome::Destroyed => "destroyed",
            Outcome::SetRejected => "set_rejected",
            Outcome::StoreError => "store_error",
        }
    }
}

/// A session found for the request.
pub struct Loaded {
    id: SessionId,
    key: String,
    record: SessionRecord,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    /// True when the request carried a session cookie (valid or not).
    had_cookie: bool,
    session: Option<Loaded>,
    /// The session could not be loaded because of the store (fail_open went on without it).
    load_failed: bool,
    /// Set when a store failure must turn the response into a 503.
    store_failure: bool,
    /// The session's expiry should be refreshed even without a change.
    touch_due: bool,
    /// Length of the `X-Session` value sent to the app.
    session_header_len: usize,
    outcome: Outcome,
    _in_flight: InFlightGuard,
}

/// Everything the proxy needs, prepared once at start.
pub struct SessionProxy {
    upstream: SocketAddr,
    connect_timeout: Duration,
    read_timeout: Duration,
    codec: CookieCodec,
    store: Store,
    metrics: Arc<Metrics>,
    csrf: csrf::Guard,
    header_mac: Option<Hmac<Sha256>>,
    idle_ms: u64,
    absolute_ms: u64,
    max_bytes: usize,
    max_header_bytes: usize,
    policy: StoreErrorPolicy,
    access_log: bool,
    /// The session field naming its user (`session.user_field`), for the user index.
    user_field: Option<String>,
}

impl SessionProxy {
    pub fn new(
        config: &Config,
        upstream: SocketAddr,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> SessionProxy {
        SessionProxy {
            upstream,
            connect_timeout: config.upstream_connect_timeout,
            read_timeout: config.upstream_read_timeout,
            codec: CookieCodec::new(&config.cookie),
            store,
            csrf: csrf::Guard::new(&config.csrf, &metrics),
            metrics,
            header_mac: config.session.header_secret.as_ref().map(|s| {
                Hmac::<Sha256>::new_from_slice(s).expect("HMAC accepts keys of any length")
            }),
            idle_ms: config.session.idle_timeout.as_millis() as u64,
            absolute_ms: config.session.absolute_timeout.as_millis() as u64,
            max_bytes: config.session.max_bytes,
            max_header_bytes: config.limits.max_header_bytes,
            policy: config.on_store_error,
            access_log: config.log.access,
            user_field: config.session.user_field.clone(),
        }
    }

    /// Expiry for a session created at `created_ms`, from `now`: the idle timeout, capped at
    /// the absolute limit. `None` when the absolute limit has passed.
    fn ttl(&self, created_ms: u64, now: u64) -> Option<Duration> {
        let end = created_ms.saturating_add(self.absolute_ms);
        if now >= end {
            return None;
        }
        Some(Duration::from_millis(self.idle_ms.min(end - now)))
    }

    /// The user a session's fields name, as JSON text.
    fn user_in(&self, fields: &[(String, String)]) -> Option<String> {
        let field = self.user_field.as_deref()?;
        fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.clone())
    }

    /// The user after `change` is applied to a session of `before`.
    fn user_after(&self, before: Option<String>, change: &Change) -> Option<String> {
        let field = self.user_field.as_deref()?;
        if change.delete.iter().any(|k| k == field) {
            return None;
        }
        match change.set.iter().find(|(k, _)| k == field) {
            Some((_, v)) => Some(v.clone()),
            None => before,
        }
    }

    /// Records a session in its user's index before the session itself is written, so
    /// "log out everywhere" can never miss it.
    async fn index_before_write(
        &self,
        ctx: &mut RequestCtx,
        user: Option<&str>,
        unchanged: Option<&str>,
        key: &str,
        deadline_ms: u64,
    ) -> Result<bool> {
        let Some(user) = user else {
            return Ok(true);
        };
        if unchanged == Some(user) {
            return Ok(true);
        }
        match self.store.index_add(user, key, deadline_ms).await {
            Ok(()) => Ok(true),
            Err(e) => self.write_failed(ctx, &e).map(|_| false),
        }
    }

    /// Removes a session from a user's index after the write made it stale. A failure only
    /// leaves an entry that is verified (and pruned) before it is ever used.
    async fn unindex_after_write(&self, user: Option<&str>, still: Option<&str>, key: &str) {
        if let Some(user) = user {
            if still != Some(user) {
                let _ = self.store.index_remove(user, key).await;
            }
        }
    }

    /// Maps a store failure to the client's answer. Under fail_closed the request becomes a
    /// 503 (through `fail_to_proxy`); under fail_open it goes on. Never clears a cookie.
    fn store_failed(&self, ctx: &mut RequestCtx, error: &StoreError) -> Result<()> {
        ctx.outcome = Outcome::StoreError;
        match self.policy {
            StoreErrorPolicy::FailClosed => {
                ctx.store_failure = true;
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    format!("session store: {error}"),
                ))
            }
            StoreErrorPolicy::FailOpen => Ok(()),
        }
    }

    fn request_header_bytes(session: &Session) -> usize {
        let req = session.req_header();
        let uri_len = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
            + req.uri.authority().map_or(0, |a| a.as_str().len());
        let mut total = req.method.as_str().len() + uri_len + 12;
        for (name, value) in req.headers.iter() {
            total += name.as_str().len() + value.len() + 4;
        }
        total
    }

    /// Finds the session cookie, removes it from what the app gets, and loads the session.
    async fn load_session(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let split = cookie::split_cookies(
            self.codec.name(),
            session
                .req_header()
                .headers
                .get_all(COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        );
        if !split.found {
            return Ok(());
        }
        ctx.had_cookie = true;
        let req = session.req_header_mut();
        req.remove_header(&COOKIE);
        if let Some(rest) = split.rest {
            if let Ok(value) = HeaderValue::from_bytes(&rest) {
                req.insert_header(COOKIE, value)?;
            }
        }
        let mut rejection = None;
        let mut id = None;
        for candidate in &split.candidates {
            match self.codec.verify(candidate) {
                Ok(verified) => {
                    id = Some(verified);
                    break;
                }
                Err(reason) => {
                    rejection.get_or_insert(reason);
                }
            }
        }
        let Some(id) = id else {
            if let Some(reason) = rejection {
                self.metrics
                    .cookies_rejected
                    .with_label_values(&[reason.label()])
                    .inc();
                tracing::debug!(reason = reason.label(), "session cookie rejected");
                crate::detect::cookie_rejected(crate::hostile::client_ip(session));
            }
            ctx.outcome = Outcome::Rejected;
            return Ok(());
        };
        let key = self.store.key_for(&id);
        match self.store.load(&key).await {
            Ok(Some(record)) => {
                let now = now_ms();
                if self.ttl(record.created_ms, now).is_none() {
                    self.metrics.loads_miss.inc();
                    self.reject_expired(ctx);
                    return Ok(());
                }
                self.metrics.loads_hit.inc();
                ctx.touch_due = now.saturating_sub(record.touched_ms) >= self.idle_ms / 4;
                ctx.outcome = Outcome::Hit;
                ctx.session = Some(Loaded { id, key, record });
                Ok(())
            }
            Ok(None) => {
                self.metrics.loads_miss.inc();
                self.reject_expired(ctx);
                Ok(())
            }
            Err(e) => {
                self.metrics.loads_error.inc();
                ctx.load_failed = true;
                self.store_failed(ctx, &e)
            }
        }
    }

    fn reject_expired(&self, ctx: &mut RequestCtx) {
        self.metrics
            .cookies_rejected
            .with_label_values(&["expired"])
            .inc();
        ctx.outcome = Outcome::Miss;
    }

    /// Applies the app's instructions; returns the `Set-Cookie` value to send, if any.
    async fn apply_response(
        &self,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Option<String>> {
        let set_values: Vec<&[u8]> = resp
            .headers
            .get_all(protocol::X_SESSION_SET)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let (action, unknown) = protocol::parse_actions(
            resp.headers
                .get_all(protocol::X_SESSION_ACTION)
                .iter()
                .map(|v| v.as_bytes()),
        );
        if !unknown.is_empty() {
            tracing::warn!(actions = ?unknown, "ignored unknown X-Session-Action");
        }
        let change = if set_values.is_empty() {
            Ok(Change::default())
        } else {
            protocol::parse_sets(set_values).and_then(|c| self.check_size(c, ctx))
        };
        let change = match change {
            Ok(c) => Some(c),
            Err(reason) => {
                self.metrics
                    .set_rejected
                    .with_label_values(&[reason.label()])
                    .inc();
                tracing::warn!(reason = reason.label(), "X-Session-Set rejected: {reason}");
                ctx.outcome = Outcome::SetRejected;
                None
            }
        };
        let now = now_ms();
        match (action, change) {
            (Some(Action::DestroyAll), _) => self.destroy_all(ctx).await,
            (Some(Action::Destroy), _) => self.destroy(ctx).await,
            (_, None) => Ok(None),
            (Some(Action::Regenerate), Some(change)) => self.regenerate(ctx, change, now).await,
            (None, Some(change)) if !change.is_empty() => self.update(ctx, change, now).await,
            (None, Some(_)) => self.touch(ctx, now).await,
        }
    }

    fn check_size(
        &self,
        change: Change,
        ctx: &RequestCtx,
    ) -> std::result::Result<Change, SetRejection> {
        // Replacing or deleting fields never grows the session, so the size the app was sent
        // plus every set field bounds the result; only near the limit is it measured exactly.
        let bound = ctx.session_header_len
            + change
                .set
                .iter()
                .map(|(k, v)| protocol::encoded_field_len(k, v))
                .sum::<usize>();
        if bound <= self.max_bytes {
            return Ok(change);
        }
        let current: &[(String, String)] = ctx
            .session
            .as_ref()
            .map(|s| s.record.fields.as_slice())
            .unwrap_or(&[]);
        let merged = change.merged(current);
        let encoded =
            protocol::encode_session(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if encoded.len() > self.max_bytes {
            return Err(SetRejection::TooLarge);
        }
        Ok(change)
    }

    fn write_failed(&self, ctx: &mut RequestCtx, e: &StoreError) -> Result<Option<String>> {
        self.metrics.writes_error.inc();
        if self.policy == StoreErrorPolicy::FailOpen {
            self.metrics.writes_dropped.inc();
        }
        self.store_failed(ctx, e).map(|_| None)
    }

    async fn destroy(&self, ctx: &mut RequestCtx) -> Result<Option<String>> {
        let Some(loaded) = ctx.session.take() else {
            // No live session: nothing to delete, but a stale cookie may still be expired.
            // After a load failure the cookie is kept, so the session resumes later.
            return Ok((ctx.had_cookie && !ctx.load_failed).then(|| self.codec.expire_cookie()));
        };
        match self.store.destroy(&loaded.key).await {
            Ok(_) => {
                self.metrics.writes_ok.inc();
                self.metrics
                    .sessions_destroyed
                    .with_label_values(&["app"])
                    .inc();
                ctx.outcome = Outcome::Destroyed;
                let user = self.user_in(&loaded.record.fields);
                self.unindex_after_write(user.as_deref(), None, &loaded.key)
                    .await;
                Ok(Some(self.codec.expire_cookie()))
            }
            Err(e) => {
                // Under fail_open a logout still logs the browser out.
                self.write_failed(ctx, &e)?;
                Ok(Some(self.codec.expire_cookie()))
            }
        }
    }

    /// `destroy-all`: ends every session of the current session's user (found through the
    /// user index, each verified to still name that user), the current one included.
    /// Without `session.user_field`, or a session without a user, it is a plain destroy.
    async fn destroy_all(&self, ctx: &mut RequestCtx) -> Result<Option<String>> {
        let (Some(field), Some(loaded)) = (self.user_field.as_deref(), ctx.session.as_ref()) else {
            return self.destroy(ctx).await;
        };
        let Some(user) = self.user_in(&loaded.record.fields) else {
            return self.destroy(ctx).await;
        };
        let current = loaded.key.clone();
        let mut keys: Vec<String> = match self.store.user_sessions(field, &user).await {
            Ok(found) => found.into_iter().map(|(k, _)| k).collect(),
            Err(e) => return self.write_failed(ctx, &e),
        };
        if !keys.contains(&current) {
            keys.push(current);
        }
        match self.store.destroy_many(&user, &keys).await {
            Ok(n) => {
                self.metrics.writes_ok.inc();
                self.metrics
                    .sessions_destroyed
                    .with_label_values(&["destroy_all"])
                    .inc_by(n as u64);
                ctx.session = None;
                ctx.outcome = Outcome::Destroyed;
                tracing::info!(sessions = n, "destroy-all ended every session of a user");
                Ok(Some(self.codec.expire_cookie()))
            }
            Err(e) => self.write_failed(ctx, &e),
        }
    }

    async fn create(
        &self,
        ctx: &mut RequestCtx,
        change: &Change,
        now: u64,
    ) -> Result<Option<String>> {
        if change.set.is_empty() {
            return Ok(None);
        }
        if ctx.load_failed {
            // The client's own session may come back with the store: never replace its cookie.
            return self.write_failed(ctx, &StoreError::Unavailable("session not loaded".into()));
        }
        let id = SessionId::generate();
        let key = self.store.key_for(&id);
        let ttl = self.ttl(now, now).unwrap_or(Duration::from_millis(1));
        let user = self.user_after(None, change);
        if !self
            .index_before_write(ctx, user.as_deref(), None, &key, now + self.absolute_ms)
            .await?
        {
            return Ok(None);
        }
        match self.store.create(&key, &change.set, now, ttl).await {
            Ok(()) => {
                self.metrics.writes_ok.inc();
                self.metrics.sessions_created.inc();
                ctx.outcome = Outcome::Created;
                Ok(Some(self.codec.set_cookie(&id)))
            }
            Err(e) => self.write_failed(ctx, &e),
        }
    }

    async fn update(
        &self,
        ctx: &mut RequestCtx,
        change: Change,
        now: u64,
    ) -> Result<Option<String>> {
        let Some(loaded) = &ctx.session else {
            return self.create(ctx, &change, now).await;
        };
        let Some(ttl) = self.ttl(loaded.record.created_ms, now) else {
            ctx.session = None;
            return self.create(ctx, &change, now).await;
        };
        let key = loaded.key.clone();
        let id = loaded.id.clone();
        let deadline = loaded.record.created_ms + self.absolute_ms;
        let before = self.user_in(&loaded.record.fields);
        let after = self.user_after(before.clone(), &change);
        if !self
            .index_before_write(ctx, after.as_deref(), before.as_deref(), &key, deadline)
            .await?
        {
            return Ok(None);
        }
        match self.store.update(&key, &change, now, ttl).await {
            Ok(true) => {
                self.metrics.writes_ok.inc();
                ctx.outcome = Outcome::Updated;
                self.unindex_after_write(before.as_deref(), after.as_deref(), &key)
                    .await;
                Ok(self.refreshed_cookie(&id))
            }
            Ok(false) => {
                // Destroyed or expired since it was loaded: start a new session.
                ctx.session = None;
                self.create(ctx, &change, now).await
            }
            Err(e) => self.write_failed(ctx, &e),
        }
    }

    async fn regenerate(
        &self,
        ctx: &mut RequestCtx,
        change: Change,
        now: u64,
    ) -> Result<Option<String>> {
        let Some(loaded) = &ctx.session else {
            return self.create(ctx, &change, now).await;
        };
        let Some(ttl) = self.ttl(loaded.record.created_ms, now) else {
            ctx.session = None;
            return self.create(ctx, &change, now).await;
        };
        let new_id = SessionId::generate();
        let new_key = self.store.key_for(&new_id);
        let old_key = loaded.key.clone();
        let deadline = loaded.record.created_ms + self.absolute_ms;
        let before = self.user_in(&loaded.record.fields);
        let after = self.user_after(before.clone(), &change);
        if !self
            .index_before_write(ctx, after.as_deref(), None, &new_key, deadline)
            .await?
        {
            return Ok(None);
        }
        match self
            .store
            .regenerate(&old_key, &new_key, &change, now, ttl)
            .await
        {
            Ok(true) => {
                self.metrics.writes_ok.inc();
                self.metrics.sessions_regenerated.inc();
                ctx.outcome = Outcome::Regenerated;
                self.unindex_after_write(before.as_deref(), None, &old_key)
                    .await;
                Ok(Some(self.codec.set_cookie(&new_id)))
            }
            Ok(false) => {
                ctx.session = None;
                self.create(ctx, &change, now).await
            }
            Err(e) => self.write_failed(ctx, &e),
        }
    }

    /// Refreshes the expiry of a session that was only read, at most once per quarter of the
    /// idle timeout. A failure here loses nothing the app wrote, so it never fails the request.
    async fn touch(&self, ctx: &mut RequestCtx, now: u64) -> Result<Option<String>> {
        let Some(loaded) = &ctx.session else {
            return Ok(None);
        };
        if !ctx.touch_due {
            return Ok(None);
        }
        let Some(ttl) = self.ttl(loaded.record.created_ms, now) else {
            return Ok(None);
        };
        match self
            .store
            .update(&loaded.key, &Change::default(), now, ttl)
            .await
        {
            Ok(true) => {
                self.metrics.writes_ok.inc();
                Ok(self.refreshed_cookie(&loaded.id))
            }
            Ok(false) => Ok(None),
            Err(_) => {
                self.metrics.writes_error.inc();
                Ok(None)
            }
        }
    }

    /// With `cookie.max_age`, the cookie's lifetime slides with the session's.
    fn refreshed_cookie(&self, id: &SessionId) -> Option<String> {
        self.codec.max_age().map(|_| self.codec.set_cookie(id))
    }

    /// The session cookie belongs to the sidecar: a `Set-Cookie` for its name from the app
    /// (careless or compromised) is dropped, so the app cannot fix a client's session.
    fn strip_app_session_cookie(&self, resp: &mut ResponseHeader) -> Result<()> {
        let name = self.codec.name().as_bytes();
        let is_ours = |v: &HeaderValue| {
            let b = v.as_bytes();
            let end = b.iter().position(|c| *c == b'=').unwrap_or(b.len());
            b[..end].trim_ascii() == name
        };
        if !resp.headers.get_all(SET_COOKIE).iter().any(is_ours) {
            return Ok(());
        }
        let kept: Vec<HeaderValue> = resp
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter(|v| !is_ours(v))
            .cloned()
            .collect();
        tracing::warn!("dropped the app's Set-Cookie for the session cookie");
        resp.remove_header(&SET_COOKIE);
        for v in kept {
            resp.append_header(SET_COOKIE, v)?;
        }
        Ok(())
    }

    /// Sends an empty response with proper framing.
    async fn respond_empty(session: &mut Session, code: u16, retry_after: bool) -> Result<()> {
        let mut resp = ResponseHeader::build(code, Some(3))?;
        resp.insert_header(CONTENT_LENGTH, "0")?;
        if retry_after {
            resp.insert_header(RETRY_AFTER, RETRY_AFTER_SECS)?;
        }
        resp.insert_header(CACHE_CONTROL, "no-store")?;
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await
    }

    /// Sends a short plain-text answer that no cache keeps.
    async fn respond_text(session: &mut Session, code: u16, body: &'static [u8]) -> Result<()> {
        let mut resp = ResponseHeader::build(code, Some(4))?;
        resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(CONTENT_LENGTH, body.len())?;
        resp.insert_header(CACHE_CONTROL, "no-store")?;
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(body)), true)
            .await
    }
}

/// Removes every header of the `X-Session*` family, in any case or spelling.
/// Returns how many were removed.
fn strip_reserved(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| protocol::is_reserved_request_header(name.as_str()))
        .cloned()
        .collect()
}

/// Makes a response that sets the session cookie private to the browser: shared caches must
/// not store it. Other responses keep the app's `Cache-Control` untouched.
fn mark_private(resp: &mut ResponseHeader) -> Result<()> {
    let existing: Vec<String> = resp
        .headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    let lower: Vec<String> = existing.iter().map(|d| d.to_ascii_lowercase()).collect();
    if lower.iter().any(|d| d == "private" || d == "no-store") {
        return Ok(());
    }
    let mut directives: Vec<String> = existing
        .into_iter()
        .filter(|d| {
            let l = d.to_ascii_lowercase();
            l != "public" && !l.starts_with("s-maxage")
        })
        .collect();
    directives.push("private".into());
    directives.push("no-cache=\"Set-Cookie\"".into());
    resp.insert_header(CACHE_CONTROL, directives.join(", "))?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for SessionProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.in_flight.inc();
        RequestCtx {
            start: Instant::now(),
            had_cookie: false,
            session: None,
            load_failed: false,
            store_failure: false,
            touch_due: false,
            session_header_len: 2,
            outcome: Outcome::Anonymous,
            _in_flight: InFlightGuard(self.metrics.in_flight.clone()),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if crate::hostile::check_request(session).is_err() {
            Self::respond_empty(session, 400, false).await?;
            return Ok(true);
        }
        if Self::request_header_bytes(session) > self.max_header_bytes {
            Self::respond_empty(session, 431, false).await?;
            return Ok(true);
        }
        if self.csrf.refuses(session.req_header()) {
            Self::respond_text(session, 403, csrf::REFUSED_BODY).await?;
            return Ok(true);
        }
        let spoofed = strip_reserved(&session.req_header().headers);
        if !spoofed.is_empty() {
            self.metrics
                .client_headers_stripped
                .inc_by(spoofed.len() as u64);
            tracing::info!(headers = ?spoofed, "removed client-supplied session headers");
            let req = session.req_header_mut();
            for name in &spoofed {
                req.remove_header(name);
            }
        }

        if let Err(e) = self.load_session(session, ctx).await {
            if ctx.store_failure {
                Self::respond_empty(session, 503, true).await?;
                return Ok(true);
            }
            return Err(e);
        }

        let value = match &ctx.session {
            Some(s) => HeaderValue::try_from(protocol::encode_session(
                s.record
                    .fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ))
            .map_err(|e| Error::because(ErrorType::InternalError, "X-Session value", e))?,
            None => HeaderValue::from_static("{}"),
        };
        ctx.session_header_len = value.len();
        let req = session.req_header_mut();
        if let Some(mac) = &self.header_mac {
            let text = std::str::from_utf8(value.as_bytes()).unwrap_or_default();
            let signature = cookie::sign_header(mac, now_ms() / 1000, text);
            req.insert_header(protocol::X_SESSION_SIGNATURE, signature)?;
        }
        req.insert_header(protocol::X_SESSION, value)?;
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let has_instructions = resp.headers.contains_key(protocol::X_SESSION_SET)
            || resp.headers.contains_key(protocol::X_SESSION_ACTION);
        let set_cookie = if has_instructions || ctx.touch_due {
            self.apply_response(resp, ctx).await?
        } else {
            None
        };
        for name in strip_reserved(&resp.headers) {
            resp.remove_header(&name);
        }
        self.strip_app_session_cookie(resp)?;
        if let Some(value) = set_cookie {
            resp.append_header(SET_COOKIE, value)?;
            mark_private(resp)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = if ctx.store_failure {
            503
        } else {
            match e.etype() {
                ErrorType::HTTPStatus(code) => *code,
                _ => match e.esource() {
                    ErrorSource::Upstream => 502,
                    ErrorSource::Downstream => match e.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => 0,
                        _ => 400,
                    },
                    ErrorSource::Internal | ErrorSource::Unset => 500,
                },
            }
        };
        if code > 0 && session.response_written().is_none() {
            if let Err(err) = Self::respond_empty(session, code, code == 503).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // Store failures are logged (once, without IDs) where they happen; a client that
        // goes away is normal traffic, not an error worth a line.
        let client_gone = *error.esource() == ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        if client_gone {
            tracing::debug!(error = %error, "client went away");
        }
        ctx.store_failure || client_gone
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let elapsed = ctx.start.elapsed();
        self.metrics
            .requests
            .with_label_values(&[status_label(status)])
            .inc();
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(e) = e {
            if *e.esource() == ErrorSource::Upstream && !ctx.store_failure {
                self.metrics.upstream_errors.inc();
            }
        }
        if self.access_log {
            let req = session.req_header();
            tracing::info!(
                target: "access",
                method = %req.method,
                path = req.uri.path(),
                status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                session = ctx.outcome.as_str(),
                "request"
            );
        }
    }
}

/// Status code as a label without allocating for the common codes.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

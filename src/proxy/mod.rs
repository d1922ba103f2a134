//! The pingora `ProxyHttp` implementation: a short list of calls into the modules that do the
//! work.
//!
//! Request: framing and size checks -> refuse forged cross-origin writes ([`crate::csrf`])
//! -> strip client `X-Session*` -> take the session cookie out of `Cookie` -> [`Engine::load`] -> send the app exactly one `X-Session`. Response:
//! read the app's instructions -> [`Engine::finish`] -> answer a store failure per
//! `on_store_error` ([`failure`]) -> strip the instructions -> `Set-Cookie` when the client's
//! cookie must change.

mod failure;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use sha2::Sha256;

use crate::config::{Config, StoreErrorPolicy};
use crate::cookie;
use crate::cookie_abuse::RejectionTracker;
use crate::csrf;
use crate::metrics::Metrics;
use crate::protocol;
use crate::session::{Engine, Instructions, Loaded, Outcome};
use crate::store::{now_ms, Store};

/// Keeps `sidecar_requests_in_flight` (which shutdown waits on) right: one per request
/// context, released when the context is dropped, whatever path the request took.
pub struct InFlightGuard(prometheus::IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    /// The request's session as it arrived; consumed when the response is finished.
    loaded: Loaded,
    /// A store failure turned (or must turn) the answer into a 503.
    store_failure: bool,
    outcome: Outcome,
    /// The `X-Session` value for the app, added to the upstream request as its last step.
    x_session: HeaderValue,
    _in_flight: InFlightGuard,
}

/// Everything the proxy needs, prepared once at start.
pub struct SessionProxy {
    upstream: SocketAddr,
    connect_timeout: Duration,
    read_timeout: Duration,
    engine: Engine,
    csrf: csrf::Guard,
    metrics: Arc<Metrics>,
    header_mac: Option<Hmac<Sha256>>,
    max_header_bytes: usize,
    policy: StoreErrorPolicy,
    access_log: bool,
}

impl SessionProxy {
    pub fn new(
        config: &Config,
        upstream: SocketAddr,
        store: Store,
        metrics: Arc<Metrics>,
        abuse: Arc<RejectionTracker>,
    ) -> SessionProxy {
        SessionProxy {
            upstream,
            connect_timeout: config.upstream_connect_timeout,
            read_timeout: config.upstream_read_timeout,
            engine: Engine::new(config, store, metrics.clone(), abuse),
            csrf: csrf::Guard::new(&config.csrf, &metrics),
            metrics,
            header_mac: config.session.header_secret.as_ref().map(|s| {
                Hmac::<Sha256>::new_from_slice(s).expect("HMAC accepts keys of any length")
            }),
            max_header_bytes: config.limits.max_header_bytes,
            policy: config.on_store_error,
            access_log: config.log.access,
        }
    }

    /// Sends an empty response with proper framing and closes the connection.
    async fn respond_empty(session: &mut Session, code: u16) -> Result<()> {
        let mut resp = ResponseHeader::build(code, Some(3))?;
        resp.insert_header(CONTENT_LENGTH, "0")?;
        if code == 503 {
            resp.insert_header(RETRY_AFTER, failure::RETRY_AFTER_SECS)?;
        }
        resp.insert_header(CACHE_CONTROL, "no-store")?;
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await
    }

    /// Sends a short plain-text answer that no cache keeps, and closes the connection (the
    /// request's body is never read).
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

    /// Gives the request sent to the app exactly one `X-Session` (and its signature, when
    /// configured). Done in `upstream_request_filter`, after pingora has removed the headers
    /// a client names in `Connection`, so `Connection: X-Session` cannot take it away.
    fn send_session(&self, req: &mut RequestHeader, value: HeaderValue) -> Result<()> {
        if let Some(mac) = &self.header_mac {
            let text = std::str::from_utf8(value.as_bytes()).unwrap_or_default();
            let signature = cookie::sign_header(mac, now_ms() / 1000, text);
            req.insert_header(protocol::X_SESSION_SIGNATURE, signature)?;
        }
        req.insert_header(protocol::X_SESSION, value)?;
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for SessionProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.in_flight.inc();
        RequestCtx {
            start: Instant::now(),
            loaded: Loaded::Anonymous,
            store_failure: false,
            outcome: Outcome::Anonymous,
            x_session: HeaderValue::from_static("{}"),
            _in_flight: InFlightGuard(self.metrics.in_flight.clone()),
        }
    }

    /// No response compression module: the sidecar never compresses, and the default adds
    /// a disabled module to every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Pipelined HTTP/1.1 requests are answered in order rather than dropped.
        session.set_pipelining_enabled(true);
        if crate::framing::check_request(session).is_err() {
            Self::respond_empty(session, 400).await?;
            return Ok(true);
        }
        if headers::request_bytes(session.req_header()) > self.max_header_bytes {
            Self::respond_empty(session, 431).await?;
            return Ok(true);
        }
        if self.csrf.refuses(session.req_header()) {
            Self::respond_text(session, 403, csrf::REFUSED_BODY).await?;
            return Ok(true);
        }
        let stripped = headers::strip_client_copies(session.req_header_mut());
        if stripped > 0 {
            self.metrics.client_headers_stripped.inc_by(stripped as u64);
        }
        let name = self.engine.codec().name();
        let candidates = headers::take_session_cookies(session.req_header_mut(), name)?;
        let client = crate::framing::client_ip(session);
        let (loaded, x_session) = self.engine.load(&candidates, client, now_ms()).await;
        ctx.outcome = Outcome::of(&loaded);
        if let Loaded::Unavailable(e) = &loaded {
            if let Some(code) = failure::store_failure_status(self.policy) {
                tracing::debug!(error = %e, "session not loaded");
                ctx.store_failure = true;
                Self::respond_empty(session, code).await?;
                return Ok(true);
            }
        }
        ctx.loaded = loaded;
        if let Some(v) = x_session {
            ctx.x_session = HeaderValue::try_from(v)
                .map_err(|e| Error::because(ErrorType::InternalError, "X-Session value", e))?;
        }
        Ok(false)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.send_session(upstream_request, ctx.x_session.clone())
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
        // An interim answer (100 Continue, 103 Early Hints) is not the response: the session
        // is settled once, on the final one, so here instructions and the app's session
        // cookie are only removed. 101 ends the HTTP exchange, so it is the final response.
        if headers::is_interim(resp.status) {
            headers::strip_instructions(resp);
            headers::drop_app_session_cookie(resp, self.engine.codec().name())?;
            return Ok(());
        }
        let touch_due = ctx.loaded.live().is_some_and(|l| l.touch_due);
        let has_instructions = headers::has_instructions(resp);
        let set_cookie = if has_instructions || touch_due {
            let instructions = if has_instructions {
                headers::instructions(resp)
            } else {
                Instructions::none()
            };
            let loaded = std::mem::replace(&mut ctx.loaded, Loaded::Anonymous);
            let finish = self.engine.finish(loaded, &instructions, now_ms()).await;
            ctx.outcome = finish.outcome;
            if let Some(e) = finish.failure {
                if failure::store_failure_status(self.policy).is_some() {
                    ctx.store_failure = true;
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(503),
                        format!("session store: {e}"),
                    ));
                }
            }
            self.engine.set_cookie(&finish.cookie)
        } else {
            None
        };
        headers::strip_instructions(resp);
        headers::drop_app_session_cookie(resp, self.engine.codec().name())?;
        if let Some(value) = set_cookie {
            headers::set_cookie(resp, value)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = failure::error_status(e, ctx.store_failure);
        if let Some(code) = code {
            // Nothing final was sent yet: nothing at all, or only an interim 1xx, after which
            // a final answer may still follow.
            let final_sent = session
                .response_written()
                .is_some_and(|r| !headers::is_interim(r.status));
            if !final_sent {
                if let Err(err) = Self::respond_empty(session, code).await {
                    tracing::debug!(error = %err, "could not send the error response");
                }
            }
        }
        FailToProxy {
            error_code: code.unwrap_or(failure::CLIENT_CLOSED),
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // Store failures are logged (once, without IDs) where they happen; a client that
        // goes away is normal traffic, not an error worth a line.
        let client_gone = failure::client_gone(error);
        if client_gone {
            tracing::debug!(error = %error, "client went away");
        }
        ctx.store_failure || client_gone
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = failure::counted_status(session.response_written().map(|r| r.status.as_u16()));
        let elapsed = ctx.start.elapsed();
        self.metrics.count_request(status);
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

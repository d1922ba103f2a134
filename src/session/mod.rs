//! The session lifecycle, free of pingora and HTTP:
//!
//! request  → [`Engine::load`]: verify the cookie candidates, load the session → [`Loaded`]
//! response → [`Engine::finish`]: [`plan`] (pure: every branch of the lifecycle) →
//!            `execute` (the plan against the store) → [`Finish`]: the cookie decision,
//!            the outcome, and a store failure for the caller to answer per `on_store_error`.
//!
//! Every metric of the lifecycle is recorded here, in [`Engine::account_load`] and
//! [`Engine::account`]; the clock is passed in.

pub mod expiry;
pub mod model;
pub mod plan;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

pub use expiry::Expiry;
pub use model::{is_reserved_key, Action, Change, Instructions, SetRejection, RESERVED_PREFIX};
pub use plan::{plan, Live, Loaded, Plan, Policy, Step, WriteKind};

use crate::config::{Config, StoreErrorPolicy};
use crate::cookie::{CookieCodec, SessionId};
use crate::cookie_abuse::RejectionTracker;
use crate::metrics::Metrics;
use crate::protocol;
use crate::store::{SessionRecord, Store, StoreError};

/// What the client's session cookie should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieDecision {
    /// Leave the client's cookie as it is (no `Set-Cookie`).
    Keep,
    /// Send a cookie for this session.
    Set(SessionId),
    /// Send an expired cookie (logout).
    Expire,
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
    /// The session ended while the request was at the app; its change was dropped.
    Ended,
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
            Outcome::Ended => "ended",
            Outcome::StoreError => "store_error",
        }
    }

    /// The outcome of a request whose response changed nothing.
    pub fn of(loaded: &Loaded) -> Outcome {
        match loaded {
            Loaded::Anonymous => Outcome::Anonymous,
            Loaded::Rejected(_) => Outcome::Rejected,
            Loaded::Expired => Outcome::Miss,
            Loaded::Unavailable(_) => Outcome::StoreError,
            Loaded::Live(_) => Outcome::Hit,
        }
    }
}

/// Why a change the app asked for was not applied (`sidecar_session_changes_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Under `fail_open`, the store could not save it.
    StoreError,
    /// The session ended (destroyed, regenerated, expired) while the request was at the app.
    SessionEnded,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::StoreError => "store_error",
            DropReason::SessionEnded => "session_ended",
        }
    }
}

/// The result of a response's session work.
#[derive(Debug)]
pub struct Finish {
    pub cookie: CookieDecision,
    pub outcome: Outcome,
    /// A write that failed; the caller answers it according to `on_store_error`.
    pub failure: Option<StoreError>,
}

/// What one response did, for the metrics.
#[derive(Debug, Default)]
struct Tally {
    write_ok: Option<bool>,
    created: bool,
    regenerated: bool,
    destroyed: Option<(&'static str, usize)>,
    dropped: Option<DropReason>,
    set_rejected: Option<SetRejection>,
}

/// The lifecycle, prepared once at start; shared by every request.
pub struct Engine {
    store: Store,
    codec: CookieCodec,
    metrics: Arc<Metrics>,
    /// Rejected cookies per client address, for the brute-force warning.
    abuse: Arc<RejectionTracker>,
    policy: Policy,
}

impl Engine {
    pub fn new(
        config: &Config,
        store: Store,
        metrics: Arc<Metrics>,
        abuse: Arc<RejectionTracker>,
    ) -> Engine {
        Engine {
            store,
            codec: CookieCodec::new(&config.cookie),
            metrics,
            abuse,
            policy: Policy {
                expiry: Expiry::new(config.session.idle_timeout, config.session.absolute_timeout),
                max_bytes: config.session.max_bytes,
                on_store_error: config.on_store_error,
                user_field: config.session.user_field.clone(),
                refresh_cookie: config.cookie.max_age.is_some(),
            },
        }
    }

    pub fn codec(&self) -> &CookieCodec {
        &self.codec
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `Set-Cookie` value for a cookie decision, if any.
    pub fn set_cookie(&self, decision: &CookieDecision) -> Option<String> {
        match decision {
            CookieDecision::Keep => None,
            CookieDecision::Set(id) => Some(self.codec.set_cookie(id)),
            CookieDecision::Expire => Some(self.codec.expire_cookie()),
        }
    }

    /// Finds the session of the first cookie candidate that verifies. Returns the loaded
    /// state and, for a live session, its `X-Session` value.
    pub async fn load(
        &self,
        candidates: &[Vec<u8>],
        client: Option<IpAddr>,
        now: u64,
    ) -> (Loaded, Option<String>) {
        let loaded = self.load_inner(candidates, now).await;
        self.account_load(&loaded, client);
        match loaded {
            Loaded::Live(mut live) => {
                let header = protocol::encode_session(
                    live.record
                        .fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                );
                live.header_len = header.len();
                (Loaded::Live(live), Some(header))
            }
            other => (other, None),
        }
    }

    async fn load_inner(&self, candidates: &[Vec<u8>], now: u64) -> Loaded {
        if candidates.is_empty() {
            return Loaded::Anonymous;
        }
        let mut rejection = None;
        let mut verified = None;
        for candidate in candidates {
            match self.codec.verify(candidate) {
                Ok(id) => {
                    verified = Some(id);
                    break;
                }
                Err(reason) => {
                    rejection.get_or_insert(reason);
                }
            }
        }
        let Some(id) = verified else {
            return rejection.map_or(Loaded::Anonymous, Loaded::Rejected);
        };
        let key = self.store.key_for(&id);
        let record = match self.store.load(&key).await {
            Ok(Some(record)) => record,
            Ok(None) => return Loaded::Expired,
            Err(e) => return Loaded::Unavailable(e),
        };
        let expiry = &self.policy.expiry;
        if !expiry.plausible(record.created_ms, record.touched_ms, now) {
            crate::store::note_corrupt_metadata();
            return Loaded::Expired;
        }
        if expiry.ttl(record.created_ms, now).is_none() {
            return Loaded::Expired;
        }
        Loaded::Live(Live {
            touch_due: expiry.touch_due(record.touched_ms, now),
            id,
            key,
            record,
            header_len: 2,
        })
    }

    /// Applies what the app asked to the request's session.
    pub async fn finish(&self, loaded: Loaded, instructions: &Instructions, now: u64) -> Finish {
        let plan = plan(&loaded, instructions, &self.policy, now);
        let mut tally = Tally {
            set_rejected: plan.set_rejected,
            ..Tally::default()
        };
        if let Some(reason) = plan.set_rejected {
            tracing::warn!(reason = reason.label(), "X-Session-Set rejected: {reason}");
        }
        let mut finish = self.execute(&loaded, plan.step, now, &mut tally).await;
        if finish.outcome == Outcome::of(&loaded) && tally.set_rejected.is_some() {
            finish.outcome = Outcome::SetRejected;
        }
        if let Some(e) = &finish.failure {
            tally.write_ok = Some(false);
            finish.outcome = Outcome::StoreError;
            if self.policy.on_store_error == StoreErrorPolicy::FailOpen {
                tally.dropped = Some(DropReason::StoreError);
            }
            tracing::debug!(error = %e, "session change not saved");
        }
        if tally.dropped == Some(DropReason::SessionEnded) {
            finish.outcome = Outcome::Ended;
            tracing::info!(
                "session ended while the request was at the app: its change was dropped"
            );
        }
        self.account(&tally);
        finish
    }

    async fn execute(
        &self,
        loaded: &Loaded,
        step: Step<'_>,
        now: u64,
        tally: &mut Tally,
    ) -> Finish {
        let done = |cookie, outcome| Finish {
            cookie,
            outcome,
            failure: None,
        };
        let failed = |e| Finish {
            cookie: CookieDecision::Keep,
            outcome: Outcome::StoreError,
            failure: Some(e),
        };
        let unchanged = Outcome::of(loaded);
        let live = loaded.live();
        match (step, live) {
            (Step::Nothing, _) => done(CookieDecision::Keep, unchanged),
            (Step::ExpireCookie, _) => done(CookieDecision::Expire, unchanged),
            (Step::Refuse, _) => failed(StoreError::Unavailable("session not loaded".into())),
            (Step::Ended, _) => {
                tally.dropped = Some(DropReason::SessionEnded);
                done(CookieDecision::Keep, Outcome::Ended)
            }
            (
                Step::Create {
                    set,
                    user,
                    ttl,
                    deadline_ms,
                },
                _,
            ) => {
                let id = SessionId::generate();
                let key = self.store.key_for(&id);
                if let Some(user) = &user {
                    if let Err(e) = self.store.index_add(user, &key, deadline_ms, ttl).await {
                        return failed(e);
                    }
                }
                match self.store.create(&key, set, now, ttl).await {
                    Ok(()) => {
                        tally.write_ok = Some(true);
                        tally.created = true;
                        done(CookieDecision::Set(id), Outcome::Created)
                    }
                    Err(e) => failed(e),
                }
            }
            (
                Step::Write {
                    kind,
                    change,
                    ttl,
                    deadline_ms,
                    user_before,
                    user_after,
                },
                Some(live),
            ) => {
                let (before, after) = (user_before.as_deref(), user_after.as_deref());
                let target = match kind {
                    WriteKind::Regenerate => {
                        let id = SessionId::generate();
                        let key = self.store.key_for(&id);
                        Some((id, key))
                    }
                    WriteKind::Update | WriteKind::Touch => None,
                };
                let written_key = target.as_ref().map_or(&live.key, |(_, k)| k);
                // Regenerate: the new key is always new to the index.
                let index = match kind {
                    WriteKind::Regenerate => after,
                    _ => users::to_index(before, after),
                };
                if let Some(user) = index {
                    let added = self.store.index_add(user, written_key, deadline_ms, ttl);
                    if let Err(e) = added.await {
                        return failed(e);
                    }
                }
                let result = match &target {
                    Some((_, new_key)) => {
                        self.store
                            .regenerate(&live.key, new_key, change, now, ttl)
                            .await
                    }
                    // The session stays in its user's index, which expires no earlier than
                    // the session (an entry added above already did both).
                    None => {
                        let slide = if index.is_none() { after } else { None };
                        let slide = slide.map(|user| (user, deadline_ms));
                        self.store.update(&live.key, change, now, ttl, slide).await
                    }
                };
                match result {
                    Ok(true) => {
                        tally.write_ok = Some(true);
                        let stale = match kind {
                            WriteKind::Regenerate => before,
                            _ => users::to_unindex(before, after),
                        };
                        if let Some(user) = stale {
                            let _ = self.store.index_remove(user, &live.key).await;
                        }
                        match target {
                            Some((id, _)) => {
                                tally.regenerated = true;
                                done(CookieDecision::Set(id), Outcome::Regenerated)
                            }
                            None => {
                                let cookie = if self.policy.refresh_cookie {
                                    CookieDecision::Set(live.id.clone())
                                } else {
                                    CookieDecision::Keep
                                };
                                let outcome = match kind {
                                    WriteKind::Touch => unchanged,
                                    _ => Outcome::Updated,
                                };
                                done(cookie, outcome)
                            }
                        }
                    }
                    Ok(false) => {
                        // Ended while the request was at the app: nothing was written, and
                        // an index entry added for it is taken back.
                        if let Some(user) = index {
                            let _ = self.store.index_remove(user, written_key).await;
                        }
                        if kind == WriteKind::Touch {
                            return done(CookieDecision::Keep, unchanged);
                        }
                        tally.dropped = Some(DropReason::SessionEnded);
                        done(CookieDecision::Keep, Outcome::Ended)
                    }
                    Err(e) if kind == WriteKind::Touch => {
                        // A refresh loses nothing the app wrote: it never fails the request.
                        tracing::debug!(error = %e, "session expiry refresh failed");
                        tally.write_ok = Some(false);
                        done(CookieDecision::Keep, unchanged)
                    }
                    Err(e) => failed(e),
                }
            }
            (Step::Destroy { user }, Some(live)) => match self.store.destroy(&live.key).await {
                Ok(true) => {
                    tally.write_ok = Some(true);
                    tally.destroyed = Some(("app", 1));
                    if let Some(user) = &user {
                        let _ = self.store.index_remove(user, &live.key).await;
                    }
                    done(CookieDecision::Expire, Outcome::Destroyed)
                }
                Ok(false) => {
                    tally.dropped = Some(DropReason::SessionEnded);
                    done(CookieDecision::Keep, Outcome::Ended)
                }
                // The cookie is kept, under fail_open too: a store error never clears it
                // (SPEC §5), so the session is still there to log out of when the store
                // returns.
                Err(e) => failed(e),
            },
            (Step::DestroyAll { user }, Some(live)) => {
                // If this session already ended while the request was at the app, the
                // response applies nothing (SPEC §4.7), and sends no cookie that could
                // replace one the browser got meanwhile. It is itself ended last.
                match self.store.load(&live.key).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tally.dropped = Some(DropReason::SessionEnded);
                        return done(CookieDecision::Keep, Outcome::Ended);
                    }
                    Err(e) => return failed(e),
                }
                let field = self.policy.user_field.as_deref().unwrap_or_default();
                match users::log_out(&self.store, field, &user, Some(&live.key)).await {
                    Ok(n) => {
                        tally.write_ok = Some(true);
                        tally.destroyed = Some(("destroy_all", n));
                        tracing::info!(sessions = n, "destroy-all ended every session of a user");
                        done(CookieDecision::Expire, Outcome::Destroyed)
                    }
                    Err(e) => failed(e),
                }
            }
            (Step::Write { .. } | Step::Destroy { .. } | Step::DestroyAll { .. }, None) => {
                unreachable!("plan writes to a live session only when there is one")
            }
        }
    }

    /// The metrics of a load.
    pub fn account_load(&self, loaded: &Loaded, client: Option<IpAddr>) {
        let m = &self.metrics;
        match loaded {
            Loaded::Anonymous => {}
            Loaded::Rejected(reason) => {
                m.cookies_rejected
                    .with_label_values(&[reason.label()])
                    .inc();
                tracing::debug!(reason = reason.label(), "session cookie rejected");
                self.abuse.rejected(client);
            }
            Loaded::Expired => {
                m.loads_miss.inc();
                m.cookies_rejected.with_label_values(&["expired"]).inc();
            }
            Loaded::Unavailable(_) => m.loads_error.inc(),
            Loaded::Live(_) => m.loads_hit.inc(),
        }
    }

    /// The metrics of a response's session work.
    fn account(&self, tally: &Tally) {
        let m = &self.metrics;
        match tally.write_ok {
            Some(true) => m.writes_ok.inc(),
            Some(false) => m.writes_error.inc(),
            None => {}
        }
        if tally.created {
            m.sessions_created.inc();
        }
        if tally.regenerated {
            m.sessions_regenerated.inc();
        }
        if let Some((by, n)) = tally.destroyed {
            m.sessions_destroyed
                .with_label_values(&[by])
                .inc_by(n as u64);
        }
        if let Some(reason) = tally.dropped {
            m.changes_dropped(reason).inc();
        }
        if let Some(reason) = tally.set_rejected {
            m.set_rejected.with_label_values(&[reason.label()]).inc();
        }
    }

    /// The live sessions of a user (the user field's JSON text), for the admin API.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let Some(field) = self.policy.user_field.as_deref() else {
            return Ok(Vec::new());
        };
        let now = crate::store::now_ms();
        let expiry = &self.policy.expiry;
        Ok(users::sessions_of(&self.store, field, user)
            .await?
            .into_iter()
            .filter_map(|(_, r)| r)
            .filter(|r| expiry.plausible(r.created_ms, r.touched_ms, now))
            .collect())
    }

    /// Ends every session of a user, for the admin API. Returns how many existed.
    pub async fn log_out_user(&self, user: &str) -> Result<usize, StoreError> {
        let Some(field) = self.policy.user_field.as_deref() else {
            return Ok(0);
        };
        let n = users::log_out(&self.store, field, user, None).await?;
        self.metrics
            .sessions_destroyed
            .with_label_values(&["admin"])
            .inc_by(n as u64);
        Ok(n)
    }
}

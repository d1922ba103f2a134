//! The whole branching of a response's session work, as one pure function:
//! [`plan`]`(loaded, instructions, policy, now)`. No store, no clock, no HTTP: the table
//! tests below cover every row of SPEC §4 and §5 in milliseconds.

use std::time::Duration;

use super::expiry::Expiry;
use super::model::{Action, Change, Instructions, SetRejection};
use super::users;
use crate::config::StoreErrorPolicy;
use crate::cookie::{CookieRejection, SessionId};
use crate::protocol;
use crate::store::{SessionRecord, StoreError};

/// The request's session as it arrived.
#[derive(Debug)]
pub enum Loaded {
    /// No session cookie.
    Anonymous,
    /// A session cookie that does not verify (tampered, truncated, unsigned).
    Rejected(CookieRejection),
    /// A well-signed cookie whose session does not exist, has expired, or whose stored
    /// metadata is unreadable.
    Expired,
    /// The store could not be asked.
    Unavailable(StoreError),
    /// A live session.
    Live(Live),
}

/// A session that was live when the request arrived.
#[derive(Debug)]
pub struct Live {
    pub id: SessionId,
    pub key: String,
    pub record: SessionRecord,
    /// The expiry should be refreshed even if the app changes nothing.
    pub touch_due: bool,
    /// Length of the `X-Session` value the app was sent (bounds the `max_bytes` check).
    pub header_len: usize,
}

impl Loaded {
    pub fn live(&self) -> Option<&Live> {
        match self {
            Loaded::Live(live) => Some(live),
            _ => None,
        }
    }

    /// True when the request carried a session cookie, valid or not.
    pub fn had_cookie(&self) -> bool {
        !matches!(self, Loaded::Anonymous)
    }
}

/// The rules a plan follows, fixed at start from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub expiry: Expiry,
    /// `session.max_bytes`: the largest `X-Session` value a change may lead to.
    pub max_bytes: usize,
    pub on_store_error: StoreErrorPolicy,
    /// `session.user_field`: the field naming the session's user.
    pub user_field: Option<String>,
    /// With `cookie.max_age`, a refreshed session re-sends its cookie so that slides too.
    pub refresh_cookie: bool,
}

/// What a write to a live session does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Apply the change, refresh the expiry.
    Update,
    /// Refresh the expiry only (the app changed nothing); a failure fails nothing.
    Touch,
    /// Move the session to a new ID with the change applied.
    Regenerate,
}

/// The store work a response needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing to do; the client's cookie stays as it is.
    Nothing,
    /// No live session to end, but the client's stale cookie is expired.
    ExpireCookie,
    /// A new session with these fields (the request arrived without a live session).
    Create {
        set: &'a [(String, String)],
        user: Option<String>,
        ttl: Duration,
        deadline_ms: u64,
    },
    /// A write to the live session, which must still exist at write time.
    Write {
        kind: WriteKind,
        change: &'a Change,
        ttl: Duration,
        deadline_ms: u64,
        user_before: Option<String>,
        user_after: Option<String>,
    },
    /// End the live session.
    Destroy { user: Option<String> },
    /// End every session of the live session's user.
    DestroyAll { user: String },
    /// A change with no session to write it to because the store failed at load: the
    /// client's own session may come back with the store, so none is created over it.
    Refuse,
    /// The live session reached its absolute limit while the request was at the app:
    /// ended means ended, so the change is dropped.
    Ended,
}

/// A [`Step`] and whether the response's `X-Session-Set` was rejected.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    pub step: Step<'a>,
    pub set_rejected: Option<SetRejection>,
}

/// Decides what a response does to the request's session.
///
/// - `destroy-all` beats `destroy` beats everything else, and a rejected `X-Session-Set`
///   never cancels either; it cancels every other change, `regenerate` included.
/// - A session that was live when the request arrived is only ever written in place: if it
///   is gone when the write lands, nothing is created instead (SPEC §4.7).
/// - Only a request that arrived without a live session can create one, and only when the
///   app set a field.
pub fn plan<'a>(
    loaded: &Loaded,
    instructions: &'a Instructions,
    policy: &Policy,
    now: u64,
) -> Plan<'a> {
    let live = loaded.live();
    let change = instructions
        .change
        .as_ref()
        .map_err(|r| *r)
        .and_then(|c| check_size(c, live, policy.max_bytes).map(|()| c));
    let set_rejected = change.as_ref().err().copied();
    let field = policy.user_field.as_deref();
    let step = match (instructions.action, change, live) {
        (Some(Action::Destroy | Action::DestroyAll), _, None) => {
            if loaded.had_cookie() && !matches!(loaded, Loaded::Unavailable(_)) {
                Step::ExpireCookie
            } else {
                Step::Nothing
            }
        }
        (Some(action @ (Action::Destroy | Action::DestroyAll)), _, Some(live)) => {
            let user = users::user_in(field, &live.record.fields);
            match (action, user) {
                (Action::DestroyAll, Some(user)) => Step::DestroyAll { user },
                (_, user) => Step::Destroy { user },
            }
        }
        (_, Err(_), _) => Step::Nothing,
        (action, Ok(change), Some(live)) => {
            let kind = match action {
                Some(Action::Regenerate) => WriteKind::Regenerate,
                _ if !change.is_empty() => WriteKind::Update,
                _ if live.touch_due => WriteKind::Touch,
                _ => return Plan::nothing(),
            };
            let created = live.record.created_ms;
            match policy.expiry.ttl(created, now) {
                None if kind == WriteKind::Touch => Step::Nothing,
                None => Step::Ended,
                Some(ttl) => {
                    let user_before = users::user_in(field, &live.record.fields);
                    let user_after = users::user_after(field, user_before.as_deref(), change);
                    Step::Write {
                        kind,
                        change,
                        ttl,
                        deadline_ms: policy.expiry.deadline(created),
                        user_before,
                        user_after,
                    }
                }
            }
        }
        (_, Ok(change), None) if change.set.is_empty() => Step::Nothing,
        (_, Ok(_), None) if matches!(loaded, Loaded::Unavailable(_)) => Step::Refuse,
        (_, Ok(change), None) => Step::Create {
            set: &change.set,
            user: users::user_after(field, None, change),
            ttl: policy
                .expiry
                .ttl(now, now)
                .unwrap_or(Duration::from_millis(1)),
            deadline_ms: policy.expiry.deadline(now),
        },
    };
    Plan { step, set_rejected }
}

impl Plan<'_> {
    fn nothing() -> Plan<'static> {
        Plan {
            step: Step::Nothing,
            set_rejected: None,
        }
    }
}

/// Rejects a change after which the `X-Session` value would exceed `max_bytes`. Replacing
/// or deleting fields never grows the session, so the size the app was sent plus every set
/// field bounds the result; only near the limit is the merged session encoded exactly.
pub fn check_size(
    change: &Change,
    live: Option<&Live>,
    max_bytes: usize,
) -> Result<(), SetRejection> {
    let sent = live.map_or(2, |l| l.header_len);
    let bound = sent
        + change
            .set
            .iter()
            .map(|(k, v)| protocol::encoded_field_len(k, v))
            .sum::<usize>();
    if bound <= max_bytes {
        return Ok(());
    }
    let current: &[(String, String)] = live.map_or(&[], |l| l.record.fields.as_slice());
    let merged = change.merged(current);
    let encoded = protocol::encode_session(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if encoded.len() > max_bytes {
        return Err(SetRejection::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const MIN: u64 = 60_000;
    const IDLE: Duration = Duration::from_secs(30 * 60);

    fn policy() -> Policy {
        Policy {
            expiry: Expiry::new(IDLE, Duration::from_secs(24 * 3600)),
            max_bytes: 64,
            on_store_error: StoreErrorPolicy::FailClosed,
            user_field: Some("uid".into()),
            refresh_cookie: false,
        }
    }

    fn live(fields: &[(&str, &str)], created_ms: u64, touch_due: bool) -> Loaded {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let header_len = protocol::encode_session(fields.iter().map(|(k, v)| (&**k, &**v))).len();
        Loaded::Live(Live {
            id: SessionId::generate(),
            key: "session:k".into(),
            record: SessionRecord {
                fields,
                created_ms,
                touched_ms: created_ms,
            },
            touch_due,
            header_len,
        })
    }

    fn hit() -> Loaded {
        live(&[("uid", "\"alice\""), ("n", "1")], NOW - MIN, false)
    }

    fn sets(pairs: &[(&str, &str)]) -> Instructions {
        Instructions {
            action: None,
            change: Ok(Change {
                set: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                delete: vec![],
            }),
        }
    }

    fn with(action: Action, mut i: Instructions) -> Instructions {
        i.action = Some(action);
        i
    }

    fn rejected(reason: SetRejection) -> Instructions {
        Instructions {
            action: None,
            change: Err(reason),
        }
    }

    fn step<'a>(loaded: &Loaded, i: &'a Instructions) -> Step<'a> {
        plan(loaded, i, &policy(), NOW).step
    }

    fn is_write(s: &Step, expected: WriteKind) -> bool {
        matches!(s, Step::Write { kind, .. } if *kind == expected)
    }

    #[test]
    fn anonymous_traffic_creates_nothing_until_a_field_is_set() {
        let none = Instructions::none();
        assert_eq!(step(&Loaded::Anonymous, &none), Step::Nothing);
        let deletes_only = Instructions {
            action: None,
            change: Ok(Change {
                set: vec![],
                delete: vec!["x".into()],
            }),
        };
        assert_eq!(step(&Loaded::Anonymous, &deletes_only), Step::Nothing);
        let i = sets(&[("n", "1")]);
        match step(&Loaded::Anonymous, &i) {
            Step::Create {
                set,
                user,
                ttl,
                deadline_ms,
            } => {
                assert_eq!(set.len(), 1);
                assert_eq!(user, None);
                assert_eq!(ttl, IDLE);
                assert_eq!(deadline_ms, NOW + 24 * 3600 * 1000);
            }
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn a_new_session_is_indexed_under_the_user_it_sets() {
        let i = sets(&[("uid", "7")]);
        assert!(
            matches!(step(&Loaded::Anonymous, &i), Step::Create { user: Some(u), .. } if u == "7")
        );
    }

    #[test]
    fn rejected_and_expired_cookies_behave_as_anonymous_but_destroy_expires_them() {
        for loaded in [
            Loaded::Rejected(CookieRejection::BadSignature),
            Loaded::Expired,
        ] {
            assert!(matches!(
                step(&loaded, &sets(&[("n", "1")])),
                Step::Create { .. }
            ));
            let destroy = with(Action::Destroy, Instructions::none());
            assert_eq!(step(&loaded, &destroy), Step::ExpireCookie);
            let all = with(Action::DestroyAll, Instructions::none());
            assert_eq!(step(&loaded, &all), Step::ExpireCookie);
        }
        let destroy = with(Action::Destroy, Instructions::none());
        assert_eq!(step(&Loaded::Anonymous, &destroy), Step::Nothing);
        let regenerate = with(Action::Regenerate, Instructions::none());
        assert_eq!(step(&Loaded::Anonymous, &regenerate), Step::Nothing);
    }

    #[test]
    fn after_a_load_failure_nothing_is_created_and_no_cookie_is_touched() {
        let down = || Loaded::Unavailable(StoreError::Unavailable("down".into()));
        assert_eq!(step(&down(), &sets(&[("n", "1")])), Step::Refuse);
        assert_eq!(step(&down(), &Instructions::none()), Step::Nothing);
        let destroy = with(Action::Destroy, Instructions::none());
        assert_eq!(step(&down(), &destroy), Step::Nothing);
    }

    #[test]
    fn a_live_session_is_updated_in_place() {
        let loaded = hit();
        let i = sets(&[("n", "2")]);
        match step(&loaded, &i) {
            Step::Write {
                kind: WriteKind::Update,
                change,
                ttl,
                user_before,
                user_after,
                ..
            } => {
                assert_eq!(change.set, vec![("n".to_string(), "2".to_string())]);
                assert_eq!(ttl, IDLE);
                assert_eq!(user_before.as_deref(), Some("\"alice\""));
                assert_eq!(user_after, user_before);
            }
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn a_read_refreshes_the_expiry_only_when_due() {
        let none = Instructions::none();
        assert_eq!(step(&hit(), &none), Step::Nothing);
        let due = live(&[("n", "1")], NOW - 10 * MIN, true);
        assert!(is_write(&step(&due, &none), WriteKind::Touch));
    }

    #[test]
    fn regenerate_moves_the_live_session_and_keeps_its_deadline() {
        let created = NOW - 60 * MIN;
        let loaded = live(&[("n", "1")], created, false);
        let i = with(Action::Regenerate, sets(&[("uid", "\"bob\"")]));
        match step(&loaded, &i) {
            Step::Write {
                kind: WriteKind::Regenerate,
                deadline_ms,
                user_before,
                user_after,
                ..
            } => {
                assert_eq!(deadline_ms, created + 24 * 3600 * 1000);
                assert_eq!(user_before, None);
                assert_eq!(user_after.as_deref(), Some("\"bob\""));
            }
            other => panic!("expected a regenerate, got {other:?}"),
        }
        let alone = with(Action::Regenerate, Instructions::none());
        assert!(is_write(&step(&hit(), &alone), WriteKind::Regenerate));
    }

    #[test]
    fn destroy_wins_over_sets_and_destroy_all_needs_a_user() {
        let i = with(Action::Destroy, sets(&[("n", "9")]));
        assert_eq!(
            step(&hit(), &i),
            Step::Destroy {
                user: Some("\"alice\"".into())
            }
        );
        let all = with(Action::DestroyAll, sets(&[("n", "9")]));
        assert_eq!(
            step(&hit(), &all),
            Step::DestroyAll {
                user: "\"alice\"".into()
            }
        );
        let no_user = live(&[("n", "1")], NOW, false);
        assert_eq!(step(&no_user, &all), Step::Destroy { user: None });
        let mut p = policy();
        p.user_field = None;
        assert_eq!(
            plan(&hit(), &all, &p, NOW).step,
            Step::Destroy { user: None }
        );
    }

    #[test]
    fn a_rejected_set_cancels_everything_but_a_logout() {
        let r = rejected(SetRejection::ReservedKey);
        let p = plan(&hit(), &r, &policy(), NOW);
        assert_eq!(p.step, Step::Nothing);
        assert_eq!(p.set_rejected, Some(SetRejection::ReservedKey));
        let regenerate = with(Action::Regenerate, rejected(SetRejection::Malformed));
        assert_eq!(step(&hit(), &regenerate), Step::Nothing);
        let destroy = with(Action::Destroy, rejected(SetRejection::Malformed));
        let p = plan(&hit(), &destroy, &policy(), NOW);
        assert!(matches!(p.step, Step::Destroy { .. }));
        assert_eq!(p.set_rejected, Some(SetRejection::Malformed));
        assert_eq!(
            step(&Loaded::Anonymous, &rejected(SetRejection::Malformed)),
            Step::Nothing
        );
    }

    #[test]
    fn max_bytes_is_measured_on_the_session_after_the_change() {
        // {"uid":"alice","n":1} is 24 bytes; the limit is 64.
        let fits = sets(&[("note", "\"0123456789012345678901234567\"")]);
        assert!(is_write(&step(&hit(), &fits), WriteKind::Update));
        let too_big = sets(&[("note", "\"01234567890123456789012345678901234567\"")]);
        let p = plan(&hit(), &too_big, &policy(), NOW);
        assert_eq!(p.step, Step::Nothing);
        assert_eq!(p.set_rejected, Some(SetRejection::TooLarge));
        // Replacing a field with a smaller value fits even when the bound does not.
        let big = live(&[("note", &format!("\"{}\"", "x".repeat(50)))], NOW, false);
        let smaller = sets(&[("note", &format!("\"{}\"", "y".repeat(40)))]);
        assert!(is_write(&step(&big, &smaller), WriteKind::Update));
        // A new session is measured too.
        let huge = sets(&[("a", &format!("\"{}\"", "z".repeat(70)))]);
        assert_eq!(
            plan(&Loaded::Anonymous, &huge, &policy(), NOW).set_rejected,
            Some(SetRejection::TooLarge)
        );
    }

    #[test]
    fn a_session_past_its_absolute_limit_is_never_written_nor_replaced() {
        let old = live(&[("n", "1")], NOW - 24 * 3600 * 1000, true);
        assert_eq!(step(&old, &sets(&[("n", "2")])), Step::Ended);
        assert_eq!(
            step(&old, &with(Action::Regenerate, Instructions::none())),
            Step::Ended
        );
        assert_eq!(step(&old, &Instructions::none()), Step::Nothing);
    }

    #[test]
    fn ttl_near_the_absolute_limit_is_capped() {
        let created = NOW - (24 * 60 - 5) * MIN;
        let loaded = live(&[("n", "1")], created, false);
        match step(&loaded, &sets(&[("n", "2")])) {
            Step::Write { ttl, .. } => assert_eq!(ttl, Duration::from_secs(5 * 60)),
            other => panic!("expected a write, got {other:?}"),
        }
    }
}

//! Failures mapped to what the client sees, in one place: a store failure under
//! `on_store_error`, a pingora error as a status code, and the status a finished request is
//! counted under.

use pingora::{Error, ErrorSource, ErrorType};

use crate::config::StoreErrorPolicy;

/// Seconds a client is told to wait after a 503 caused by the store.
pub const RETRY_AFTER_SECS: &str = "1";

/// Status counted for a client that went away before the answer was sent (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// The answer to a store failure: `Some(503)` under fail_closed; under fail_open `None`,
/// the request goes on (without its session, or without saving its change). A cookie is
/// never cleared because of a store failure.
pub fn store_failure_status(policy: StoreErrorPolicy) -> Option<u16> {
    match policy {
        StoreErrorPolicy::FailClosed => Some(503),
        StoreErrorPolicy::FailOpen => None,
    }
}

/// True for an error that means the client went away.
pub fn client_gone(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// The status to answer a request that failed to proxy with; `None` when there is nobody
/// left to answer (the client went away). The app not answering within
/// `upstream_read_timeout` is 504; any other upstream failure (refused, connect timeout,
/// broken off, invalid response) is 502.
pub fn error_status(e: &Error, store_failed: bool) -> Option<u16> {
    if store_failed {
        return Some(503);
    }
    if client_gone(e) {
        return None;
    }
    Some(match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
                _ => 502,
            },
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    })
}

/// The status a finished request is counted under: what was sent, or 499 when nothing was.
pub fn counted_status(written: Option<u16>) -> u16 {
    written.unwrap_or(CLIENT_CLOSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_follow_the_policy() {
        assert_eq!(
            store_failure_status(StoreErrorPolicy::FailClosed),
            Some(503)
        );
        assert_eq!(store_failure_status(StoreErrorPolicy::FailOpen), None);
    }

    #[test]
    fn errors_map_to_statuses_and_a_vanished_client_to_none() {
        let upstream = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(error_status(&upstream, false), Some(502));
        assert_eq!(error_status(&upstream, true), Some(503));
        let connect_timeout = Error::new(ErrorType::ConnectTimedout).into_up();
        assert_eq!(error_status(&connect_timeout, false), Some(502));
        let broken = Error::new(ErrorType::ConnectionClosed).into_up();
        assert_eq!(error_status(&broken, false), Some(502));
        let slow = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(error_status(&slow, false), Some(504));
        assert_eq!(error_status(&slow, true), Some(503));
        let not_reading = Error::new(ErrorType::WriteTimedout).into_up();
        assert_eq!(error_status(&not_reading, false), Some(504));
        let slow_client = Error::new(ErrorType::ReadTimedout).into_down();
        assert_eq!(error_status(&slow_client, false), Some(400));
        let status = Error::new(ErrorType::HTTPStatus(431));
        assert_eq!(error_status(&status, false), Some(431));
        let gone = Error::new(ErrorType::ConnectionClosed).into_down();
        assert!(client_gone(&gone));
        assert_eq!(error_status(&gone, false), None);
        let bad = Error::new(ErrorType::InvalidHTTPHeader).into_down();
        assert_eq!(error_status(&bad, false), Some(400));
        assert_eq!(counted_status(None), 499);
        assert_eq!(counted_status(Some(200)), 200);
    }
}

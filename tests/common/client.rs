//! [`Client`]: a real HTTP client (reqwest, no redirects) aimed at a sidecar, with a one-cookie
//! jar that keeps the session cookie from `Set-Cookie` the way a browser would; [`Reply`] is
//! what came back, with the backend's JSON description of the request parsed.

use std::time::Duration;

use serde_json::Value;

use super::sidecar::Sidecar;
use super::COOKIE;

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// What the app saw as `X-Session` (parsed).
    pub fn session(&self) -> Value {
        self.body["x_session"].clone()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A browser-like client that keeps the session cookie.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(sidecar: &Sidecar) -> Client {
        Client::for_base(format!("http://127.0.0.1:{}", sidecar.port))
    }

    pub fn for_base(base: String) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base,
            cookie: None,
        }
    }

    /// A fresh connection pool with the same cookie (after the server restarted).
    pub fn reconnect(&self) -> Client {
        let mut c = Client::for_base(self.base.clone());
        c.cookie = self.cookie.clone();
        c
    }

    /// GET `path` with extra headers; keeps the session cookie from `Set-Cookie`.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get(path, headers).await.expect("request failed")
    }

    pub async fn try_get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.get(format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        for (k, v) in headers {
            // Raw bytes, so tests can send UTF-8 (obs-text) the way some apps do.
            req = req.header(
                *k,
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).expect("valid header bytes"),
            );
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let reply = Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
            text,
        };
        for sc in reply.set_cookies() {
            if let Some(rest) = sc.strip_prefix(&format!("{COOKIE}=")) {
                let value = rest.split(';').next().unwrap_or("").to_string();
                if sc.contains("Max-Age=0") || value.is_empty() {
                    self.cookie = None;
                } else {
                    self.cookie = Some(value);
                }
            }
        }
        Ok(reply)
    }

    /// A request whose response makes the app set these fields.
    pub async fn set(&mut self, json: &str) -> Reply {
        self.get("/", &[("x-reply-x-session-set", json)]).await
    }

    /// A request whose response carries this action.
    pub async fn action(&mut self, action: &str) -> Reply {
        self.get("/", &[("x-reply-x-session-action", action)]).await
    }

    /// What the app sees as the session now.
    pub async fn session(&mut self) -> Value {
        self.get("/", &[]).await.session()
    }
}

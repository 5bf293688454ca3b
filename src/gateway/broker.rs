//! The credential broker: what the relay puts on each upstream request in place of a worker
//! token. With a credentials file that has a refresh token, ccpool alone refreshes the OAuth
//! access token: before it expires, one refresh at a time however many requests wait, keeping
//! the refresh token to itself. A failed refresh is kept for `/ready` to show.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::credentials::{Credentials, Secret};

/// The OAuth client id and token endpoint the Claude Code CLI refreshes with.
pub const CLAUDE_OAUTH_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
pub const CLAUDE_OAUTH_TOKEN_URL: &str = "https://platform.claude.com/v1/oauth/token";

/// How the real credential goes on an upstream request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// `Authorization: Bearer …` (a subscription token or a credentials file's access token).
    Bearer(Secret),
    /// `x-api-key: …`.
    ApiKey(Secret),
    /// Nothing (an upstream that does not check, as in some tests).
    None,
}

/// Settings of the refresh.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub token_url: String,
    pub client_id: String,
    /// Refresh when the access token has less than this left.
    pub margin: Duration,
    /// After a failed refresh, how long until the next attempt.
    pub retry_after_failure: Duration,
    /// Where to write a refreshed credentials file back (the file it came from), if anywhere.
    pub write_back: Option<std::path::PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            token_url: CLAUDE_OAUTH_TOKEN_URL.to_string(),
            client_id: CLAUDE_OAUTH_CLIENT_ID.to_string(),
            margin: Duration::from_secs(5 * 60),
            retry_after_failure: Duration::from_secs(30),
            write_back: None,
        }
    }
}

/// What `/status` and `/ready` show of the broker; no secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    pub kind: &'static str,
    /// Seconds until the access token expires, when it expires.
    pub expires_in_secs: Option<i64>,
    pub refreshable: bool,
    pub refreshes: u64,
    /// Why the last refresh failed, until one succeeds.
    pub failure: Option<String>,
}

/// A credentials file's OAuth entry, refresh token included (it never leaves ccpool).
#[derive(Clone)]
struct OAuthState {
    access: Secret,
    refresh: Option<Secret>,
    expires_at_ms: Option<u64>,
    /// The whole file, to write back with new tokens.
    file: Value,
}

enum Held {
    Static(UpstreamAuth),
    OAuthFile(OAuthState),
}

/// The real credential and, for a credentials file, its refresh. Shared by every relayed
/// request.
pub struct Broker {
    kind: &'static str,
    held: Mutex<Held>,
    refresh_lock: tokio::sync::Mutex<()>,
    failure: Mutex<Option<String>>,
    refreshes: AtomicU64,
    client: reqwest::Client,
    config: BrokerConfig,
}

/// The broker could not provide a usable credential.
#[derive(Debug, thiserror::Error)]
#[error("the upstream credential could not be refreshed: {0}")]
pub struct BrokerError(String);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Broker {
    pub fn new(credentials: &Credentials, config: BrokerConfig) -> Result<Broker, String> {
        let held = match credentials {
            Credentials::OAuthToken(t) => Held::Static(UpstreamAuth::Bearer(t.clone())),
            Credentials::ApiKey(k) => Held::Static(UpstreamAuth::ApiKey(k.clone())),
            Credentials::None => Held::Static(UpstreamAuth::None),
            Credentials::CredentialsFile(content) => Held::OAuthFile(parse_file(content.expose())?),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("building the token client: {e}"))?;
        Ok(Broker {
            kind: credentials.kind(),
            held: Mutex::new(held),
            refresh_lock: tokio::sync::Mutex::new(()),
            failure: Mutex::new(None),
            refreshes: AtomicU64::new(0),
            client,
            config,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential for the next upstream request, refreshed first when it is about to
    /// expire. Concurrent callers share one refresh.
    pub async fn auth(&self) -> Result<UpstreamAuth, BrokerError> {
        if let Some(auth) = self.current_if_fresh() {
            return Ok(auth);
        }
        self.refresh_if_due().await?;
        Ok(self.current())
    }

    fn current(&self) -> UpstreamAuth {
        match &*self.held() {
            Held::Static(auth) => auth.clone(),
            Held::OAuthFile(s) => UpstreamAuth::Bearer(s.access.clone()),
        }
    }

    /// The credential, unless it is a refreshable one that is due for a refresh.
    fn current_if_fresh(&self) -> Option<UpstreamAuth> {
        match &*self.held() {
            Held::Static(auth) => Some(auth.clone()),
            Held::OAuthFile(s) if s.refresh.is_none() || !self.due(s) => {
                Some(UpstreamAuth::Bearer(s.access.clone()))
            }
            Held::OAuthFile(_) => None,
        }
    }

    fn due(&self, s: &OAuthState) -> bool {
        s.expires_at_ms
            .is_some_and(|at| at <= now_ms() + self.config.margin.as_millis() as u64)
    }

    /// Refreshes when the token is due, once: whoever waited on the lock finds it fresh.
    /// A failure is an error only when the token it leaves has expired.
    pub async fn refresh_if_due(&self) -> Result<(), BrokerError> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        let state = match &*self.held() {
            Held::OAuthFile(s) if s.refresh.is_some() && self.due(s) => s.clone(),
            _ => return Ok(()),
        };
        match self.refresh(&state).await {
            Ok(new) => {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.write_back(&new);
                *self.held() = Held::OAuthFile(new);
                tracing::info!("refreshed the OAuth access token");
                Ok(())
            }
            Err(why) => {
                tracing::warn!(cause = %why, "refreshing the OAuth access token failed");
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                if state.expires_at_ms.is_some_and(|at| at <= now_ms()) {
                    Err(BrokerError(why))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// One call to the token endpoint. The error says what failed, never a token.
    async fn refresh(&self, state: &OAuthState) -> Result<OAuthState, String> {
        let refresh = state.refresh.as_ref().ok_or("no refresh token")?;
        let scopes: Vec<String> = state.file["claudeAiOauth"]["scopes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut body = json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh.expose(),
            "client_id": self.config.client_id,
        });
        if !scopes.is_empty() {
            body["scope"] = Value::from(scopes.join(" "));
        }
        let response = self
            .client
            .post(&self.config.token_url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("the token endpoint is unreachable ({})", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the token endpoint answered {status}"));
        }
        let answer: Value = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the token endpoint's answer is not JSON")?;
        let access = answer["access_token"]
            .as_str()
            .ok_or("the token endpoint's answer has no access_token")?;
        let expires_in = answer["expires_in"].as_u64().unwrap_or(3600);
        let expires_at_ms = now_ms() + expires_in * 1000;
        let refresh = answer["refresh_token"]
            .as_str()
            .map(Secret::new)
            .unwrap_or_else(|| refresh.clone());
        let mut file = state.file.clone();
        file["claudeAiOauth"]["accessToken"] = Value::from(access);
        file["claudeAiOauth"]["refreshToken"] = Value::from(refresh.expose());
        file["claudeAiOauth"]["expiresAt"] = Value::from(expires_at_ms);
        Ok(OAuthState {
            access: Secret::new(access),
            refresh: Some(refresh),
            expires_at_ms: Some(expires_at_ms),
            file,
        })
    }

    /// Keeps the file ccpool read in step, so that a restart starts from the new refresh
    /// token (a refresh may rotate it). A read-only file is left alone, with a warning.
    fn write_back(&self, state: &OAuthState) {
        let Some(path) = &self.config.write_back else {
            return;
        };
        let text = state.file.to_string();
        let tmp = path.with_extension("ccpool-tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), cause = %e, "could not write the refreshed credentials back; a restart will start from the old refresh token");
        }
    }

    /// Refreshes ahead of expiry until cancelled, so requests rarely wait for a refresh.
    pub async fn keep_fresh(&self, cancel: CancellationToken) {
        loop {
            let wait = match &*self.held() {
                Held::OAuthFile(s) if s.refresh.is_some() => match s.expires_at_ms {
                    Some(at) => {
                        let due = at.saturating_sub(self.config.margin.as_millis() as u64);
                        Duration::from_millis(due.saturating_sub(now_ms()))
                    }
                    None => return,
                },
                _ => return,
            };
            let wait = if self.status().failure.is_some() {
                wait.max(self.config.retry_after_failure)
            } else {
                wait
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let _ = self.refresh_if_due().await;
        }
    }

    pub fn status(&self) -> BrokerStatus {
        let (expires_at, refreshable) = match &*self.held() {
            Held::OAuthFile(s) => (s.expires_at_ms, s.refresh.is_some()),
            Held::Static(_) => (None, false),
        };
        BrokerStatus {
            kind: self.kind,
            expires_in_secs: expires_at.map(|at| (at as i64 - now_ms() as i64) / 1000),
            refreshable,
            refreshes: self.refreshes.load(Ordering::Relaxed),
            failure: self
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

fn parse_file(content: &str) -> Result<OAuthState, String> {
    let file: Value = serde_json::from_str(content)
        .map_err(|e| format!("the credentials file is not JSON: {e}"))?;
    let oauth = file
        .get("claudeAiOauth")
        .ok_or("the credentials file has no claudeAiOauth entry")?;
    let access = oauth["accessToken"]
        .as_str()
        .ok_or("the credentials file has no accessToken")?;
    Ok(OAuthState {
        access: Secret::new(access),
        refresh: oauth["refreshToken"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(Secret::new),
        expires_at_ms: oauth["expiresAt"].as_u64(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(expires_at: u64, refresh: Option<&str>) -> Credentials {
        let mut oauth = json!({"accessToken": "sk-ant-oat01-old", "expiresAt": expires_at, "scopes": ["user:inference"]});
        if let Some(r) = refresh {
            oauth["refreshToken"] = Value::from(r);
        }
        Credentials::CredentialsFile(Secret::new(json!({"claudeAiOauth": oauth}).to_string()))
    }

    #[tokio::test]
    async fn each_kind_becomes_its_upstream_header() {
        let b = Broker::new(&Credentials::ApiKey("k".into()), BrokerConfig::default()).unwrap();
        assert_eq!(b.auth().await.unwrap(), UpstreamAuth::ApiKey("k".into()));
        let b = Broker::new(
            &Credentials::OAuthToken("t".into()),
            BrokerConfig::default(),
        )
        .unwrap();
        assert_eq!(b.auth().await.unwrap(), UpstreamAuth::Bearer("t".into()));
        // Far from expiry: no refresh is attempted (the endpoint is unreachable).
        let config = BrokerConfig {
            token_url: "http://127.0.0.1:9/token".into(),
            ..BrokerConfig::default()
        };
        let b = Broker::new(&file(now_ms() + 3_600_000, Some("r")), config).unwrap();
        assert_eq!(
            b.auth().await.unwrap(),
            UpstreamAuth::Bearer("sk-ant-oat01-old".into())
        );
        assert!(b.status().refreshable && b.status().failure.is_none());
    }

    #[tokio::test]
    async fn a_failed_refresh_is_reported_and_an_expired_token_is_an_error() {
        let config = BrokerConfig {
            token_url: "http://127.0.0.1:9/token".into(),
            ..BrokerConfig::default()
        };
        // Due but not expired: the old token still serves, the failure is kept.
        let b = Broker::new(
            &file(now_ms() + 60_000, Some("sk-ant-ort01-r")),
            config.clone(),
        )
        .unwrap();
        assert_eq!(
            b.auth().await.unwrap(),
            UpstreamAuth::Bearer("sk-ant-oat01-old".into())
        );
        let failure = b.status().failure.expect("a failure");
        assert!(failure.contains("unreachable"), "{failure}");
        assert!(!failure.contains("sk-ant"), "{failure}");
        // Expired: an error.
        let b = Broker::new(&file(now_ms() - 1, Some("sk-ant-ort01-r")), config).unwrap();
        let e = b.auth().await.unwrap_err().to_string();
        assert!(!e.contains("sk-ant"), "{e}");
        // No refresh token: the token is used as it is, whatever its age.
        let b = Broker::new(&file(now_ms() - 1, None), BrokerConfig::default()).unwrap();
        assert!(b.auth().await.is_ok());
        assert!(!b.status().refreshable);
    }
}

//! The upstream credentials workers use, and how each kind reaches a CLI process. Secrets
//! never appear in `Debug` output, logs, images or error messages.

use std::fmt;

/// A secret string. Its `Debug` and `Display` print a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: only for handing it to a CLI process.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

/// What workers authenticate to the upstream with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A subscription token (`claude setup-token`), sent upstream as `Authorization: Bearer`.
    OAuthToken(Secret),
    /// An API key, sent upstream as `x-api-key`.
    ApiKey(Secret),
    /// The content of a `~/.claude/.credentials.json`, refresh token included: the gateway's
    /// broker sends its access token upstream and refreshes it; no worker ever sees it.
    CredentialsFile(Secret),
    /// No credentials (the upstream does not check them, as in some tests).
    None,
}

impl Credentials {
    /// Where the CLI keeps its credentials file, relative to `$HOME`.
    pub const FILE_IN_HOME: &'static str = ".claude/.credentials.json";

    /// A description without the secret, for status pages and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::OAuthToken(_) => "oauth-token",
            Credentials::ApiKey(_) => "api-key",
            Credentials::CredentialsFile(_) => "credentials-file",
            Credentials::None => "none",
        }
    }

    /// A credentials file's content, checked to hold an OAuth entry. It stays in ccpool.
    pub fn from_file_content(content: &str) -> Result<Credentials, String> {
        let value: serde_json::Value = serde_json::from_str(content)
            .map_err(|e| format!("the credentials file is not JSON: {e}"))?;
        value
            .get("claudeAiOauth")
            .and_then(|o| o.as_object())
            .ok_or("the credentials file has no claudeAiOauth entry")?;
        Ok(Credentials::CredentialsFile(Secret::new(value.to_string())))
    }

    fn file_field(&self, key: &str) -> Option<serde_json::Value> {
        let Credentials::CredentialsFile(content) = self else {
            return None;
        };
        let value: serde_json::Value = serde_json::from_str(content.expose()).ok()?;
        value.get("claudeAiOauth")?.get(key).cloned()
    }

    /// When a credentials file's access token expires, as milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.file_field("expiresAt")?.as_u64()
    }

    /// Whether a credentials file carries a refresh token (ccpool then refreshes it).
    pub fn refreshable(&self) -> bool {
        self.file_field("refreshToken")
            .is_some_and(|r| r.as_str().is_some_and(|r| !r.is_empty()))
    }

    /// A warning for credentials that will stop working soon and cannot be refreshed,
    /// without the secret.
    pub fn expiry_warning(&self, now_ms: u64) -> Option<String> {
        if self.refreshable() {
            return None;
        }
        let expires = self.expires_at_ms()?;
        let left_min = expires.saturating_sub(now_ms) / 60_000;
        Some(format!(
            "only a short-lived access token is available (from a credentials file; it expires in {left_min} min \
             and has no refresh token): create a long-lived token with `claude setup-token` and set \
             CLAUDE_CODE_OAUTH_TOKEN"
        ))
    }

    /// Credentials from the environment the way the CLI itself looks for them:
    /// `CLAUDE_CODE_OAUTH_TOKEN`, then `ANTHROPIC_API_KEY`, then `~/.claude/.credentials.json`.
    pub fn from_env() -> Credentials {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(t) = var("CLAUDE_CODE_OAUTH_TOKEN") {
            return Credentials::OAuthToken(Secret::new(t));
        }
        if let Some(k) = var("ANTHROPIC_API_KEY") {
            return Credentials::ApiKey(Secret::new(k));
        }
        if let Some(home) = var("HOME") {
            let path = std::path::Path::new(&home).join(Self::FILE_IN_HOME);
            if let Ok(content) = std::fs::read_to_string(path) {
                if let Ok(credentials) = Credentials::from_file_content(&content) {
                    return credentials;
                }
            }
        }
        Credentials::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_keeps_its_refresh_token_in_ccpool() {
        let file = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a","refreshToken":"sk-ant-ort01-r","expiresAt":4102444800000,"scopes":["user:inference"]}}"#;
        let c = Credentials::from_file_content(file).unwrap();
        assert!(c.refreshable());
        assert_eq!(c.expires_at_ms(), Some(4_102_444_800_000));
        assert!(c.expiry_warning(0).is_none(), "ccpool refreshes it");
        let without =
            r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a","expiresAt":4102444800000}}"#;
        let c = Credentials::from_file_content(without).unwrap();
        assert!(!c.refreshable());
        let warning = c.expiry_warning(4_102_444_800_000 - 90 * 60_000).unwrap();
        assert!(
            warning.contains("90 min")
                && warning.contains("setup-token")
                && !warning.contains("sk-ant")
        );
        assert!(
            Credentials::OAuthToken("t".into())
                .expiry_warning(0)
                .is_none()
        );
        assert!(Credentials::from_file_content("{}").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        for c in [
            Credentials::OAuthToken("sk-ant-oat-SECRET".into()),
            Credentials::ApiKey("sk-ant-api-SECRET".into()),
            Credentials::CredentialsFile("{\"claudeAiOauth\":{\"accessToken\":\"SECRET\"}}".into()),
        ] {
            let shown = format!("{c:?} {}", c.kind());
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}

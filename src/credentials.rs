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
    /// The content of a `~/.claude/.credentials.json`, copied into each container's tmpfs home.
    CredentialsFile(Secret),
    /// No credentials (the upstream does not check them, as in some tests).
    None,
}

impl Credentials {
    /// Where a credentials file goes inside a worker, relative to `$HOME`.
    pub const FILE_IN_HOME: &'static str = ".claude/.credentials.json";

    /// The environment variables that carry these credentials to the CLI.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        match self {
            Credentials::OAuthToken(t) => {
                vec![("CLAUDE_CODE_OAUTH_TOKEN".into(), t.expose().to_string())]
            }
            Credentials::ApiKey(k) => vec![("ANTHROPIC_API_KEY".into(), k.expose().to_string())],
            Credentials::CredentialsFile(_) | Credentials::None => Vec::new(),
        }
    }

    /// The credentials file content to place in the worker's home, if any.
    pub fn file_content(&self) -> Option<&Secret> {
        match self {
            Credentials::CredentialsFile(content) => Some(content),
            _ => None,
        }
    }

    /// A description without the secret, for status pages and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::OAuthToken(_) => "oauth-token",
            Credentials::ApiKey(_) => "api-key",
            Credentials::CredentialsFile(_) => "credentials-file",
            Credentials::None => "none",
        }
    }

    /// A credentials file's content, with its refresh token removed: workers use the access
    /// token and can never rotate the user's refresh token behind their back.
    pub fn from_file_content(content: &str) -> Result<Credentials, String> {
        let mut value: serde_json::Value = serde_json::from_str(content)
            .map_err(|e| format!("the credentials file is not JSON: {e}"))?;
        let oauth = value
            .get_mut("claudeAiOauth")
            .and_then(|o| o.as_object_mut())
            .ok_or("the credentials file has no claudeAiOauth entry")?;
        oauth.remove("refreshToken");
        Ok(Credentials::CredentialsFile(Secret::new(value.to_string())))
    }

    /// When a credentials file's access token expires, as milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> Option<u64> {
        let Credentials::CredentialsFile(content) = self else {
            return None;
        };
        let value: serde_json::Value = serde_json::from_str(content.expose()).ok()?;
        value.get("claudeAiOauth")?.get("expiresAt")?.as_u64()
    }

    /// A warning for credentials that will stop working soon, without the secret.
    pub fn expiry_warning(&self, now_ms: u64) -> Option<String> {
        let expires = self.expires_at_ms()?;
        let left_min = expires.saturating_sub(now_ms) / 60_000;
        Some(format!(
            "only a short-lived access token is available (from a credentials file; it expires in {left_min} min \
             and workers will not refresh it): create a long-lived token with `claude setup-token` and set \
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
    fn a_copied_credentials_file_never_carries_the_refresh_token() {
        let file = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a","refreshToken":"sk-ant-ort01-r","expiresAt":4102444800000,"scopes":["user:inference"]}}"#;
        let c = Credentials::from_file_content(file).unwrap();
        let content = c.file_content().unwrap().expose().to_string();
        assert!(content.contains("sk-ant-oat01-a") && !content.contains("sk-ant-ort01-r"));
        assert_eq!(c.expires_at_ms(), Some(4_102_444_800_000));
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

    #[test]
    fn each_kind_reaches_the_cli_its_own_way() {
        assert_eq!(
            Credentials::OAuthToken("t".into()).cli_env(),
            vec![("CLAUDE_CODE_OAUTH_TOKEN".to_string(), "t".to_string())]
        );
        assert_eq!(
            Credentials::ApiKey("k".into()).cli_env(),
            vec![("ANTHROPIC_API_KEY".to_string(), "k".to_string())]
        );
        let file = Credentials::CredentialsFile("{}".into());
        assert!(file.cli_env().is_empty());
        assert_eq!(file.file_content().map(Secret::expose), Some("{}"));
    }
}

//! What keeps web pages out. A page on another origin can send a "simple" cross-origin
//! `POST` (no preflight: `text/plain`, a form, a typeless blob), and a DNS-rebinding page
//! talks to ccpool under its own host name. So, before authentication:
//! - a request whose `Origin` is present and not allowed (the CORS origins) gets a 403;
//! - a `POST` to a JSON endpoint must say `application/json` (a `+json` type will do), or
//!   carry no body at all: otherwise a 415;
//! - the `Host` header must name the listen address, a loopback name or a configured host
//!   (checked when ccpool listens on loopback, serves without keys, or hosts are
//!   configured): otherwise 421.
//!
//! The official SDKs, curl and browsers on allowed origins send what passes.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::extract::CallerDialect;
use super::state::{ApiSettings, AppState};
use crate::failure::{Failure, FailureKind};

pub async fn guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let dialect = CallerDialect::of(request.headers(), request.uri().path());
    match check(
        &state.api,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(failure) => dialect.error(failure).into_response(),
    }
}

/// The verdict on a request's origin, content type and host.
pub fn check(
    api: &ApiSettings,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Failure> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &api.cors_origins));
        if !allowed {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                FailureKind::Permission,
                "this Origin is not allowed to use ccpool (see --cors-origin)",
            ));
        }
    }
    if *method == Method::POST && !path.contains("/files/") && !json_content(headers) {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FailureKind::InvalidRequest,
            "send the request body as JSON, with Content-Type: application/json",
        ));
    }
    if let Some(host) = headers.get(header::HOST) {
        let allowed = host.to_str().is_ok_and(|h| host_allowed(h, api));
        if !allowed {
            return Err(Failure::new(
                StatusCode::MISDIRECTED_REQUEST,
                FailureKind::Permission,
                "this Host is not ccpool's (see --allowed-host)",
            ));
        }
    }
    Ok(())
}

/// A JSON content type, or no body at all.
fn json_content(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value.to_str().is_ok_and(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        }),
        None => headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|l| l.as_bytes() == b"0"),
    }
}

/// The host part of `host[:port]` (IPv6 in brackets), lower-cased.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = if value.starts_with('[') {
        value
            .split_once(']')
            .map_or(value, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        value.rsplit_once(':').map_or(value, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `Host` header names ccpool.
pub fn host_allowed(value: &str, api: &ApiSettings) -> bool {
    let checked = !api.allowed_hosts.is_empty()
        || api.api_keys.is_empty()
        || api.listen.is_some_and(|l| l.ip().is_loopback());
    if !checked {
        return true;
    }
    let host = host_name(value);
    is_loopback_name(&host)
        || api.listen.is_some_and(|l| {
            host == host_name(&l.ip().to_string()) || host == format!("{}", l.ip())
        })
        || api.allowed_hosts.iter().any(|h| host_name(h) == host)
}

/// Whether a browser origin may use ccpool: the configured origins, or by default any
/// `localhost`, `127.0.0.1` or `[::1]` origin.
pub fn origin_allowed(origin: &str, configured: &[String]) -> bool {
    if !configured.is_empty() {
        return configured.iter().any(|o| o.trim_end_matches('/') == origin);
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && {
        let host = rest.rsplit_once(':').map_or(rest, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                rest
            }
        });
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn loopback() -> ApiSettings {
        ApiSettings {
            listen: Some("127.0.0.1:8787".parse().unwrap()),
            ..ApiSettings::default()
        }
    }

    fn verdict(api: &ApiSettings, method: Method, path: &str, h: &[(&'static str, &str)]) -> u16 {
        match check(api, &method, path, &headers(h)) {
            Ok(()) => 200,
            Err(f) => f.status.as_u16(),
        }
    }

    #[test]
    fn a_web_page_on_another_origin_is_refused() {
        let api = loopback();
        let json = ("content-type", "application/json");
        assert_eq!(
            verdict(
                &api,
                Method::POST,
                "/v1/messages",
                &[("origin", "https://evil.example"), json]
            ),
            403
        );
        assert_eq!(
            verdict(
                &api,
                Method::POST,
                "/v1/messages",
                &[("origin", "null"), json]
            ),
            403
        );
        assert_eq!(
            verdict(
                &api,
                Method::GET,
                "/status",
                &[("origin", "http://localhost.evil.example")]
            ),
            403
        );
        assert_eq!(
            verdict(
                &api,
                Method::POST,
                "/v1/messages",
                &[("origin", "http://localhost:5173"), json]
            ),
            200
        );
        let configured = ApiSettings {
            cors_origins: vec!["https://app.example".into()],
            ..loopback()
        };
        assert_eq!(
            verdict(
                &configured,
                Method::POST,
                "/v1/messages",
                &[("origin", "https://app.example"), json]
            ),
            200
        );
        assert_eq!(
            verdict(
                &configured,
                Method::POST,
                "/v1/messages",
                &[("origin", "http://localhost:5173"), json]
            ),
            403
        );
    }

    #[test]
    fn json_endpoints_need_a_json_content_type() {
        let api = loopback();
        for (ct, want) in [
            ("text/plain", 415),
            ("application/x-www-form-urlencoded", 415),
            ("multipart/form-data; boundary=x", 415),
            ("application/json", 200),
            ("application/json; charset=utf-8", 200),
            ("Application/JSON", 200),
            ("application/vnd.api+json", 200),
        ] {
            assert_eq!(
                verdict(
                    &api,
                    Method::POST,
                    "/v1/chat/completions",
                    &[("content-type", ct)]
                ),
                want,
                "{ct}"
            );
        }
        assert_eq!(
            verdict(
                &api,
                Method::POST,
                "/v1/messages",
                &[("content-length", "12")]
            ),
            415,
            "no type"
        );
        assert_eq!(
            verdict(
                &api,
                Method::POST,
                "/v1/sessions",
                &[("content-length", "0")]
            ),
            200,
            "no body"
        );
        assert_eq!(
            verdict(
                &api,
                Method::PUT,
                "/v1/sessions/a/files/x",
                &[("content-type", "text/plain")]
            ),
            200
        );
        assert_eq!(verdict(&api, Method::GET, "/v1/models", &[]), 200);
    }

    #[test]
    fn a_rebinding_host_is_refused_on_loopback() {
        let api = loopback();
        for (host, want) in [
            ("127.0.0.1:8787", 200),
            ("localhost:8787", 200),
            ("LOCALHOST", 200),
            ("[::1]:8787", 200),
            ("evil.example:8787", 421),
            ("127.0.0.1.nip.io", 421),
        ] {
            assert_eq!(
                verdict(&api, Method::GET, "/status", &[("host", host)]),
                want,
                "{host}"
            );
        }
        let listed = ApiSettings {
            allowed_hosts: vec!["ccpool.internal".into()],
            ..loopback()
        };
        assert_eq!(
            verdict(
                &listed,
                Method::GET,
                "/status",
                &[("host", "ccpool.internal:8787")]
            ),
            200
        );
        let keyed = ApiSettings {
            listen: Some("0.0.0.0:8787".parse().unwrap()),
            api_keys: vec!["k".into()],
            ..ApiSettings::default()
        };
        let keyless = ApiSettings {
            listen: Some("0.0.0.0:8787".parse().unwrap()),
            ..ApiSettings::default()
        };
        let host =
            |api: &ApiSettings, h: &str| verdict(api, Method::GET, "/status", &[("host", h)]);
        assert_eq!(host(&keyed, "box.lan:8787"), 200);
        assert_eq!(
            host(&keyless, "box.lan:8787"),
            421,
            "no keys: Host is checked"
        );
        assert_eq!(host(&keyless, "127.0.0.1:8787"), 200);
    }
}

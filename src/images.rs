//! Remote images, fetched on the client's behalf only when the configuration enables it:
//! an `http(s)` URL becomes inline base64 data, within a size and time limit. Off by default:
//! fetching lets clients make ccpool reach any address it can reach.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;

/// Fetches images for requests that name them by URL.
#[derive(Clone, Debug)]
pub struct ImageFetcher {
    client: reqwest::Client,
    max_bytes: usize,
}

use crate::domain::IMAGE_MEDIA_TYPES as MEDIA_TYPES;

impl ImageFetcher {
    pub fn new(max_bytes: usize, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .expect("a client with a timeout and a redirect policy always builds");
        ImageFetcher { client, max_bytes }
    }

    /// The image at `url` as (media type, base64 data), or why it could not be had.
    pub async fn fetch(&self, url: &str) -> Result<(String, String), String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("only http and https image URLs are fetched".into());
        }
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetching the image failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "fetching the image got HTTP {}",
                response.status().as_u16()
            ));
        }
        let declared = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        if response
            .content_length()
            .is_some_and(|n| n as usize > self.max_bytes)
        {
            return Err(format!("the image is larger than {} bytes", self.max_bytes));
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading the image failed: {e}"))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > self.max_bytes {
                return Err(format!("the image is larger than {} bytes", self.max_bytes));
            }
        }
        let media_type = declared
            .filter(|t| MEDIA_TYPES.contains(&t.as_str()))
            .or_else(|| sniff(&bytes).map(str::to_string))
            .ok_or("the URL does not serve a jpeg, png, gif or webp image")?;
        Ok((
            media_type,
            base64::engine::general_purpose::STANDARD.encode(&bytes),
        ))
    }
}

/// The media type of an image, from its first bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some("image/webp"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_sniffed_from_magic_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n"), Some("image/png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8"), Some("image/webp"));
        assert_eq!(sniff(b"<html>"), None);
    }
}

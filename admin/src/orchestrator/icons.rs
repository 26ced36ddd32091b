//! Fetches a droplet's icon from the URL an administrator (or an imported catalogue) gave, so
//! the gateway can serve it itself (`/droplets/{id}/icon`): pages keep their Content Security
//! Policy (`img-src 'self' data:`), and users' browsers never contact the site the URL names
//! (an icon URL would otherwise be a tracking pixel). Runs when a droplet is saved, never on a
//! page or proxy request.
//!
//! Bounded: http(s) only, no credentials in the URL, a few redirects, [`FETCH_TIMEOUT`],
//! [`MAX_ICON_BYTES`]. Only PNG, JPEG, GIF, WebP and SVG are kept, recognised by their bytes
//! (the remote server's content type must agree, but is not trusted alone).
//!
//! Like the catalogue import ([`super::remote_catalogue`]), the fetch leaves from the gateway's
//! host and reaches what it reaches: only holders of `edit_droplets` or `edit_registry` name
//! the URL, and what comes back is kept only if it is a small image (errors never echo the
//! body), so it cannot be used to read internal pages.

use std::time::Duration;

use openidconnect::reqwest;
use sha2::{Digest, Sha256};

use crate::store::droplet_icons::DropletIcon;

/// The time a fetch may take, all of it.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest icon kept.
pub const MAX_ICON_BYTES: usize = 256 * 1024;

/// Whether an icon reference names another site: a URL this module fetches (as opposed to a
/// path of our own assets, shown as it is).
pub fn is_remote(icon: &str) -> bool {
    let icon = icon.trim();
    icon.starts_with("https://") || icon.starts_with("http://")
}

/// Fetches and checks the icon at `url` for `droplet_id`. The error says why, in words for the
/// administrator who gave the URL.
pub async fn fetch(droplet_id: i64, url: &str, now: i64) -> Result<DropletIcon, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http:// and https:// icons are fetched".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("an icon URL must not carry a user name or password".into());
    }
    let client = reqwest::ClientBuilder::new()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {e}"))?;
    let fetching = async {
        let mut response = client
            .get(parsed)
            .header(
                "accept",
                "image/png,image/jpeg,image/gif,image/webp,image/svg+xml",
            )
            .send()
            .await
            .map_err(|e| format!("cannot fetch the icon: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("the icon's server answered {}", response.status()));
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
            })
            .unwrap_or_default();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ICON_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("cannot read the icon: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_ICON_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((declared, body))
    };
    let (declared, body) = tokio::time::timeout(FETCH_TIMEOUT, fetching)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the icon did not arrive within {} s",
                FETCH_TIMEOUT.as_secs()
            ))
        })?;
    let content_type = image_type(&declared, &body)?;
    Ok(DropletIcon {
        droplet_id,
        source_url: url.trim().to_owned(),
        content_type: content_type.to_owned(),
        etag: etag(&body),
        body,
        fetched_at: now,
    })
}

fn too_large() -> String {
    format!("the icon is larger than {} KiB", MAX_ICON_BYTES / 1024)
}

/// The content type the icon is served with: what its bytes are, provided the server's
/// declared type (when it gave one more specific than a generic binary) agrees.
pub fn image_type(declared: &str, body: &[u8]) -> Result<&'static str, String> {
    let sniffed = sniff(body)
        .ok_or_else(|| "not an image (PNG, JPEG, GIF, WebP or SVG expected)".to_owned())?;
    let generic = matches!(
        declared,
        "" | "application/octet-stream" | "binary/octet-stream"
    );
    let agrees = declared == sniffed
        || (sniffed == "image/jpeg" && declared == "image/jpg")
        || (sniffed == "image/svg+xml" && matches!(declared, "text/xml" | "application/xml"));
    if generic || agrees {
        Ok(sniffed)
    } else {
        Err(format!(
            "the server calls it {declared:?}, not an image type this gateway serves"
        ))
    }
}

fn sniff(body: &[u8]) -> Option<&'static str> {
    if body.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if body.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some("image/jpeg");
    }
    if body.starts_with(b"GIF87a") || body.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if body.len() >= 12 && &body[..4] == b"RIFF" && &body[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    // SVG is text: an XML prolog, comments or a doctype may come first.
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    let text = head.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with('<') && head.contains("<svg") {
        return Some("image/svg+xml");
    }
    None
}

fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_bytes() {
        assert_eq!(
            image_type("image/png", b"\x89PNG\r\n\x1a\n...."),
            Ok("image/png")
        );
        assert_eq!(image_type("", b"\xff\xd8\xff\xe0 jfif"), Ok("image/jpeg"));
        assert_eq!(
            image_type(
                "image/svg+xml",
                b"<?xml version=\"1.0\"?><svg xmlns=\"\"></svg>"
            ),
            Ok("image/svg+xml")
        );
        assert_eq!(
            image_type("image/webp", b"RIFF\0\0\0\0WEBPVP8 "),
            Ok("image/webp")
        );
        // Not an image, whatever the server says.
        assert!(image_type("image/png", b"<html><body>hi</body></html>").is_err());
        assert!(image_type("text/html", b"\x89PNG\r\n\x1a\n....").is_err());
        assert!(image_type("image/png", b"").is_err());
    }

    #[test]
    fn only_other_sites_are_fetched() {
        assert!(is_remote("https://cdn.example/a.png"));
        assert!(is_remote("http://127.0.0.1:8080/a.png"));
        assert!(!is_remote("/assets/icons/a.svg"));
        assert!(!is_remote("data:image/png;base64,AAAA"));
    }
}

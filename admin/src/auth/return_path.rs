//! Where to send a browser after login: only a path on our own host. Anything that a browser
//! could read as another host (`//evil`, `/\evil`, `https://evil`, encoded or with control
//! characters) becomes the default page, so the login page cannot be used as an open redirect.

pub const DEFAULT: &str = "/dashboard";

/// A relative path on our host, or [`DEFAULT`].
pub fn safe_return_path(raw: Option<&str>) -> String {
    raw.filter(|p| is_safe(p))
        .map_or_else(|| DEFAULT.to_owned(), str::to_owned)
}

fn is_safe(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || path.len() > 2048 {
        return false;
    }
    // Browsers treat `\` as `/` and drop tabs and newlines, so `/\evil` and `/\t/evil` are
    // protocol-relative URLs in disguise; percent-encoded forms of them are refused too, since
    // some servers and frameworks decode before redirecting.
    if matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return false;
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'\\' || b == b' ')
    {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    !["%2f", "%5c", "%09", "%0a", "%0d", "%00"]
        .iter()
        .any(|enc| lower.starts_with(&format!("/{enc}")))
        && !lower.contains("%5c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_survive() {
        for ok in ["/dashboard", "/droplet/3?x=1#top", "/a/b%20c", "/"] {
            assert_eq!(safe_return_path(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2fevil.example",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "evil.example",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_return_path(Some(bad)), DEFAULT, "{bad:?}");
        }
        assert_eq!(safe_return_path(None), DEFAULT);
    }
}

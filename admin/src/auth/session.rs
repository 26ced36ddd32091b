//! Server-side sessions and the cookie that names them.
//!
//! The cookie holds a random secret; the database holds only its digest, with idle and absolute
//! expiry. Every login creates a new session (a cookie planted before login is never promoted),
//! and a session is refused at once when it is revoked, expired, or its user is disabled.

use crate::error::Result;
use crate::store::{NewSession, Session, Store, User};

use super::tokens;

/// `__Host-` makes browsers refuse the cookie unless it is Secure, host-only and for `/`: no
/// sub-domain (an instance host) can set or overwrite it.
pub const COOKIE_NAME: &str = "__Host-flowcase_session";

/// Writing `last_seen_at` on every request would make every page view a database write.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// How long sessions live, from `[auth]`.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle_ms: i64,
    pub absolute_ms: i64,
    pub remember_ms: i64,
}

impl Lifetimes {
    pub fn from_config(auth: &flowcase_config::AuthConfig) -> Self {
        let ms =
            |d: flowcase_config::Duration| i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX);
        Self {
            idle_ms: ms(auth.session_idle_timeout),
            absolute_ms: ms(auth.session_lifetime),
            remember_ms: ms(auth.remember_me_lifetime),
        }
    }
}

/// Who is asking, as far as the network tells.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub addr: Option<String>,
    pub user_agent: Option<String>,
}

/// A new session for `user`; returns the cookie secret (shown once) and the stored row.
pub async fn start(
    store: &Store,
    lifetimes: Lifetimes,
    user: &User,
    remember: bool,
    client: &ClientInfo,
    now: i64,
) -> Result<(String, Session)> {
    let secret = tokens::new_secret();
    let absolute = now.saturating_add(if remember {
        lifetimes.remember_ms
    } else {
        lifetimes.absolute_ms
    });
    // A remembered session outlives the idle timeout: that is what "remember me" means.
    let idle = if remember {
        absolute
    } else {
        now.saturating_add(lifetimes.idle_ms).min(absolute)
    };
    let session = store
        .create_session(
            &NewSession {
                id: tokens::digest(&secret),
                user_id: user.id,
                idle_expires_at: idle,
                absolute_expires_at: absolute,
                remember,
                client_addr: client.addr.clone(),
                user_agent: client
                    .user_agent
                    .as_ref()
                    .map(|ua| ua.chars().take(512).collect()),
            },
            now,
        )
        .await?;
    Ok((secret, session))
}

/// The live session and user behind a cookie secret, sliding the idle expiry forward.
pub async fn resolve(
    store: &Store,
    lifetimes: Lifetimes,
    secret: &str,
    now: i64,
) -> Result<Option<(Session, User)>> {
    let Some(session) = store.get_session(&tokens::digest(secret)).await? else {
        return Ok(None);
    };
    if !session.is_active(now) {
        return Ok(None);
    }
    let Some(user) = store.get_user(session.user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        store.revoke_user_sessions(user.id, now).await?;
        return Ok(None);
    }
    // Short idle timeouts need more frequent touches, or activity would not keep them alive.
    let touch_every = TOUCH_INTERVAL_MS.min(lifetimes.idle_ms / 4);
    if !session.remember && now - session.last_seen_at >= touch_every {
        let idle = now
            .saturating_add(lifetimes.idle_ms)
            .min(session.absolute_expires_at);
        store.touch_session(&session.id, now, idle).await?;
    }
    Ok(Some((session, user)))
}

/// `Set-Cookie` for a new session. Remembered sessions persist across browser restarts; others
/// end with the browser session (and on the server with their expiry).
pub fn set_cookie(secret: &str, session: &Session, now: i64) -> String {
    let mut cookie = format!("{COOKIE_NAME}={secret}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if session.remember {
        let max_age = (session.absolute_expires_at - now).max(0) / 1000;
        cookie.push_str(&format!("; Max-Age={max_age}"));
    }
    cookie
}

pub fn clear_cookie() -> String {
    clear_named(COOKIE_NAME)
}

/// `Set-Cookie` that removes one of our host-only cookies.
pub fn clear_named(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// Every value of the cookie `name` in a request's `Cookie` headers (a browser may send a name
/// twice, e.g. set by two paths).
pub fn cookie_values<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The session secret in a request's `Cookie` headers.
pub fn cookie_secret<'a>(cookie_headers: impl Iterator<Item = &'a str>) -> Option<String> {
    cookie_values(cookie_headers, COOKIE_NAME)
        .next()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_cookie_among_others() {
        let headers = ["a=1; __Host-flowcase_session=abc; b=2", "c=3"];
        assert_eq!(cookie_secret(headers.into_iter()).as_deref(), Some("abc"));
        assert_eq!(cookie_secret(["flowcase_session=x"].into_iter()), None);
        assert_eq!(
            cookie_secret(["__Host-flowcase_session="].into_iter()),
            None
        );
    }
}

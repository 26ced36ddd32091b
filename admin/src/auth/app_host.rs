//! Access to instance hosts (`<slug>.<apps_domain>`) without ever sending them our session
//! cookie: instance hosts run code we do not trust.
//!
//! 1. The front door sends a browser without a valid app cookie to `/app-auth` on the public
//!    host with a random `state`, which it also sets in a host-only cookie on the instance host
//!    ([`STATE_COOKIE`]); `/app-auth` checks the session and the user's right to the instance
//!    and mints a one-time code (sealed, 60 s, bound to the session, the host, the instance and
//!    the state);
//! 2. the browser brings the code to `https://<instance host>/__flowcase/auth`, where the front
//!    door opens it, checks that this browser holds the state cookie the code was minted for,
//!    remembers the code as used, and sets a host-only app cookie (sealed, bound to the same
//!    session, host and instance, expiring with the session). The state is what keeps a code
//!    minted by someone for their own instance from signing a victim's browser in there as them
//!    (the victim's browser never got that state);
//! 3. every later request on that host carries the app cookie, checked in memory: no database
//!    call on the proxy's path. Revoked sessions reach the front door through its revocation
//!    list.
//!
//! Both halves (minting here in the control plane, checking in the front door) use this module,
//! so the formats live in one place.

use serde::{Deserialize, Serialize};

use crate::secrets::{Keyring, seal};

/// Path on instance hosts where the front door takes codes; never forwarded upstream.
pub const AUTH_PATH: &str = "/__flowcase/auth";
/// The host-only cookie on instance hosts; `__Host-` keeps sibling hosts from setting it.
pub const APP_COOKIE: &str = "__Host-flowcase_app";
/// The host-only cookie that binds a code to the browser that went to fetch it.
pub const STATE_COOKIE: &str = "__Host-flowcase_app_state";
/// How long a browser may take from the instance host to `/app-auth` and back (a sign-in in
/// between included).
const STATE_MAX_AGE_S: i64 = 600;
const CODE_PURPOSE: &str = "app-host-code";
const COOKIE_PURPOSE: &str = "app-host-cookie";
pub const CODE_TTL_MS: i64 = 60_000;

/// Who may use an instance host, as sealed into codes and cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppIdentity {
    /// The stored id (hash) of the session this access derives from.
    pub session: String,
    pub user_id: i64,
    pub username: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// The instance host this access is for, lower-case, without port.
    pub host: String,
    /// The instance id: a later instance with the same host name is not covered.
    pub instance_id: i64,
    /// The session's absolute expiry, unix ms: the app cookie never outlives it.
    pub session_expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Code {
    identity: AppIdentity,
    /// Makes each code unique, so that a used one can be remembered and refused.
    jti: String,
    return_to: String,
    /// The state of the browser the code is for (see [`STATE_COOKIE`]).
    state: String,
}

/// An opened code: who, which code (to remember as used), and where to go next.
#[derive(Debug)]
pub struct OpenedCode {
    pub identity: AppIdentity,
    pub jti: String,
    pub return_to: String,
    state: String,
}

impl OpenedCode {
    /// Whether the browser presenting the code holds the state it was minted for: one of the
    /// values of its [`STATE_COOKIE`].
    pub fn belongs_to<'a>(&self, states: impl IntoIterator<Item = &'a str>) -> bool {
        // Not a secret against timing: learning it would take the victim's browser.
        states
            .into_iter()
            .any(|state| is_state(state) && state == self.state)
    }
}

/// A new browser state for [`STATE_COOKIE`].
pub fn new_state() -> String {
    super::tokens::new_secret()
}

/// Whether `state` has the form [`new_state`] gives (what `/app-auth` accepts).
pub fn is_state(state: &str) -> bool {
    state.len() == 43
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `Set-Cookie` value that gives the browser `state`.
pub fn state_cookie(state: &str) -> String {
    format!(
        "{STATE_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={STATE_MAX_AGE_S}"
    )
}

/// The `Set-Cookie` value that removes the state once it served.
pub fn clear_state_cookie() -> String {
    format!("{STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// A one-time code for `identity` and the browser holding `state`.
pub fn mint_code(
    keyring: &Keyring,
    identity: AppIdentity,
    return_to: &str,
    state: &str,
    now: i64,
) -> Option<String> {
    let code = Code {
        identity,
        jti: super::tokens::new_secret(),
        return_to: super::return_path::safe_return_path(Some(return_to)),
        state: state.to_owned(),
    };
    seal::seal(keyring, CODE_PURPOSE, &code, now + CODE_TTL_MS)
}

/// Opens a code presented on `host`; None when forged, expired, or minted for another host.
pub fn open_code(keyring: &Keyring, code: &str, host: &str, now: i64) -> Option<OpenedCode> {
    let code: Code = seal::open(keyring, CODE_PURPOSE, code, now)?;
    (code.identity.host == host && now < code.identity.session_expires_at).then(|| OpenedCode {
        identity: code.identity,
        jti: code.jti,
        return_to: super::return_path::safe_return_path(Some(&code.return_to)),
        state: code.state,
    })
}

/// The `Set-Cookie` value for an instance host.
pub fn cookie(keyring: &Keyring, identity: &AppIdentity, now: i64) -> Option<String> {
    let value = seal::seal(
        keyring,
        COOKIE_PURPOSE,
        identity,
        identity.session_expires_at,
    )?;
    let max_age = (identity.session_expires_at - now).max(0) / 1000;
    Some(format!(
        "{APP_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
}

/// Opens an app cookie presented on `host`; None when forged, expired, or for another host.
pub fn open_cookie(keyring: &Keyring, value: &str, host: &str, now: i64) -> Option<AppIdentity> {
    let identity: AppIdentity = seal::open(keyring, COOKIE_PURPOSE, value, now)?;
    (identity.host == host).then_some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Key;

    fn ring() -> Keyring {
        Keyring::from_keys(vec![Key {
            id: "k1".into(),
            bytes: [3; 32],
        }])
        .unwrap_or_else(|| unreachable!())
    }

    fn identity() -> AppIdentity {
        AppIdentity {
            session: "s".into(),
            user_id: 7,
            username: "alice".into(),
            email: None,
            groups: vec![],
            host: "abc.apps.example".into(),
            instance_id: 3,
            session_expires_at: 1_000_000,
        }
    }

    #[test]
    fn codes_belong_to_the_browser_holding_their_state() {
        let k = ring();
        let (mine, other) = (new_state(), new_state());
        assert!(is_state(&mine) && mine != other);
        let code = mint_code(&k, identity(), "/", &mine, 0).unwrap_or_default();
        let opened = open_code(&k, &code, "abc.apps.example", 10);
        assert!(
            opened
                .as_ref()
                .is_some_and(|c| c.belongs_to([mine.as_str()]))
        );
        assert!(
            opened
                .as_ref()
                .is_some_and(|c| c.belongs_to([other.as_str(), mine.as_str()]))
        );
        assert!(
            !opened
                .as_ref()
                .is_some_and(|c| c.belongs_to([other.as_str()]))
        );
        assert!(
            !opened.as_ref().is_some_and(|c| c.belongs_to([])),
            "no state cookie"
        );
        assert!(!is_state("short") && !is_state(&format!("{}=", &mine[..42])));
        assert!(
            state_cookie(&mine)
                .starts_with(&format!("{STATE_COOKIE}={mine}; Path=/; Secure; HttpOnly"))
        );
    }

    #[test]
    fn codes_are_bound_to_their_host_and_expire() {
        let k = ring();
        let code = mint_code(&k, identity(), "//evil.example", &new_state(), 0).unwrap_or_default();
        let opened = open_code(&k, &code, "abc.apps.example", 10).map(|c| c.return_to);
        assert_eq!(
            opened.as_deref(),
            Some("/dashboard"),
            "return path sanitised"
        );
        assert!(open_code(&k, &code, "other.apps.example", 10).is_none());
        assert!(open_code(&k, &code, "abc.apps.example", CODE_TTL_MS).is_none());
        // A cookie is not a code, and a code is not a cookie.
        assert!(open_cookie(&k, &code, "abc.apps.example", 10).is_none());
    }

    #[test]
    fn cookies_are_bound_to_their_host_and_the_session_expiry() {
        let k = ring();
        let set_cookie = cookie(&k, &identity(), 0).unwrap_or_default();
        let value = set_cookie
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        assert_eq!(
            open_cookie(&k, &value, "abc.apps.example", 5),
            Some(identity())
        );
        assert!(open_cookie(&k, &value, "xyz.apps.example", 5).is_none());
        assert!(open_cookie(&k, &value, "abc.apps.example", 1_000_000).is_none());
        assert!(set_cookie.contains("Max-Age=1000"));
    }
}

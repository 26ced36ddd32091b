//! The front door's half of the instance-host login (the formats and the control plane's half
//! are in `flowcase_admin::auth::app_host`): takes one-time codes at `/__flowcase/auth`, sets the
//! host-only app cookie, and checks that cookie on every request — in memory only.
//!
//! A code works once across every gateway process sharing the database: besides this process's
//! memory, its redemption is claimed in the database (through the control plane's pool). That
//! costs one query per code, never one per request.
//!
//! A cookie is opened (decrypted, parsed) once and kept as an [`Admitted`] until its session
//! ends, so the requests after the first cost a map lookup; revocation is still checked on every
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use flowcase_admin::Store;
use flowcase_admin::auth::app_host::{self, AppIdentity, CODE_TTL_MS};
use flowcase_admin::auth::session::cookie_values;
use flowcase_admin::secrets::Keyring;
use flowcase_config::{Config, origin};
use http::HeaderValue;

use crate::snapshot::{InstanceRoute, Snapshot};

/// Codes remembered as used; bounded so a flood of valid-looking codes cannot grow memory.
const MAX_USED_CODES: usize = 100_000;
/// A claim the database does not answer in time is refused: the user just asks for a new code.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Where redeemed codes are claimed: the control plane's store, queried on the control plane's
/// runtime (its pool lives there). Filled once the control plane has connected; until then every
/// code is refused.
#[derive(Clone, Default)]
pub struct CodeClaims(Arc<OnceLock<(Store, tokio::runtime::Handle)>>);

impl CodeClaims {
    /// Called by the control plane, on its runtime, once its store is open.
    pub fn connect(&self, store: Store) {
        let _ = self.0.set((store, tokio::runtime::Handle::current()));
    }

    /// True when this is the first redemption of `jti` anywhere.
    async fn claim(&self, jti: &str, now: i64) -> bool {
        let Some((store, runtime)) = self.0.get() else {
            return false;
        };
        let (store, jti) = (store.clone(), jti.to_owned());
        let task =
            runtime.spawn(async move { store.claim_app_code(&jti, now + CODE_TTL_MS, now).await });
        match tokio::time::timeout(CLAIM_TIMEOUT, task).await {
            Ok(Ok(Ok(first))) => first,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "cannot record a used instance-host code");
                false
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }
}

/// Opened app cookies kept; bounded, as each costs about a kilobyte. Only cookies that opened are
/// kept, so a flood of forged ones adds nothing.
const MAX_ADMITTED: usize = 10_000;

/// An opened app cookie: who, and the identity headers of its requests, ready to copy upstream.
pub struct Admitted {
    pub identity: AppIdentity,
    /// `X-Forwarded-User`, `X-Forwarded-Email`, `X-Forwarded-Groups`.
    pub user: HeaderValue,
    pub email: Option<HeaderValue>,
    pub groups: HeaderValue,
    /// The identity assertion last signed for this cookie and when (unix ms): see
    /// `proxy::Assertions`, which reuses it for a while.
    pub assertion: Mutex<Option<(HeaderValue, i64)>>,
}

impl Admitted {
    /// None when a name, e-mail or group holds a character no header value may carry.
    fn new(identity: AppIdentity) -> Option<Self> {
        Some(Self {
            user: HeaderValue::from_str(&identity.username).ok()?,
            email: match &identity.email {
                Some(email) => Some(HeaderValue::from_str(email).ok()?),
                None => None,
            },
            groups: HeaderValue::from_str(&identity.groups.join(",")).ok()?,
            identity,
            assertion: Mutex::new(None),
        })
    }
}

pub enum Decision {
    /// The request may go to the instance as this user.
    Allow(Arc<Admitted>),
    /// Send the browser through the public host's `/app-auth` to get a code, giving it its
    /// state cookie first when it has none.
    Login {
        location: String,
        set_cookie: Option<String>,
    },
    /// A code was accepted: set the app cookie (and drop the state) and go to the return path.
    Enter {
        set_cookies: [String; 2],
        location: String,
    },
    /// Refused, with a status and a message for the page.
    Refuse(u16, &'static str),
}

pub struct AppHostGate {
    keyring: Keyring,
    snapshot: Arc<Snapshot>,
    public_origin: String,
    /// jti → when the code expires (after which it is refused anyway and can be forgotten).
    used_codes: Mutex<HashMap<String, i64>>,
    claims: CodeClaims,
    /// Cookie value → what it opened to. Every request of every event loop reads it and only a
    /// first sight writes: a read-write lock keeps the loops from queueing behind each other.
    admitted: RwLock<HashMap<String, Arc<Admitted>>>,
}

impl AppHostGate {
    pub fn new(
        config: &Config,
        keyring: Keyring,
        snapshot: Arc<Snapshot>,
        claims: CodeClaims,
    ) -> Self {
        Self {
            keyring,
            snapshot,
            public_origin: origin(
                config.server.public_host.as_str(),
                config.server.effective_https_port(),
            ),
            used_codes: Mutex::new(HashMap::new()),
            claims,
            admitted: RwLock::new(HashMap::new()),
        }
    }

    /// Decides a request on instance host `host` (lower-case, no port) for `route`, but for
    /// [`app_host::AUTH_PATH`], which goes to [`AppHostGate::enter`].
    pub fn decide(
        &self,
        host: &str,
        route: &InstanceRoute,
        path: &str,
        query: Option<&str>,
        cookies: &[&str],
        now: i64,
    ) -> Decision {
        let mut unsendable = false;
        let valid = cookie_values(cookies.iter().copied(), app_host::APP_COOKIE)
            .filter_map(|value| match self.admitted(value, host, now) {
                Opened::Admitted(admitted) => Some(admitted),
                Opened::Unsendable => {
                    unsendable = true;
                    None
                }
                Opened::Invalid => None,
            })
            .find(|a| {
                a.identity.instance_id == route.id && !self.snapshot.is_revoked(&a.identity.session)
            });
        match valid {
            Some(admitted) => Decision::Allow(admitted),
            // Sending the browser to log in again would only bring it back here.
            None if unsendable => Decision::Refuse(
                403,
                "Your account's name, e-mail or groups hold characters that cannot be passed on to an instance.",
            ),
            None => {
                let back = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                // A browser already on its way (another tab) keeps its state, so that the first
                // tab's code still matches.
                let kept = cookie_values(cookies.iter().copied(), app_host::STATE_COOKIE)
                    .find(|s| app_host::is_state(s))
                    .map(str::to_owned);
                let (state, set_cookie) = match kept {
                    Some(state) => (state, None),
                    None => {
                        let state = app_host::new_state();
                        let cookie = app_host::state_cookie(&state);
                        (state, Some(cookie))
                    }
                };
                let params = serde_urlencoded::to_string([
                    ("host", host),
                    ("return", &back),
                    ("state", &state),
                ])
                .unwrap_or_default();
                Decision::Login {
                    location: format!("{}/app-auth?{params}", self.public_origin),
                    set_cookie,
                }
            }
        }
    }

    /// The app cookie `value` presented on `host`, opened or found already opened.
    fn admitted(&self, value: &str, host: &str, now: i64) -> Opened {
        let cached = self
            .admitted
            .read()
            .ok()
            .and_then(|kept| kept.get(value).cloned());
        let admitted = match cached {
            Some(admitted) => admitted,
            None => {
                let Some(identity) = app_host::open_cookie(&self.keyring, value, host, now) else {
                    return Opened::Invalid;
                };
                let Some(admitted) = Admitted::new(identity).map(Arc::new) else {
                    return Opened::Unsendable;
                };
                self.keep(value, &admitted, now);
                admitted
            }
        };
        // What `open_cookie` checks, checked again for a kept one: the cookie is sealed to expire
        // with its session, and is good on its own host only.
        if admitted.identity.host == host && now < admitted.identity.session_expires_at {
            Opened::Admitted(admitted)
        } else {
            Opened::Invalid
        }
    }

    fn keep(&self, value: &str, admitted: &Arc<Admitted>, now: i64) {
        let Ok(mut kept) = self.admitted.write() else {
            return;
        };
        if kept.len() >= MAX_ADMITTED {
            kept.retain(|_, a| now < a.identity.session_expires_at);
            if kept.len() >= MAX_ADMITTED {
                kept.clear();
            }
        }
        kept.insert(value.to_owned(), admitted.clone());
    }

    /// A code brought to [`app_host::AUTH_PATH`]: the cookie and the way in, or a refusal.
    pub async fn enter(
        &self,
        host: &str,
        route: &InstanceRoute,
        query: Option<&str>,
        cookies: &[&str],
        now: i64,
    ) -> Decision {
        const INVALID: Decision = Decision::Refuse(
            403,
            "This sign-in link is invalid, expired or already used.",
        );
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
        let Some(code) = params.iter().find(|(k, _)| k == "code").map(|(_, v)| v) else {
            return INVALID;
        };
        let Some(opened) = app_host::open_code(&self.keyring, code, host, now) else {
            return INVALID;
        };
        if opened.identity.instance_id != route.id
            || self.snapshot.is_revoked(&opened.identity.session)
        {
            return INVALID;
        }
        // Checked before the code is spent: a link sent to somebody else is refused and stays
        // good for nobody but the browser that asked for it.
        if !opened.belongs_to(cookie_values(
            cookies.iter().copied(),
            app_host::STATE_COOKIE,
        )) {
            return Decision::Refuse(
                403,
                "This sign-in link was made for another browser. Open the app's address to sign in.",
            );
        }
        if !self.first_use(&opened.jti, now) || !self.claims.claim(&opened.jti, now).await {
            return INVALID;
        }
        let Some(set_cookie) = app_host::cookie(&self.keyring, &opened.identity, now) else {
            return Decision::Refuse(500, "cannot seal the access cookie");
        };
        Decision::Enter {
            set_cookies: [set_cookie, app_host::clear_state_cookie()],
            location: opened.return_to,
        }
    }

    /// Records a code as used; false when it already was (a replay).
    fn first_use(&self, jti: &str, now: i64) -> bool {
        let Ok(mut used) = self.used_codes.lock() else {
            return false;
        };
        if used.len() >= MAX_USED_CODES {
            used.retain(|_, expires| *expires > now);
            if used.len() >= MAX_USED_CODES {
                // Refusing is the safe side: the user just asks for a new code.
                return false;
            }
        }
        used.insert(jti.to_owned(), now + CODE_TTL_MS).is_none()
    }
}

enum Opened {
    Admitted(Arc<Admitted>),
    /// Genuine, but its identity cannot be put in headers.
    Unsendable,
    /// Forged, expired, for another host.
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowcase_admin::secrets::Key;
    use flowcase_admin::store::InstanceStatus;

    const HOST: &str = "abc.apps.localhost";

    fn keyring() -> Keyring {
        Keyring::from_keys(vec![Key {
            id: "k1".into(),
            bytes: [7; 32],
        }])
        .unwrap_or_else(|| unreachable!())
    }

    fn route(id: i64) -> InstanceRoute {
        InstanceRoute {
            id,
            user_id: 7,
            status: InstanceStatus::Running,
            upstream: None,
            droplet_name: "app".into(),
        }
    }

    /// The `Cookie` header a browser sends after `/__flowcase/auth` set the app cookie.
    fn cookie_header(keyring: &Keyring) -> String {
        let identity = AppIdentity {
            session: "session-hash".into(),
            user_id: 7,
            username: "alice".into(),
            email: Some("alice@example.org".into()),
            groups: vec!["User".into(), "Staff".into()],
            host: HOST.into(),
            instance_id: 3,
            session_expires_at: 1_000_000,
        };
        let set_cookie = app_host::cookie(keyring, &identity, 0).unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    fn allowed(decision: Decision) -> Option<Arc<Admitted>> {
        match decision {
            Decision::Allow(admitted) => Some(admitted),
            _ => None,
        }
    }

    #[test]
    fn an_opened_cookie_is_kept_yet_still_bound_to_its_host_instance_and_session_end() {
        let keyring = keyring();
        let gate = AppHostGate::new(
            &Config::default(),
            keyring.clone(),
            Snapshot::new(),
            CodeClaims::default(),
        );
        let cookie = cookie_header(&keyring);
        let decide = |host: &str, instance: i64, cookie: &str, now: i64| {
            gate.decide(
                host,
                &route(instance),
                "/",
                None,
                &[cookie, "theme=dark"],
                now,
            )
        };

        let first = allowed(decide(HOST, 3, &cookie, 10)).expect("the cookie admits its owner");
        assert_eq!(first.identity.username, "alice");
        assert_eq!(first.user, "alice");
        assert_eq!(
            first.email.as_ref().map(|e| e.as_bytes()),
            Some(&b"alice@example.org"[..])
        );
        assert_eq!(first.groups, "User,Staff");
        let again = allowed(decide(HOST, 3, &cookie, 20)).expect("still admitted");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second request reuses the opened cookie"
        );

        // Kept or not, the cookie is good for its own host, instance and session only.
        assert!(matches!(
            decide("xyz.apps.localhost", 3, &cookie, 30),
            Decision::Login { .. }
        ));
        assert!(matches!(
            decide(HOST, 4, &cookie, 30),
            Decision::Login { .. }
        ));
        assert!(matches!(
            decide(HOST, 3, &cookie, 1_000_000),
            Decision::Login { .. }
        ));

        // A tampered cookie opens to nothing and is not kept.
        let last = if cookie.ends_with('A') { "B" } else { "A" };
        let tampered = format!("{}{last}", &cookie[..cookie.len() - 1]);
        assert!(matches!(
            decide(HOST, 3, &tampered, 30),
            Decision::Login { .. }
        ));
        assert_eq!(gate.admitted.read().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_code_admits_only_the_browser_that_went_to_fetch_it() {
        let keyring = keyring();
        let claims = CodeClaims::default();
        claims.connect(Store::connect("sqlite::memory:").await.unwrap());
        let gate = AppHostGate::new(&Config::default(), keyring.clone(), Snapshot::new(), claims);
        // Sent to sign in: a state cookie, and the same state in the way to /app-auth.
        let Decision::Login {
            location,
            set_cookie: Some(set_cookie),
        } = gate.decide(HOST, &route(3), "/docs", Some("a=1"), &[], 10)
        else {
            panic!("expected a login with a state cookie");
        };
        let state_pair = set_cookie.split(';').next().unwrap().to_owned();
        let state = state_pair.split_once('=').unwrap().1.to_owned();
        assert!(location.contains(&format!("state={state}")), "{location}");
        // Another tab of the same browser keeps that state.
        let again = gate.decide(HOST, &route(3), "/", None, &[&state_pair], 11);
        assert!(
            matches!(&again, Decision::Login { location, set_cookie: None } if location.contains(&state)),
            "the state is kept"
        );

        let identity = AppIdentity {
            session: "session-hash".into(),
            user_id: 7,
            username: "alice".into(),
            email: None,
            groups: vec![],
            host: HOST.into(),
            instance_id: 3,
            session_expires_at: 1_000_000,
        };
        let code = app_host::mint_code(&keyring, identity, "/docs", &state, 12).unwrap();
        let query = format!("code={code}");
        // Somebody else's browser (no state, or its own) is refused, and the code stays unspent.
        let own_state = format!("{}={}", app_host::STATE_COOKIE, app_host::new_state());
        for cookies in [vec![], vec![own_state.as_str()]] {
            let refused = gate
                .enter(HOST, &route(3), Some(&query), &cookies, 13)
                .await;
            assert!(matches!(refused, Decision::Refuse(403, _)), "{cookies:?}");
        }
        match gate
            .enter(HOST, &route(3), Some(&query), &[&state_pair], 14)
            .await
        {
            Decision::Enter {
                set_cookies,
                location,
            } => {
                assert_eq!(location, "/docs");
                assert!(set_cookies[0].starts_with(app_host::APP_COOKIE));
                assert!(set_cookies[1].contains("Max-Age=0"), "the state is dropped");
            }
            _ => panic!("the browser that fetched the code gets in"),
        }
    }
}

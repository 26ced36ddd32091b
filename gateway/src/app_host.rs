//! The front door's half of the instance-host login (the formats and the control plane's half
//! are in `flowcase_admin::auth::app_host`): takes one-time codes at `/__flowcase/auth`, sets the
//! host-only app cookie, and checks that cookie on every request — in memory only.
//!
//! A code works once across every gateway process sharing the database: besides this process's
//! memory, its redemption is claimed in the database (through the control plane's pool). That
//! costs one query per code, never one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flowcase_admin::Store;
use flowcase_admin::auth::app_host::{self, AppIdentity, CODE_TTL_MS};
use flowcase_admin::auth::session::cookie_values;
use flowcase_admin::secrets::Keyring;
use flowcase_config::{Config, origin};

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

pub enum Decision {
    /// The request may go to the instance as this user.
    Allow(AppIdentity),
    /// Send the browser through the public host's `/app-auth` to get a code.
    Login(String),
    /// A code was accepted: set the cookie and go to the return path.
    Enter {
        set_cookie: String,
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
        let valid = cookie_values(cookies.iter().copied(), app_host::APP_COOKIE)
            .filter_map(|value| app_host::open_cookie(&self.keyring, value, host, now))
            .find(|id| id.instance_id == route.id && !self.snapshot.is_revoked(&id.session));
        match valid {
            Some(identity) => Decision::Allow(identity),
            None => {
                let back = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                let params = serde_urlencoded::to_string([("host", host), ("return", &back)])
                    .unwrap_or_default();
                Decision::Login(format!("{}/app-auth?{params}", self.public_origin))
            }
        }
    }

    /// A code brought to [`app_host::AUTH_PATH`]: the cookie and the way in, or a refusal.
    pub async fn enter(
        &self,
        host: &str,
        route: &InstanceRoute,
        query: Option<&str>,
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
        if !self.first_use(&opened.jti, now) || !self.claims.claim(&opened.jti, now).await {
            return INVALID;
        }
        let Some(set_cookie) = app_host::cookie(&self.keyring, &opened.identity, now) else {
            return Decision::Refuse(500, "cannot seal the access cookie");
        };
        Decision::Enter {
            set_cookie,
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

//! Who is making a request, and proving it: local logins, server-side sessions, API keys,
//! CSRF and origin checks, login throttling, and the audit records of all of them.
//!
//! [`Auth`] is the one service the web layer calls; the submodules hold the parts that need no
//! database (token formats, the throttle, the password policy, safe return paths).

pub mod app_host;
pub mod assertion;
pub mod csrf;
pub mod oidc;
pub mod policy;
pub mod return_path;
pub mod session;
pub mod throttle;
pub mod tokens;
pub mod tunnel_token;

use http::HeaderMap;
use serde::Serialize;

use crate::accounts;
use crate::error::{AdminError, Result};
use crate::metrics::{self, LoginMethod, LoginResult};
use crate::secrets::Keyring;
use crate::store::{ApiKey, NewApiKey, NewAuditEntry, Permissions, Store, User};

pub use session::{ClientInfo, Lifetimes};
use throttle::LoginThrottle;

/// API keys are `fc_` followed by a random secret; the prefix makes leaked keys easy to scan for.
pub const API_KEY_PREFIX: &str = "fc_";

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The session cookie; `id_hash` is the stored session id.
    Session { id_hash: String },
    /// A personal API key (exempt from CSRF checks: browsers never send it on their own).
    ApiKey { key_id: i64 },
}

/// The authenticated user of a request, with the union of their groups' rights.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub permissions: Permissions,
    pub via: Via,
}

impl Principal {
    pub fn session_id_hash(&self) -> Option<&str> {
        match &self.via {
            Via::Session { id_hash } => Some(id_hash),
            Via::ApiKey { .. } => None,
        }
    }
}

/// The public view of a user, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    pub tenant_id: i64,
    pub permissions: Permissions,
}

impl From<&Principal> for UserView {
    fn from(p: &Principal) -> Self {
        Self {
            id: p.user.id,
            username: p.user.username.clone(),
            email: p.user.email.clone(),
            display_name: p.user.display_name.clone(),
            tenant_id: p.user.tenant_id,
            permissions: p.permissions,
        }
    }
}

/// A new API key: the secret is in `token` and is never shown again.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    pub token: String,
    pub key: ApiKey,
}

pub struct Auth {
    store: Store,
    oidc: oidc::Oidc,
    keyring: Keyring,
    lifetimes: Lifetimes,
    public_origin: String,
    throttle: LoginThrottle,
    /// Checked against when the login names no account, so that a wrong username costs the same
    /// time as a wrong password and response times do not reveal which accounts exist.
    dummy_hash: String,
}

impl Auth {
    pub fn new(store: Store, keyring: Keyring, config: &flowcase_config::Config) -> Result<Self> {
        Ok(Self {
            oidc: oidc::Oidc::new(config, keyring.clone())?,
            store,
            keyring,
            lifetimes: Lifetimes::from_config(&config.auth),
            public_origin: config.server.public_origin(),
            throttle: LoginThrottle::new(),
            dummy_hash: accounts::hash_password(&tokens::new_secret())?,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn public_origin(&self) -> &str {
        &self.public_origin
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn oidc(&self) -> &oidc::Oidc {
        &self.oidc
    }

    /// The principal behind a request's API key or session cookie, if any is valid.
    pub async fn authenticate(&self, headers: &HeaderMap, now: i64) -> Result<Option<Principal>> {
        if let Some(token) = bearer_token(headers) {
            return self.authenticate_api_key(token, now).await;
        }
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let Some(secret) = session::cookie_secret(cookies) else {
            return Ok(None);
        };
        let Some((session, user)) =
            session::resolve(&self.store, self.lifetimes, &secret, now).await?
        else {
            return Ok(None);
        };
        if !self.oidc.refresh_if_due(&self.store, &session, now).await? {
            self.store.revoke_session(&session.id, now).await?;
            self.audit(
                Some(&user),
                "session.ended_by_provider",
                &ClientInfo::default(),
                serde_json::Value::Null,
                now,
            )
            .await;
            return Ok(None);
        }
        let permissions = self.store.user_permissions(user.id).await?;
        Ok(Some(Principal {
            user,
            permissions,
            via: Via::Session {
                id_hash: session.id,
            },
        }))
    }

    async fn authenticate_api_key(&self, token: &str, now: i64) -> Result<Option<Principal>> {
        if !token.starts_with(API_KEY_PREFIX) {
            return Ok(None);
        }
        let Some(key) = self
            .store
            .find_api_key_by_hash(&tokens::digest(token))
            .await?
        else {
            return Ok(None);
        };
        if !key.is_active(now) {
            return Ok(None);
        }
        let Some(user) = self.store.get_user(key.user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        self.store.touch_api_key(key.id, now).await?;
        let permissions = self.store.user_permissions(user.id).await?;
        Ok(Some(Principal {
            user,
            permissions,
            via: Via::ApiKey { key_id: key.id },
        }))
    }

    /// Checks a login and opens a session. Every outcome is audited; failures say nothing about
    /// whether the account exists.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        remember: bool,
        client: &ClientInfo,
        now: i64,
    ) -> Result<(String, Principal, crate::store::Session)> {
        let mut keys = vec![throttle::account_key(login)];
        if let Some(addr) = &client.addr {
            keys.push(throttle::address_key(addr));
        }
        if let Some(wait_ms) = self.throttle.wait_ms(&keys, now) {
            self.audit(
                None,
                "login.throttled",
                client,
                serde_json::json!({"login": login}),
                now,
            )
            .await;
            metrics::login(LoginMethod::Password, LoginResult::Throttled);
            let retry_after_secs = u64::try_from(wait_ms.max(0))
                .unwrap_or(0)
                .div_ceil(1000)
                .max(1);
            return Err(AdminError::Throttled { retry_after_secs });
        }
        let user = self.store.find_user_by_login(login).await?;
        let hash = user
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let password_ok = verify_blocking(password.to_owned(), hash).await;
        let user = match user {
            Some(user) if password_ok && !user.disabled && user.password_hash.is_some() => user,
            other => {
                self.throttle.record_failure(&keys, now);
                let reason = match &other {
                    None => "unknown account",
                    Some(u) if u.disabled => "account disabled",
                    Some(_) => "wrong password",
                };
                self.audit(
                    other.as_ref(),
                    "login.failure",
                    client,
                    serde_json::json!({"login": login, "reason": reason}),
                    now,
                )
                .await;
                metrics::login(LoginMethod::Password, LoginResult::Failure);
                return Err(AdminError::InvalidCredentials);
            }
        };
        self.throttle.clear(&keys);
        let (secret, session) =
            session::start(&self.store, self.lifetimes, &user, remember, client, now).await?;
        self.audit(
            Some(&user),
            "login.success",
            client,
            serde_json::json!({"method": "password", "remember": remember}),
            now,
        )
        .await;
        metrics::login(LoginMethod::Password, LoginResult::Success);
        let permissions = self.store.user_permissions(user.id).await?;
        let principal = Principal {
            user,
            permissions,
            via: Via::Session {
                id_hash: session.id.clone(),
            },
        };
        Ok((secret, principal, session))
    }

    /// Ends the principal's session on the server (API keys have nothing to end). For a session
    /// opened through an identity provider, returns where to send the browser so that the
    /// provider's session ends too.
    pub async fn logout(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        now: i64,
    ) -> Result<Option<String>> {
        let mut provider_logout = None;
        if let Some(id_hash) = principal.session_id_hash() {
            if let Some(session) = self.store.get_session(id_hash).await? {
                provider_logout = self.oidc.logout_url(&session, now).await;
            }
            self.store.revoke_session(id_hash, now).await?;
        }
        self.audit(
            Some(&principal.user),
            "logout",
            client,
            serde_json::Value::Null,
            now,
        )
        .await;
        Ok(provider_logout)
    }

    /// Opens a session for a user who signed in at an identity provider.
    pub async fn login_external(
        &self,
        login: &oidc::ExternalLogin,
        client: &ClientInfo,
        now: i64,
    ) -> Result<(String, crate::store::Session)> {
        let (secret, session) =
            session::start(&self.store, self.lifetimes, &login.user, false, client, now).await?;
        self.oidc.attach(&self.store, &session, login).await?;
        self.audit(
            Some(&login.user),
            "login.success",
            client,
            serde_json::json!({"method": "oidc", "provider": login.provider}),
            now,
        )
        .await;
        metrics::login(LoginMethod::Oidc, LoginResult::Success);
        Ok((secret, session))
    }

    pub fn csrf_token(&self, principal: &Principal) -> Option<String> {
        principal
            .session_id_hash()
            .map(|id| csrf::token(&self.keyring, id))
    }

    pub fn csrf_valid(&self, principal: &Principal, presented: &str) -> bool {
        principal
            .session_id_hash()
            .is_some_and(|id| csrf::verify(&self.keyring, id, presented))
    }

    /// Changes the principal's own password after checking the current one; every other session
    /// of the user ends.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
        client: &ClientInfo,
        now: i64,
    ) -> Result<()> {
        let hash = principal
            .user
            .password_hash
            .clone()
            .ok_or(AdminError::Forbidden(
                "this account signs in through an identity provider",
            ))?;
        if !verify_blocking(current.to_owned(), hash).await {
            self.audit(
                Some(&principal.user),
                "password.change_failed",
                client,
                serde_json::Value::Null,
                now,
            )
            .await;
            return Err(AdminError::InvalidInput {
                field: "current_password",
                reason: "the current password is wrong".into(),
            });
        }
        self.set_password(&principal.user, new, principal.session_id_hash(), now)
            .await?;
        self.audit(
            Some(&principal.user),
            "password.change",
            client,
            serde_json::Value::Null,
            now,
        )
        .await;
        Ok(())
    }

    /// Sets a user's password (policy checked). A user changing their own keeps `keep_session`
    /// and their API keys, and their other sessions end; a reset by somebody else (no session to
    /// keep) ends every session and revokes every API key of the user.
    pub async fn set_password(
        &self,
        user: &User,
        new: &str,
        keep_session: Option<&str>,
        now: i64,
    ) -> Result<()> {
        if let Some(reason) = policy::check(new, &user.username) {
            return Err(AdminError::InvalidInput {
                field: "new_password",
                reason: reason.into(),
            });
        }
        let hash = hash_blocking(new.to_owned()).await?;
        self.store
            .set_password_hash(user.id, Some(&hash), now)
            .await?;
        match keep_session {
            Some(keep) => {
                self.store
                    .revoke_user_sessions_except(user.id, keep, now)
                    .await?;
            }
            None => {
                self.store.end_user_access(user.id, now).await?;
            }
        }
        Ok(())
    }

    /// Creates a personal API key acting as `principal.user`.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        name: &str,
        expires_at: Option<i64>,
        client: &ClientInfo,
        now: i64,
    ) -> Result<CreatedApiKey> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AdminError::InvalidInput {
                field: "name",
                reason: "give the key a name of 1 to 100 characters".into(),
            });
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(AdminError::InvalidInput {
                field: "expires_at",
                reason: "the expiry must be in the future".into(),
            });
        }
        let token = format!("{API_KEY_PREFIX}{}", tokens::new_secret());
        let key = self
            .store
            .create_api_key(
                &NewApiKey {
                    user_id: principal.user.id,
                    name: name.to_owned(),
                    secret_hash: tokens::digest(&token),
                    prefix: token.chars().take(API_KEY_PREFIX.len() + 6).collect(),
                    expires_at,
                },
                now,
            )
            .await?;
        self.audit(
            Some(&principal.user),
            "api_key.create",
            client,
            serde_json::json!({"key_id": key.id, "name": key.name}),
            now,
        )
        .await;
        Ok(CreatedApiKey { token, key })
    }

    /// Revokes one of the principal's own keys.
    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        key_id: i64,
        client: &ClientInfo,
        now: i64,
    ) -> Result<()> {
        let owned = self
            .store
            .list_api_keys_for_user(principal.user.id)
            .await?
            .iter()
            .any(|k| k.id == key_id);
        if !owned {
            return Err(AdminError::NotFound("api key"));
        }
        self.store.revoke_api_key(key_id, now).await?;
        self.audit(
            Some(&principal.user),
            "api_key.revoke",
            client,
            serde_json::json!({"key_id": key_id}),
            now,
        )
        .await;
        Ok(())
    }

    /// Appends to the audit log; a failure to record is logged, never fails the request.
    pub async fn audit(
        &self,
        actor: Option<&User>,
        action: &str,
        client: &ClientInfo,
        details: serde_json::Value,
        now: i64,
    ) {
        let entry = NewAuditEntry {
            actor_user_id: actor.map(|u| u.id),
            actor_name: actor.map(|u| u.username.clone()),
            action: action.to_owned(),
            target_kind: actor.map(|_| "user".to_owned()),
            target_id: actor.map(|u| u.id.to_string()),
            client_addr: client.addr.clone(),
            details,
        };
        if let Err(e) = self.store.append_audit(&entry, now).await {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Argon2 takes tens of milliseconds of CPU: off the async workers.
async fn verify_blocking(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(|e| AdminError::PasswordHash(e.to_string()))?
}

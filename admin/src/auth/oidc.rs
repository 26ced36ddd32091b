//! Login through OpenID Connect providers: the authorization code flow with PKCE, state and
//! nonce; ID token validation (signature, issuer, audience, expiry, nonce) by the
//! `openidconnect` crate; accounts created or linked by the provider's stable subject; groups
//! re-applied at every login; refresh tokens that keep a session alive and end it when the
//! provider refuses; RP-initiated logout.
//!
//! Nothing of a login in flight is kept in memory: the state, nonce and PKCE verifier travel in
//! a sealed, short-lived cookie, so the callback may land on any gateway process.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowcase_config::{Config, OidcProvider};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreErrorResponseType};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::accounts::validate;
use crate::error::{AdminError, Result};
use crate::secrets::{Keyring, seal};
use crate::store::{NewUser, Session, Store, User};

/// Cookie carrying the sealed state of a login in flight.
pub const LOGIN_COOKIE: &str = "__Host-flowcase_oidc";
const LOGIN_PURPOSE: &str = "oidc-login";
const TOKENS_PURPOSE: &str = "oidc-tokens";
/// Time allowed between leaving for the provider and coming back.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// When the provider says nothing about the access token's lifetime, ask again after this.
const DEFAULT_REFRESH_MS: i64 = 5 * 60 * 1000;
/// While one request refreshes a session, others leave it alone this long.
const REFRESH_LEASE_MS: i64 = 30 * 1000;
/// After a provider outage, try again this much later (the session stays alive meanwhile).
const RETRY_AFTER_OUTAGE_MS: i64 = 60 * 1000;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A login in flight, sealed into [`LOGIN_COOKIE`].
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
}

/// A session's provider tokens, sealed before they reach the database.
#[derive(Serialize, Deserialize)]
struct Tokens {
    refresh_token: Option<String>,
    id_token: Option<String>,
}

struct Discovered {
    client: Client,
    end_session: Option<EndSessionUrl>,
}

struct Provider {
    config: OidcProvider,
    redirect_uri: String,
    discovered: RwLock<Option<Arc<Discovered>>>,
}

/// A finished external login: who logged in, and where the browser goes next.
pub struct ExternalLogin {
    pub user: User,
    pub provider: String,
    pub return_to: String,
    sealed_tokens: Option<String>,
    refresh_at: i64,
}

pub struct Oidc {
    providers: Vec<Provider>,
    http: openidconnect::reqwest::Client,
    keyring: Keyring,
    post_logout_uri: String,
}

fn failed(reason: impl Into<String>) -> AdminError {
    AdminError::ExternalLogin(reason.into())
}

impl Oidc {
    pub fn new(config: &Config, keyring: Keyring) -> Result<Self> {
        let origin = config.server.public_origin();
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects from a provider's endpoints could be steered to internal
            // addresses (SSRF); the spec never needs them.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| failed(format!("cannot build the HTTP client: {e}")))?;
        let providers = config
            .auth
            .oidc
            .iter()
            .map(|p| Provider {
                redirect_uri: format!("{origin}/auth/oidc/{}/callback", p.id),
                config: p.clone(),
                discovered: RwLock::new(None),
            })
            .collect();
        Ok(Self {
            providers,
            http,
            keyring,
            post_logout_uri: format!("{origin}/"),
        })
    }

    /// `(id, display name)` of each provider, for the login page's buttons.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.config.id.clone(), p.config.display_name.clone()))
            .collect()
    }

    fn provider(&self, id: &str) -> Result<&Provider> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or(AdminError::NotFound("identity provider"))
    }

    /// The provider's client, discovering its endpoints and keys on first use. A failed
    /// discovery is not cached: the next login tries again.
    async fn discovered(&self, provider: &Provider) -> Result<Arc<Discovered>> {
        if let Some(d) = provider.discovered.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut slot = provider.discovered.write().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let p = &provider.config;
        let issuer = IssuerUrl::new(p.issuer_url.clone())
            .map_err(|e| failed(format!("bad issuer URL: {e}")))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %p.id, error = %e, "OpenID Connect discovery failed");
                failed(format!(
                    "the identity provider {} cannot be reached",
                    p.display_name
                ))
            })?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let secret = p.resolve_client_secret().map_err(failed)?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_redirect_uri(
            RedirectUrl::new(provider.redirect_uri.clone())
                .map_err(|e| failed(format!("bad redirect URI: {e}")))?,
        );
        let discovered = Arc::new(Discovered {
            client,
            end_session,
        });
        *slot = Some(discovered.clone());
        Ok(discovered)
    }

    /// Starts a login: the provider URL to send the browser to, and the `Set-Cookie` that holds
    /// the sealed state until it comes back.
    pub async fn begin(
        &self,
        provider_id: &str,
        return_to: &str,
        now: i64,
    ) -> Result<(String, String)> {
        let provider = self.provider(provider_id)?;
        let discovered = self.discovered(provider).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in provider.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = Pending {
            provider: provider_id.to_owned(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            return_to: return_to.to_owned(),
        };
        let sealed = seal::seal(&self.keyring, LOGIN_PURPOSE, &pending, now + LOGIN_TTL_MS)
            .ok_or_else(|| failed("cannot seal the login state"))?;
        let cookie = format!(
            "{LOGIN_COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            LOGIN_TTL_MS / 1000
        );
        Ok((url.to_string(), cookie))
    }

    /// Finishes a login at the callback: checks the state against the sealed cookie, redeems
    /// the code with the PKCE verifier, validates the ID token, then finds or creates the user
    /// and re-applies their groups.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete(
        &self,
        store: &Store,
        provider_id: &str,
        code: &str,
        state: &str,
        issuer: Option<&str>,
        sealed_pending: Option<&str>,
        now: i64,
    ) -> Result<ExternalLogin> {
        let provider = self.provider(provider_id)?;
        // RFC 9207: a provider that names itself in the answer must be the one we asked, so an
        // answer from another provider cannot be passed off as this one's (mix-up attack).
        if issuer.is_some_and(|iss| {
            iss.trim_end_matches('/') != provider.config.issuer_url.trim_end_matches('/')
        }) {
            return Err(failed("the answer comes from another identity provider"));
        }
        let pending: Pending = sealed_pending
            .and_then(|s| seal::open(&self.keyring, LOGIN_PURPOSE, s, now))
            .ok_or_else(|| {
                failed("the sign-in took too long or was started elsewhere; try again")
            })?;
        // Constant-time: the state is the only thing tying this callback to the browser that
        // started the login.
        let state_ok: bool = subtle_eq(pending.state.as_bytes(), state.as_bytes())
            && pending.provider == provider_id;
        if !state_ok {
            return Err(failed("the sign-in state does not match; try again"));
        }
        let discovered = self.discovered(provider).await?;
        let response = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| failed(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider_id, error = %token_error(&e), "code exchange refused");
                failed("the identity provider refused the sign-in")
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| failed("the identity provider sent no ID token"))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let rejected = |e: openidconnect::ClaimsVerificationError| {
            tracing::warn!(provider = %provider_id, error = %e, "ID token rejected");
            failed("the identity provider's answer could not be verified")
        };
        let claims = match id_token.claims(&discovered.client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // Providers rotate their signing keys: on a signature the cached keys cannot check,
            // fetch the provider's keys once more before refusing.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                *provider.discovered.write().await = None;
                let fresh = self.discovered(provider).await?;
                id_token
                    .claims(&fresh.client.id_token_verifier(), &nonce)
                    .map_err(rejected)?
                    .clone()
            }
            Err(e) => return Err(rejected(e)),
        };
        let raw_claims = payload_claims(&id_token.to_string());
        let subject = claims.subject().as_str().to_owned();
        let email = claims
            .email()
            .map(|e| e.as_str().to_owned())
            .filter(|_| claims.email_verified() != Some(false));
        let preferred = claims.preferred_username().map(|u| u.as_str().to_owned());
        let display_name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned());
        let groups = provider
            .config
            .groups_claim
            .as_deref()
            .map(|claim| string_list(raw_claims.get(claim)))
            .unwrap_or_default();

        let user = self
            .find_or_create_user(
                store,
                &provider.config,
                &subject,
                preferred,
                email,
                display_name,
                now,
            )
            .await?;
        if user.disabled {
            return Err(AdminError::InvalidCredentials);
        }
        self.apply_groups(store, &provider.config, &user, &groups)
            .await?;

        let tokens = Tokens {
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            id_token: Some(id_token.to_string()),
        };
        Ok(ExternalLogin {
            user,
            provider: provider_id.to_owned(),
            return_to: pending.return_to,
            sealed_tokens: seal::seal(&self.keyring, TOKENS_PURPOSE, &tokens, i64::MAX),
            refresh_at: now + expires_in_ms(response.expires_in()),
        })
    }

    /// Records the provider tokens on the new session.
    pub async fn attach(
        &self,
        store: &Store,
        session: &Session,
        login: &ExternalLogin,
    ) -> Result<()> {
        let sealed = login.sealed_tokens.clone().unwrap_or_default();
        store
            .set_session_oidc(&session.id, &login.provider, &sealed, login.refresh_at)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn find_or_create_user(
        &self,
        store: &Store,
        provider: &OidcProvider,
        subject: &str,
        preferred: Option<String>,
        email: Option<String>,
        display_name: Option<String>,
        now: i64,
    ) -> Result<User> {
        if let Some(user_id) = store.find_identity(&provider.id, subject).await? {
            store.touch_identity(&provider.id, subject, now).await?;
            return store
                .get_user(user_id)
                .await?
                .ok_or(AdminError::NotFound("user"));
        }
        if !provider.create_users {
            return Err(failed(format!(
                "no account here is linked to your {} identity; ask an administrator",
                provider.display_name
            )));
        }
        let tenant = match &provider.tenant {
            Some(name) => store
                .list_tenants()
                .await?
                .into_iter()
                .find(|t| &t.name == name)
                .ok_or(AdminError::NotFound("tenant"))?,
            None => store
                .default_tenant()
                .await?
                .ok_or(AdminError::NotFound("default tenant"))?,
        };
        let base = username_candidate(preferred.as_deref(), email.as_deref(), subject);
        // An e-mail already used by a local account is not taken over: the new account simply
        // has none, and an administrator can merge by hand.
        let email = match &email {
            Some(e) if store.find_user_by_login(e).await?.is_some() => None,
            other => validate::email(other.as_deref()).ok().flatten(),
        };
        for attempt in 0..20 {
            let username = if attempt == 0 {
                base.clone()
            } else {
                format!("{}-{}", truncate(&base, 60), attempt + 1)
            };
            let new = NewUser {
                tenant_id: tenant.id,
                display_name: display_name.clone().unwrap_or_else(|| username.clone()),
                username,
                email: email.clone(),
                password_hash: None,
                external: true,
                ..NewUser::default()
            };
            match store.create_user(&new, now).await {
                Ok(user) => {
                    store
                        .link_identity(&provider.id, subject, user.id, now)
                        .await?;
                    return Ok(user);
                }
                Err(AdminError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(failed("no free username could be derived for this account"))
    }

    /// Makes the user's groups those the provider says (mapped), plus the default group.
    async fn apply_groups(
        &self,
        store: &Store,
        provider: &OidcProvider,
        user: &User,
        provider_groups: &[String],
    ) -> Result<()> {
        let mut wanted_names: BTreeSet<&str> = provider_groups
            .iter()
            .map(|g| {
                provider
                    .group_mapping
                    .get(g)
                    .map_or(g.as_str(), String::as_str)
            })
            .collect();
        if let Some(default) = &provider.default_group {
            wanted_names.insert(default);
        }
        let mut wanted = BTreeSet::new();
        for name in wanted_names {
            if let Some(group) = store.find_group_by_name(user.tenant_id, name).await? {
                wanted.insert(group.id);
            }
        }
        let current: BTreeSet<i64> = store
            .groups_of_user(user.id)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect();
        for id in wanted.difference(&current) {
            store.add_member(user.id, *id).await?;
        }
        for id in current.difference(&wanted) {
            store.remove_member(user.id, *id).await?;
        }
        Ok(())
    }

    /// Asks the provider whether an OpenID Connect session may go on, when its access token
    /// has expired. False means the provider refused (the caller ends the session); an
    /// unreachable provider is not a refusal.
    pub async fn refresh_if_due(&self, store: &Store, session: &Session, now: i64) -> Result<bool> {
        let (Some(provider_id), Some(refresh_at)) =
            (&session.oidc_provider, session.oidc_refresh_at)
        else {
            return Ok(true);
        };
        if refresh_at > now {
            return Ok(true);
        }
        // Refresh tokens rotate: two requests refreshing at once would present the same token
        // twice, which providers treat as theft and answer by revoking the grant. The first to
        // move the deadline forward does the refresh, in this process or any other.
        if !store
            .claim_session_refresh(&session.id, refresh_at, now + REFRESH_LEASE_MS)
            .await?
        {
            return Ok(true);
        }
        let tokens: Option<Tokens> = session
            .oidc_tokens
            .as_deref()
            .and_then(|t| seal::open(&self.keyring, TOKENS_PURPOSE, t, now));
        let Some(refresh_token) = tokens.as_ref().and_then(|t| t.refresh_token.clone()) else {
            // No refresh token: the session lives to its own deadlines.
            return Ok(true);
        };
        let Ok(provider) = self.provider(provider_id) else {
            return Ok(false);
        };
        let discovered = match self.discovered(provider).await {
            Ok(d) => d,
            Err(_) => return self.retry_later(store, session, now).await,
        };
        let presented = RefreshToken::new(refresh_token.clone());
        let request = match discovered.client.exchange_refresh_token(&presented) {
            Ok(r) => r,
            Err(_) => return Ok(false),
        };
        match request.request_async(&self.http).await {
            Ok(response) => {
                let tokens = Tokens {
                    refresh_token: Some(
                        response
                            .refresh_token()
                            .map_or(refresh_token, |t| t.secret().clone()),
                    ),
                    id_token: response
                        .id_token()
                        .map(|t| t.to_string())
                        .or(tokens.and_then(|t| t.id_token)),
                };
                let sealed = seal::seal(&self.keyring, TOKENS_PURPOSE, &tokens, i64::MAX)
                    .unwrap_or_default();
                store
                    .set_session_oidc(
                        &session.id,
                        provider_id,
                        &sealed,
                        now + expires_in_ms(response.expires_in()),
                    )
                    .await?;
                Ok(true)
            }
            Err(RequestTokenError::ServerResponse(e))
                if *e.error() == CoreErrorResponseType::InvalidGrant =>
            {
                tracing::info!(provider = %provider_id, "the identity provider ended a session");
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(provider = %provider_id, error = %token_error(&e), "session refresh failed; retrying later");
                self.retry_later(store, session, now).await
            }
        }
    }

    async fn retry_later(&self, store: &Store, session: &Session, now: i64) -> Result<bool> {
        let (Some(provider), Some(tokens)) = (&session.oidc_provider, &session.oidc_tokens) else {
            return Ok(true);
        };
        store
            .set_session_oidc(&session.id, provider, tokens, now + RETRY_AFTER_OUTAGE_MS)
            .await?;
        Ok(true)
    }

    /// Where to send the browser to end the provider's session too (RP-initiated logout), for
    /// a session opened through a provider that supports it.
    pub async fn logout_url(&self, session: &Session, now: i64) -> Option<String> {
        let provider = self.provider(session.oidc_provider.as_deref()?).ok()?;
        let discovered = self.discovered(provider).await.ok()?;
        let end_session = discovered.end_session.clone()?;
        let tokens: Option<Tokens> = session
            .oidc_tokens
            .as_deref()
            .and_then(|t| seal::open(&self.keyring, TOKENS_PURPOSE, t, now));
        let mut request = LogoutRequest::from(end_session)
            .set_client_id(ClientId::new(provider.config.client_id.clone()));
        if let Some(id_token) = tokens
            .and_then(|t| t.id_token)
            .and_then(|t| t.parse::<openidconnect::core::CoreIdToken>().ok())
        {
            request = request.set_id_token_hint(&id_token);
        }
        if let Ok(uri) = PostLogoutRedirectUrl::new(self.post_logout_uri.clone()) {
            request = request.set_post_logout_redirect_uri(uri);
        }
        Some(request.http_get_url().to_string())
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn expires_in_ms(expires_in: Option<std::time::Duration>) -> i64 {
    expires_in
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .unwrap_or(DEFAULT_REFRESH_MS)
}

fn token_error<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Every claim of an ID token whose signature has already been verified: the groups claim is
/// provider-specific, so it is read from the payload rather than from typed claims.
fn payload_claims(id_token: &str) -> serde_json::Map<String, serde_json::Value> {
    id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// A claim holding a list of names (or a single name), as providers variously send groups.
fn string_list(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A valid local username from what the provider says: the preferred username, else the
/// e-mail's local part, else the subject; characters we do not allow become `-`.
fn username_candidate(preferred: Option<&str>, email: Option<&str>, subject: &str) -> String {
    let raw = preferred
        .or_else(|| email.and_then(|e| e.split('@').next()))
        .unwrap_or(subject);
    let cleaned: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['.', '_', '-']);
    let cleaned = truncate(cleaned, 64);
    match validate::username(cleaned) {
        Ok(name) => name,
        Err(_) => format!(
            "user-{}",
            truncate(&crate::auth::tokens::digest(subject), 12)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_from_provider_claims() {
        assert_eq!(
            username_candidate(Some("Alice.Smith"), None, "x"),
            "alice.smith"
        );
        assert_eq!(
            username_candidate(None, Some("bob+tag@example.com"), "x"),
            "bob-tag"
        );
        assert_eq!(username_candidate(Some("é"), None, "sub-1").len(), 17);
        assert_eq!(username_candidate(Some("__x__y"), None, "s"), "x__y");
    }

    #[test]
    fn group_claims_in_either_shape() {
        assert_eq!(
            string_list(Some(&serde_json::json!(["a", 1, "b"]))),
            vec!["a", "b"]
        );
        assert_eq!(string_list(Some(&serde_json::json!("solo"))), vec!["solo"]);
        assert!(string_list(None).is_empty());
    }
}

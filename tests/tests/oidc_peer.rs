//! The OpenID Connect test peer on its own, driven by a hand-rolled relying party (reqwest
//! only): this is the contract the gateway's OIDC client can rely on in its end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowcase_e2e::oidc_provider::{
    OidcClient, OidcProvider, OidcUser, ProviderConfig, browser_client, headless_login,
    headless_login_prompts, headless_logout,
};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "flowcase";
const CLIENT_SECRET: &str = "test-secret-7f3a";
const REDIRECT_URI: &str = "https://app.localhost:8443/oidc/callback";
const POST_LOGOUT_URI: &str = "https://app.localhost:8443/";

fn config() -> ProviderConfig {
    ProviderConfig::new()
        .client(
            OidcClient::new(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
                .post_logout_redirect_uri(POST_LOGOUT_URI),
        )
        .user(OidcUser::new(
            "alice",
            "alice@example.test",
            "Alice Liddell",
            &["flowcase-admins", "staff"],
        ))
        .user(OidcUser::new("bob", "bob@example.test", "Bob", &[]).email_verified(false))
        .access_token_ttl(120)
        .id_token_ttl(90)
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the relying party keeps between the authorization request and the callback.
struct Request {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

/// `authorization_endpoint?response_type=code&…` with PKCE S256, state and nonce.
fn authorization_request(discovery: &Value, scope: &str, extra: &[(&str, &str)]) -> Request {
    let (state, nonce, verifier) = (random(), random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra);
    Request {
        url: url.into(),
        state,
        nonce,
        verifier,
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The callback the provider sent the browser to: the redirect URI with code, state and iss.
fn code_from(callback: &Url, request: &Request, issuer: &str) -> String {
    assert!(
        callback.as_str().starts_with(REDIRECT_URI),
        "not the redirect URI: {callback}"
    );
    assert_eq!(param(callback, "error"), None, "{callback}");
    assert_eq!(param(callback, "state").as_deref(), Some(&*request.state));
    assert_eq!(param(callback, "iss").as_deref(), Some(issuer));
    param(callback, "code").unwrap()
}

async fn discovery(provider: &OidcProvider) -> Value {
    reqwest::get(provider.discovery_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST to the token endpoint with client_secret_basic.
async fn token(discovery: &Value, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn exchange(discovery: &Value, code: &str, verifier: &str) -> (StatusCode, Value) {
    token(
        discovery,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(discovery: &Value, refresh_token: &str) -> (StatusCode, Value) {
    token(
        discovery,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Logs alice in through the whole front channel and exchanges the code.
async fn login_and_exchange(
    provider: &OidcProvider,
    discovery: &Value,
    browser: &reqwest::Client,
) -> (Request, Value) {
    let request = authorization_request(discovery, "openid email profile groups", &[]);
    let (callback, prompts) = headless_login_prompts(browser, &request.url, "alice").await;
    assert_eq!(prompts, ["login"], "no consent step");
    let code = code_from(&callback, &request, &provider.issuer);
    let (status, tokens) = exchange(discovery, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}\n{}", provider.stderr());
    (request, tokens)
}

#[tokio::test]
async fn discovery_describes_a_code_flow_provider_with_pkce_and_logout() {
    let provider = OidcProvider::start(&config()).await;
    assert!(provider.issuer.starts_with("http://127.0.0.1:"));
    let d = discovery(&provider).await;
    assert_eq!(d["issuer"], provider.issuer.as_str());
    for (key, url) in [
        ("authorization_endpoint", provider.authorization_endpoint()),
        ("token_endpoint", provider.token_endpoint()),
        ("userinfo_endpoint", provider.userinfo_endpoint()),
        ("jwks_uri", provider.jwks_uri()),
        ("end_session_endpoint", provider.end_session_endpoint()),
        ("revocation_endpoint", provider.revocation_endpoint()),
        ("introspection_endpoint", provider.introspection_endpoint()),
    ] {
        assert_eq!(d[key], url.as_str(), "{key}");
    }
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    for scope in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(
            d["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&scope.into()),
            "{scope}"
        );
    }
    let jwks: Value = reqwest::get(provider.jwks_uri())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    assert!(jwks["keys"][0].get("d").is_none(), "private key published");
}

#[tokio::test]
async fn code_flow_with_pkce_gives_id_token_claims_and_rotating_refresh_tokens() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let browser = browser_client();
    let (request, tokens) = login_and_exchange(&provider, &d, &browser).await;

    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 120, "AccessToken TTL from the config");
    assert_eq!(tokens["scope"], "openid email profile groups");
    let access_token = tokens["access_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .expect("a refresh token without offline_access");
    let id_token = tokens["id_token"].as_str().unwrap();

    let header = jwt_part(id_token, 0);
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = reqwest::get(d["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], request.nonce.as_str());
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["flowcase-admins", "staff"])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        90,
        "IdToken TTL from the config"
    );

    // The access token works at userinfo.
    let userinfo: Value = reqwest::Client::new()
        .get(d["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], "alice");
    assert_eq!(userinfo["groups"], claims["groups"]);

    // Refresh: new tokens, and a new refresh token (rotation).
    let (status, refreshed) = refresh(&d, refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}\n{}", provider.stderr());
    let new_refresh = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh_token);
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    let new_claims = jwt_part(refreshed["id_token"].as_str().unwrap(), 1);
    assert_eq!(new_claims["sub"], "alice");
    assert_eq!(new_claims["groups"], claims["groups"]);

    // A rotated refresh token used again is refused, and that revokes the whole grant.
    let (status, err) = refresh(&d, refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
    let (status, err) = refresh(&d, new_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    // The provider session stays: a second authorization needs no login form.
    let request = authorization_request(&d, "openid email", &[]);
    let (callback, prompts) = headless_login_prompts(&browser, &request.url, "nobody").await;
    assert!(prompts.is_empty(), "{prompts:?}");
    let code = code_from(&callback, &request, &provider.issuer);
    let (status, tokens) = exchange(&d, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    assert!(claims.get("groups").is_none(), "groups scope not requested");
}

#[tokio::test]
async fn an_authorization_code_works_once_and_only_with_its_verifier() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let browser = browser_client();

    // Wrong code_verifier: refused (and the code is then spent).
    let request = authorization_request(&d, "openid", &[]);
    let code = code_from(
        &headless_login(&browser, &request.url, "alice").await,
        &request,
        &provider.issuer,
    );
    let (status, err) = exchange(&d, &code, &random()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    // No code_verifier at all: refused.
    let request = authorization_request(&d, "openid", &[]);
    let code = code_from(
        &headless_login(&browser, &request.url, "alice").await,
        &request,
        &provider.issuer,
    );
    let (status, err) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    // The right verifier works once; the same code again is refused.
    let request = authorization_request(&d, "openid", &[]);
    let code = code_from(
        &headless_login(&browser, &request.url, "alice").await,
        &request,
        &provider.issuer,
    );
    let (status, tokens) = exchange(&d, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, err) = exchange(&d, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn an_authorization_request_without_pkce_is_refused() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let mut url = Url::parse(d["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid")
        .append_pair("state", "s1");
    let callback = headless_login(&browser_client(), url.as_str(), "alice").await;
    assert!(callback.as_str().starts_with(REDIRECT_URI), "{callback}");
    assert_eq!(
        param(&callback, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(param(&callback, "state").as_deref(), Some("s1"));
    assert_eq!(param(&callback, "code"), None);
}

#[tokio::test]
async fn logout_at_the_provider_redirects_back_and_revokes_the_refresh_token() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let browser = browser_client();
    let (_, tokens) = login_and_exchange(&provider, &d, &browser).await;

    let mut url = Url::parse(d["end_session_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", tokens["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI)
        .append_pair("state", "bye-1");
    let back = headless_logout(&browser, url.as_str()).await;
    assert_eq!(back.as_str(), format!("{POST_LOGOUT_URI}?state=bye-1"));

    // The grant is gone with the session.
    let (status, err) = refresh(&d, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    // The next authorization shows the login form again (and bob can sign in).
    let request = authorization_request(&d, "openid email groups", &[]);
    let (callback, prompts) = headless_login_prompts(&browser, &request.url, "bob").await;
    assert_eq!(prompts, ["login"]);
    let code = code_from(&callback, &request, &provider.issuer);
    let (status, tokens) = exchange(&d, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["groups"], serde_json::json!([]));

    // An unregistered post_logout_redirect_uri is refused with an error page.
    let mut url = Url::parse(d["end_session_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("post_logout_redirect_uri", "https://evil.example/");
    let resp = browser.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("post_logout_redirect_uri not registered")
    );
}

#[tokio::test]
async fn prompt_consent_with_offline_access_goes_through_the_consent_form() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let browser = browser_client();
    let request =
        authorization_request(&d, "openid email offline_access", &[("prompt", "consent")]);
    let callback = headless_login(&browser, &request.url, "alice").await;
    let code = code_from(&callback, &request, &provider.issuer);
    let (status, tokens) = exchange(&d, &code, &request.verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "openid email offline_access");
    // offline_access outlives the provider session: still refreshable after a logout.
    let mut url = Url::parse(d["end_session_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut().append_pair("client_id", CLIENT_ID);
    let back = headless_logout(&browser, url.as_str()).await;
    assert_eq!(back.path(), "/session/end/success");
    let (status, refreshed) = refresh(&d, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
}

#[tokio::test]
async fn client_secret_basic_and_client_secret_post_are_both_accepted() {
    let provider = OidcProvider::start(&config()).await;
    let d = discovery(&provider).await;
    let token_endpoint = d["token_endpoint"].as_str().unwrap();
    let client = reqwest::Client::new();
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "unknown"),
    ];
    // Authenticated either way: what is wrong is the refresh token (invalid_grant, 400).
    let basic = client
        .post(token_endpoint)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&grant)
        .send()
        .await
        .unwrap();
    let post = client
        .post(token_endpoint)
        .form(&[
            grant[0],
            grant[1],
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    for resp in [basic, post] {
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
    }
    // A wrong secret is invalid_client (401), posted or in the header.
    let basic = client
        .post(token_endpoint)
        .basic_auth(CLIENT_ID, Some("not-the-secret"))
        .form(&grant)
        .send()
        .await
        .unwrap();
    let post = client
        .post(token_endpoint)
        .form(&[
            grant[0],
            grant[1],
            ("client_id", CLIENT_ID),
            ("client_secret", "not-the-secret"),
        ])
        .send()
        .await
        .unwrap();
    for resp in [basic, post] {
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_client"
        );
    }
}

#[tokio::test]
async fn tokens_expire_after_the_configured_ttls() {
    let provider = OidcProvider::start(&config().access_token_ttl(1).refresh_token_ttl(2)).await;
    let d = discovery(&provider).await;
    let (_, tokens) = login_and_exchange(&provider, &d, &browser_client()).await;
    assert_eq!(tokens["expires_in"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let resp = reqwest::Client::new()
        .get(d["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, err) = refresh(&d, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn stops_cleanly_on_sigterm() {
    let mut provider = OidcProvider::start(&config()).await;
    let status = provider.stop();
    assert!(status.success(), "{status}\n{}", provider.stderr());
    assert!(reqwest::get(provider.discovery_url()).await.is_err());
}

//! Server-rendered pages (askama templates under `admin/templates/`). Forms post to the same
//! services as the JSON API; only the way results are shown differs.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::api::session::set_cookie;
use super::extract::{PageUser, RequestAuth};
use super::layout::Layout;
use crate::accounts::registration::{self, RegistrationForm};
use crate::auth::{return_path, session};
use crate::error::AdminError;
use crate::store::{DropletType, now_millis};
use flowcase_config::Registration;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    version: &'a str,
    providers: Vec<(String, String)>,
    can_register: bool,
    error: Option<String>,
    return_to: String,
    username: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    code: u16,
    title: &'a str,
    message: &'a str,
}

pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    render(
        status,
        &ErrorPage {
            layout: Layout::anonymous(),
            code: status.as_u16(),
            title,
            message,
        },
    )
}

pub fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is nothing at this address.")
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(rename = "return")]
    return_to: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    auth: RequestAuth,
    Query(q): Query<LoginQuery>,
) -> Response {
    let return_to = return_path::safe_return_path(q.return_to.as_deref());
    if auth.principal.is_some() {
        return Redirect::to(&return_to).into_response();
    }
    login_page(&state, StatusCode::OK, None, return_to, String::new())
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
    return_to: String,
    username: String,
) -> Response {
    render(
        status,
        &LoginPage {
            layout: Layout::anonymous(),
            version: env!("CARGO_PKG_VERSION"),
            can_register: state.config.auth.registration != Registration::Closed,
            providers: state.auth.oidc().buttons(),
            error,
            return_to,
            username,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    remember: Option<String>,
    #[serde(rename = "return", default)]
    return_to: Option<String>,
}

pub async fn login_submit(
    State(state): State<AppState>,
    auth: RequestAuth,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = now_millis();
    let return_to = return_path::safe_return_path(form.return_to.as_deref());
    let remember = form.remember.is_some();
    match state
        .auth
        .login(&form.username, &form.password, remember, &auth.client, now)
        .await
    {
        Ok((secret, _, session)) => {
            let mut response = Redirect::to(&return_to).into_response();
            set_cookie(
                response.headers_mut(),
                &session::set_cookie(&secret, &session, now),
            );
            response
        }
        Err(AdminError::Throttled { retry_after_secs }) => {
            let mut response = login_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "Too many failed attempts. Try again in {retry_after_secs} seconds."
                )),
                return_to,
                form.username,
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
            response
        }
        Err(AdminError::InvalidCredentials) => login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong username or password.".into()),
            return_to,
            form.username,
        ),
        Err(e) => error_page(
            super::error::classify(&e).0,
            &super::error::public_message(&e),
        ),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
) -> Response {
    let next = match state.auth.logout(&principal, &client, now_millis()).await {
        Ok(provider_logout) => provider_logout.unwrap_or_else(|| "/".to_owned()),
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    let mut response = Redirect::to(&next).into_response();
    set_cookie(response.headers_mut(), &session::clear_cookie());
    response
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    layout: Layout,
    with_invite: bool,
    error: Option<String>,
    username: String,
    email: String,
    invite_code: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct RegisterQuery {
    invite: Option<String>,
}

pub async fn register(State(state): State<AppState>, Query(q): Query<RegisterQuery>) -> Response {
    let mode = state.config.auth.registration;
    if mode == Registration::Closed {
        return error_page(
            StatusCode::NOT_FOUND,
            "Registration is closed on this gateway.",
        );
    }
    render(
        StatusCode::OK,
        &RegisterPage {
            layout: Layout::anonymous(),
            with_invite: mode == Registration::Invite,
            error: None,
            username: String::new(),
            email: String::new(),
            invite_code: q.invite.unwrap_or_default(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    username: String,
    #[serde(default)]
    email: String,
    password: String,
    password_confirm: String,
    #[serde(default)]
    invite_code: String,
}

pub async fn register_submit(
    State(state): State<AppState>,
    auth: RequestAuth,
    Form(form): Form<RegisterForm>,
) -> Response {
    let mode = state.config.auth.registration;
    if mode == Registration::Closed {
        return error_page(
            StatusCode::NOT_FOUND,
            "Registration is closed on this gateway.",
        );
    }
    let now = now_millis();
    let again = |status: StatusCode, message: String| {
        render(
            status,
            &RegisterPage {
                layout: Layout::anonymous(),
                with_invite: mode == Registration::Invite,
                error: Some(message),
                username: form.username.clone(),
                email: form.email.clone(),
                invite_code: form.invite_code.clone(),
            },
        )
    };
    if form.password != form.password_confirm {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords differ.".into(),
        );
    }
    let input = RegistrationForm {
        username: form.username.clone(),
        email: Some(form.email.clone()),
        password: form.password.clone(),
        invite_code: Some(form.invite_code.clone()),
    };
    let user = match registration::register(&state.store, mode, &input, now).await {
        Ok(user) => user,
        Err(e @ AdminError::InvalidInput { .. }) => {
            return again(
                StatusCode::UNPROCESSABLE_ENTITY,
                super::error::public_message(&e),
            );
        }
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    state
        .auth
        .audit(
            Some(&user),
            "user.register",
            &auth.client,
            serde_json::json!({"mode": format!("{mode:?}").to_lowercase()}),
            now,
        )
        .await;
    // Straight in: the new user just proved the password.
    match state
        .auth
        .login(&user.username, &form.password, false, &auth.client, now)
        .await
    {
        Ok((secret, _, session)) => {
            let mut response = Redirect::to(return_path::DEFAULT).into_response();
            set_cookie(
                response.headers_mut(),
                &session::set_cookie(&secret, &session, now),
            );
            response
        }
        Err(_) => Redirect::to("/").into_response(),
    }
}

/// The desktop viewer. Everything its script needs comes in `data-` attributes of `<body>`:
/// the page carries no inline script or style, which the Content Security Policy forbids.
#[derive(Template)]
#[template(path = "viewer.html")]
struct ViewerPage<'a> {
    instance_id: i64,
    droplet_name: &'a str,
    csrf_token: String,
    csrf_header: &'static str,
    can_copy: bool,
    can_paste: bool,
    /// A read-only watch of the running connection (`?watch=1`): the token asks for one, and
    /// the page sends no input and offers none of the controls.
    watch: bool,
    login_url: String,
    script_url: String,
    style_url: String,
}

/// `GET /droplet/{id}`: the viewer of desktop instance `id` (the instance's primary key, as
/// the original app's route), for its owner or an administrator of the owner's tenant. A web
/// app instance has no viewer: its own host is where it opens. `?watch=1` opens a read-only
/// watch of the connection someone already has (the admin instances page links to it).
pub async fn viewer(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    // `?watch=1`; anything else in the query (a malformed one included) is ignored.
    let watch = serde_urlencoded::from_str::<Vec<(String, String)>>(query.as_deref().unwrap_or(""))
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| k == "watch" && (v == "1" || v == "true"));
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let access = crate::access::Access::new(&state.auth, &principal, &client);
    let found = match access.usable_instance_by_id(id).await {
        Ok(instance) => state
            .store
            .get_droplet(instance.droplet_id)
            .await
            .map(|droplet| droplet.map(|d| (instance, d))),
        Err(e) => Err(e),
    };
    let (instance, droplet) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    if droplet.droplet_type == DropletType::Http {
        let server = &state.config.server;
        let host = format!("{}.{}", instance.slug, server.apps_domain.as_str());
        let origin = flowcase_config::origin(&host, server.effective_https_port());
        return Redirect::to(&format!("{origin}/")).into_response();
    }
    // The restrictions the tunnel hands guacd (which enforces them): the page only hides what
    // would not work anyway.
    let clipboard = match state.store.user_clipboard(principal.user.id).await {
        Ok(clipboard) => clipboard,
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    let back = if watch {
        format!("/droplet/{}?watch=1", instance.id)
    } else {
        format!("/droplet/{}", instance.id)
    };
    let login_url = format!(
        "/?{}",
        serde_urlencoded::to_string([("return", back.as_str())]).unwrap_or_default()
    );
    render(
        StatusCode::OK,
        &ViewerPage {
            instance_id: instance.id,
            droplet_name: &droplet.name,
            csrf_token: state.auth.csrf_token(&principal).unwrap_or_default(),
            csrf_header: crate::auth::csrf::HEADER,
            can_copy: !clipboard.disable_copy && !watch,
            can_paste: !clipboard.disable_paste && !watch,
            watch,
            login_url,
            script_url: super::assets::url("js/viewer.js"),
            style_url: super::assets::url("css/viewer.css"),
        },
    )
}

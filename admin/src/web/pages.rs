//! Server-rendered pages (askama templates under `admin/templates/`).

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    version: &'a str,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage;

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}

pub async fn login() -> Response {
    render(
        StatusCode::OK,
        &LoginPage {
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

pub fn not_found() -> Response {
    render(StatusCode::NOT_FOUND, &NotFoundPage)
}

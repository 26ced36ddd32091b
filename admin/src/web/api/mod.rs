//! The JSON API under `/api/v1/`. Handlers extract, call the service, and map errors through
//! [`super::error::ApiError`].

pub mod account;
pub mod session;

//! Flowcase Gateway control plane.
//!
//! - [`store`]: the only data-access layer (SQLite or PostgreSQL through sqlx's `Any` driver,
//!   migrations applied at connect time);
//! - [`accounts`]: password hashing and first-start administrator provisioning;
//! - [`auth`]: sessions, logins, API keys, CSRF and origin checks;
//! - [`access`]: the one authorization layer of the admin API (permission flags, tenant scope);
//! - [`secrets`]: the key file that seals tokens and stored credentials;
//! - [`orchestrator`]: droplets become instances, instances become containers (life cycle,
//!   quotas, readiness, the engine interface and its Docker implementation);
//! - [`web`]: the pages and JSON API, served behind the gateway's front door;
//! - [`metrics`]: the control plane's Prometheus metrics;
//! - [`system`]: the system report (versions, database, engine, host, certificates);
//! - [`error`]: the crate's error type.

pub mod access;
pub mod accounts;
pub mod auth;
pub mod error;
pub mod metrics;
pub mod orchestrator;
pub mod secrets;
pub mod store;
pub mod system;
pub mod web;

pub use error::AdminError;
pub use store::{Store, now_millis};

//! The JSON API under `/api/` (the versioned `/api/v1/` and the seed's old paths). Handlers
//! extract, call the service, and map errors through [`super::error::ApiError`]; each family
//! keeps its handlers in its own module.
//!
//! Every endpoint is listed once, in the table of [`api_table!`] below: it builds both the
//! router and [`ENDPOINTS`], the list of (method, path) that the OpenAPI document
//! (`openapi.json`, served by [`openapi`]) is tested against. axum cannot list a router's
//! routes, so a route added anywhere else would escape that check: add new endpoints here.

pub mod account;
pub mod audit;
pub mod droplets;
pub mod groups;
pub mod idempotency;
pub mod input;
pub mod instances;
pub mod legacy;
pub mod openapi;
pub mod session;
pub mod system;
pub mod tenants;
pub mod tunnel;
pub mod users;
pub mod workshops;

use axum::Router;

use super::AppState;

/// The HTTP method names of the table, as `ENDPOINTS` spells them. Only these methods are
/// accepted, so a typo fails to compile instead of silently routing nothing.
macro_rules! verb {
    (get) => {
        "GET"
    };
    (post) => {
        "POST"
    };
    (put) => {
        "PUT"
    };
    (patch) => {
        "PATCH"
    };
    (delete) => {
        "DELETE"
    };
}

/// `"path" => method(handler).method(handler)…;` lines become `routes()` and `ENDPOINTS`.
macro_rules! api_table {
    ($( $path:literal => $first:ident($handler:path) $(. $method:ident($more:path))* ; )+) => {
        /// Every API endpoint as (method, path), in the order of the table; the router is built
        /// from the same lines, so the two cannot differ.
        pub const ENDPOINTS: &[(&str, &str)] = &[
            $( (verb!($first), $path), $( (verb!($method), $path), )* )+
        ];

        pub fn routes() -> Router<AppState> {
            Router::new()
                $( .route($path, axum::routing::$first($handler) $(.$method($more))*) )+
        }
    };
}

api_table! {
    // --- the document itself (public) ---
    "/api/v1/openapi.json" => get(openapi::document);

    // --- session and the signed-in user's account ---
    "/api/v1/session" => post(session::create).get(session::show).delete(session::delete);
    "/api/v1/account/password" => post(account::change_password);
    "/api/v1/account/api-keys" => get(account::list_keys).post(account::create_key);
    "/api/v1/account/api-keys/{id}" => delete(account::revoke_key);

    // --- users ---
    "/api/v1/users" => get(users::list).post(users::create);
    "/api/v1/users/{id}" => get(users::show).patch(users::update).delete(users::delete);
    "/api/v1/users/{id}/password" => post(users::reset_password);
    "/api/v1/users/{id}/groups" => put(users::set_groups);
    "/api/v1/users/{id}/api-keys" => get(users::list_api_keys);
    "/api/v1/users/{id}/api-keys/{key_id}" => delete(users::revoke_api_key);

    // --- groups ---
    "/api/v1/groups" => get(groups::list).post(groups::create);
    "/api/v1/groups/{id}" => get(groups::show).patch(groups::update).delete(groups::delete);
    "/api/v1/groups/{id}/clipboard" => get(groups::clipboard).put(groups::set_clipboard);

    // --- tenants ---
    "/api/v1/tenants" => get(tenants::list).post(tenants::create);

    // --- droplets ---
    "/api/v1/droplets" => get(droplets::list).post(droplets::create);
    "/api/v1/droplets/pull-all" => post(droplets::pull_all);
    "/api/v1/droplets/import" => post(droplets::import);
    "/api/v1/droplets/{id}" => get(droplets::show).patch(droplets::update).delete(droplets::delete);
    "/api/v1/droplets/{id}/groups" => put(droplets::set_groups);
    "/api/v1/droplets/{id}/pull" => post(droplets::pull);

    // --- instances, usage figures and the event stream ---
    "/api/v1/instances" => get(instances::list).post(instances::launch);
    "/api/v1/instances/{id}" => get(instances::show).delete(instances::delete);
    "/api/v1/instances/{id}/start" => post(instances::start);
    "/api/v1/instances/{id}/stop" => post(instances::stop);
    "/api/v1/instances/{id}/tunnel-token" => post(tunnel::mint);
    "/api/v1/stats" => get(instances::stats);
    "/api/v1/events" => get(instances::events);

    // --- workshops ---
    "/api/v1/workshops" => get(workshops::list).post(workshops::create);
    "/api/v1/workshops/mine" => get(workshops::mine);
    "/api/v1/workshops/{id}" => get(workshops::show).patch(workshops::update).delete(workshops::delete);
    "/api/v1/workshops/{id}/participants" => put(workshops::set_participants);
    "/api/v1/workshops/{id}/droplets" => put(workshops::set_droplets);
    "/api/v1/workshops/{id}/start" => post(workshops::start);
    "/api/v1/workshops/{id}/stop" => post(workshops::stop);

    // --- audit log and system report ---
    "/api/v1/audit" => get(audit::list);
    "/api/v1/audit/prune" => post(audit::prune);
    "/api/v1/system" => get(system::show);

    // --- the seed's (Python Flowcase's) paths, kept for old clients ---
    "/api/droplets" => get(legacy::droplets);
    "/api/droplets/stats" => get(legacy::droplet_stats);
    "/api/instance/request" => post(legacy::request);
    "/api/instances" => get(legacy::instances);
    "/api/instances/{id}/start" => post(legacy::start);
    "/api/instances/{id}/stop" => post(legacy::stop);
    "/api/instance/{id}/destroy" => get(legacy::destroy);
}

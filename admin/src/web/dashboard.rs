//! `/dashboard`: the signed-in user's start page. The first paint is rendered here from the
//! store (the droplets granted to the user, their instances); `assets/js/dashboard.js` then keeps
//! it live against the JSON API (launch, start, stop, delete, server-sent events with polling as
//! the fallback). The state → badge and state → actions mappings below have a twin in
//! `assets/js/dashboard-logic.js`; both must say the same.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use std::collections::HashMap;

use super::AppState;
use super::extract::PageUser;
use super::layout::{Layout, Section};
use super::pages::{error_page, render};
use crate::access::icon_src;
use crate::store::{Droplet, DropletType, Instance, InstanceStatus};

/// How a state is shown, and what can be done from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateView {
    pub label: &'static str,
    /// `ok`, `warn`, `bad` or `neutral` (the badge's colour).
    pub tone: &'static str,
    /// On its way somewhere (the badge pulses).
    pub busy: bool,
    pub open: bool,
    pub start: bool,
    pub stop: bool,
    pub delete: bool,
}

pub fn state_view(status: InstanceStatus) -> StateView {
    let view = |label, tone, busy, [open, start, stop, delete]: [bool; 4]| StateView {
        label,
        tone,
        busy,
        open,
        start,
        stop,
        delete,
    };
    use InstanceStatus as S;
    match status {
        S::Requested => view("Queued", "warn", true, [false, false, false, true]),
        S::Creating => view("Creating", "warn", true, [false, false, false, true]),
        S::Starting => view("Starting", "warn", true, [false, false, false, true]),
        S::Running => view("Running", "ok", false, [true, false, true, true]),
        S::Stopping => view("Stopping", "warn", true, [false, false, false, false]),
        S::Stopped => view("Stopped", "neutral", false, [false, true, false, true]),
        S::Destroying => view("Deleting", "warn", true, [false, false, false, false]),
        S::Gone => view("Removed", "neutral", false, [false, false, false, false]),
        S::Error => view("Error", "bad", false, [false, true, false, true]),
    }
}

pub fn type_label(t: DropletType) -> &'static str {
    match t {
        DropletType::Http => "Web app",
        DropletType::Vnc => "Desktop (VNC)",
        DropletType::Rdp => "Desktop (RDP)",
        DropletType::Ssh => "Terminal (SSH)",
    }
}

fn initial(name: &str) -> String {
    name.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".into())
}

/// Where an instance opens: its own host for a web app, the viewer for a desktop.
pub fn open_url(state: &AppState, instance: &Instance, t: DropletType) -> String {
    if t == DropletType::Http {
        let server = &state.config.server;
        let host = format!("{}.{}", instance.slug, server.apps_domain.as_str());
        format!(
            "{}/",
            flowcase_config::origin(&host, server.effective_https_port())
        )
    } else {
        format!("/droplet/{}", instance.id)
    }
}

struct DropletCard {
    id: i64,
    name: String,
    description: String,
    droplet_type: &'static str,
    type_label: &'static str,
    icon: Option<String>,
    initial: String,
    /// Lower-cased name, description and type, for the search box.
    search: String,
}

struct InstanceRow {
    id: i64,
    status: &'static str,
    droplet_name: String,
    droplet_type: &'static str,
    initial: String,
    meta: String,
    label: &'static str,
    tone: &'static str,
    busy: bool,
    can_open: bool,
    can_start: bool,
    can_stop: bool,
    can_delete: bool,
    open_url: String,
    /// Opens on another host (a web app's own): in a new tab.
    external: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    display_name: String,
    user_id: i64,
    running: usize,
    show_host: bool,
    droplets: Vec<DropletCard>,
    instances: Vec<InstanceRow>,
}

/// `icons`: the stored icons' tags (droplet id → source URL, ETag), see
/// [`crate::access::icon_src`].
fn card(d: &Droplet, icons: &HashMap<i64, (String, String)>) -> DropletCard {
    DropletCard {
        id: d.id,
        name: d.name.clone(),
        description: d.description.clone(),
        droplet_type: d.droplet_type.as_str(),
        type_label: type_label(d.droplet_type),
        icon: icon_src(d.id, d.icon.as_deref(), icons),
        initial: initial(&d.name),
        search: format!(
            "{} {} {}",
            d.name.to_lowercase(),
            d.description.to_lowercase(),
            type_label(d.droplet_type).to_lowercase()
        ),
    }
}

pub async fn dashboard(
    State(state): State<AppState>,
    PageUser(principal, _): PageUser,
) -> Response {
    let store = &state.store;
    let loaded = async {
        let droplets = store.list_droplets_for_user(principal.user.id).await?;
        let instances = store.list_instances_for_user(principal.user.id).await?;
        let mut rows = Vec::new();
        for instance in instances
            .iter()
            .filter(|i| i.status != InstanceStatus::Gone)
        {
            // Usually in the catalogue; a droplet since withdrawn from the user is looked up.
            let droplet = match droplets.iter().find(|d| d.id == instance.droplet_id) {
                Some(d) => Some(d.clone()),
                None => store.get_droplet(instance.droplet_id).await?,
            };
            let (name, t) = droplet
                .map(|d| (d.name, d.droplet_type))
                .unwrap_or_else(|| ("(removed droplet)".into(), DropletType::Http));
            let view = state_view(instance.status);
            let mut meta = format!("{} · {}", type_label(t), instance.slug);
            if instance.status == InstanceStatus::Error
                && let Some(reason) = &instance.error_reason
            {
                meta = format!("{meta} · {reason}");
            }
            rows.push(InstanceRow {
                id: instance.id,
                status: instance.status.as_str(),
                initial: initial(&name),
                droplet_name: name,
                droplet_type: t.as_str(),
                meta,
                label: view.label,
                tone: view.tone,
                busy: view.busy,
                can_open: view.open,
                can_start: view.start,
                can_stop: view.stop,
                can_delete: view.delete,
                open_url: open_url(&state, instance, t),
                external: t == DropletType::Http,
            });
        }
        let icons = store.droplet_icon_tags().await?;
        Ok::<_, crate::error::AdminError>((droplets, rows, icons))
    };
    let (droplets, instances, icons) = match loaded.await {
        Ok(found) => found,
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    let running = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running.as_str())
        .count();
    render(
        StatusCode::OK,
        &DashboardPage {
            layout: Layout::user(&state.auth, &principal, Section::Dashboard)
                .with_script("js/dashboard.js"),
            display_name: principal.user.display_name.clone(),
            user_id: principal.user.id,
            running,
            show_host: principal.permissions.admin_panel,
            droplets: droplets.iter().map(|d| card(d, &icons)).collect(),
            instances,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_instances_open_and_busy_ones_offer_nothing_but_delete() {
        for status in InstanceStatus::ALL {
            let v = state_view(*status);
            assert_eq!(v.open, *status == InstanceStatus::Running, "{status}");
            if v.busy {
                assert!(!v.start && !v.stop, "{status} is on its way: no start/stop");
            }
        }
        assert!(state_view(InstanceStatus::Stopped).start);
        assert!(state_view(InstanceStatus::Running).stop);
        assert_eq!(state_view(InstanceStatus::Error).tone, "bad");
    }

    #[test]
    fn icons_from_other_sites_are_shown_only_from_this_one() {
        let stored =
            HashMap::from([(7, ("https://cdn.example/a.png".to_owned(), "e1".to_owned()))]);
        assert_eq!(
            icon_src(7, Some("https://cdn.example/a.png"), &stored).as_deref(),
            Some("/droplets/7/icon?v=e1")
        );
        // Not fetched (yet), or fetched from a URL the droplet no longer names: the initial.
        assert_eq!(
            icon_src(8, Some("https://cdn.example/a.png"), &stored),
            None
        );
        assert_eq!(
            icon_src(7, Some("https://cdn.example/b.png"), &stored),
            None
        );
        assert_eq!(
            icon_src(8, Some("/assets/icons/a.svg"), &stored).as_deref(),
            Some("/assets/icons/a.svg")
        );
        for bad in [
            "//evil.example/a.png",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "/assets/../x",
        ] {
            assert_eq!(icon_src(7, Some(bad), &stored), None, "{bad}");
        }
        assert_eq!(icon_src(7, None, &stored), None);
    }
}

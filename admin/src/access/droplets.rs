//! Droplets: who sees and changes which droplet, and the checks of every field.
//!
//! - A user sees the **catalogue**: active droplets granted to one of their groups. Anything
//!   else is `NotFound`, exactly like a missing droplet.
//! - `view_droplets` (or `edit_droplets`) sees every droplet of the own tenant, active or not,
//!   with the administrative fields; `view_tenants` widens that to every tenant.
//! - `edit_droplets` creates, changes, deletes droplets, sets their groups and pulls their
//!   images, in the own tenant (`edit_tenants`: in any).
//! - `edit_registry` imports droplets from a catalogue URL.
//!
//! Fields are checked by the one parser of droplet definitions
//! ([`crate::orchestrator::catalogue::parse_entry`], also behind `flowcase droplet add` and
//! `import`): a request is turned into a catalogue entry, and an edit is applied to the entry
//! of the droplet as it is and checked whole again, so the API, the command line and imports
//! accept and refuse the same things. Problems are `invalid_input` naming the API's field.
//!
//! Secrets (registry password, external host password or key) are write-only: sealed with the
//! key file before they are stored, never answered, never audited (only whether they are set).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{Access, Page, PageRequest};
use crate::error::{AdminError, Result};
use crate::orchestrator::catalogue::{self, Definition, FieldError};
use crate::orchestrator::desktop_target::{ExternalCredentials, store_external_credentials};
use crate::orchestrator::icons;
use crate::orchestrator::images::{RegistryCredentials, seal_registry_credentials};
use crate::orchestrator::remote_catalogue::{self, ImportReport};
use crate::orchestrator::{Actor, Orchestrator, PullEvent};
use crate::store::droplets::{GuacdMode, IdleAction};
use crate::store::{Droplet, DropletType, TargetKind};

/// Groups one droplet may be granted to in one request.
const MAX_GROUPS_PER_DROPLET: usize = 100;
/// Longest registry or external account name.
const ACCOUNT_MAX: usize = 256;
/// Longest password, key or passphrase accepted.
const SECRET_MAX: usize = 16 * 1024;

/// The droplet as the API shows it. The administrative part is there only for holders of
/// `view_droplets` (or `edit_droplets`); no secret is ever in it.
#[derive(Debug, Clone, Serialize)]
pub struct DropletView {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub description: String,
    pub droplet_type: DropletType,
    pub target: TargetKind,
    pub image: Option<String>,
    /// An `https://` URL or an `/assets/...` path.
    pub icon_url: Option<String>,
    pub cpu_cores: Option<f64>,
    pub memory_mb: Option<i64>,
    pub active: bool,
    pub ports: Vec<u16>,
    pub idle_timeout_secs: Option<i64>,
    pub max_lifetime_secs: Option<i64>,
    pub pool_size: i64,
    /// Every granted group for administrators; for others, their own groups among them.
    pub group_ids: Vec<i64>,
    /// Administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_registry_credentials: Option<bool>,
    pub external_host: Option<String>,
    pub external_port: Option<u16>,
    /// Where pages load the icon from: this gateway's `/droplets/{id}/icon?v=<etag>` for an
    /// icon fetched from another site, the `/assets/...` path itself, or `None` (the page
    /// shows the name's initial).
    pub icon_src: Option<String>,
    /// On the answer to a create or update that named an icon of another site: whether the
    /// gateway could fetch it, and why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_fetch: Option<IconFetch>,
    #[serde(flatten)]
    pub admin: Option<DropletAdminView>,
}

/// Icons fetched at the same time by a catalogue import.
const ICON_FETCHES_AT_ONCE: usize = 4;

/// The outcome of fetching a droplet's icon when it was saved. A failure never fails the save.
#[derive(Debug, Clone, Serialize)]
pub struct IconFetch {
    pub fetched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a page shows droplet `id`'s icon `icon` from, given the stored icons' tags (droplet
/// id → (source URL, ETag)): only what the page's policy (`img-src 'self' data:`) admits.
pub fn icon_src(
    id: i64,
    icon: Option<&str>,
    stored: &std::collections::HashMap<i64, (String, String)>,
) -> Option<String> {
    let icon = icon?.trim();
    if icons::is_remote(icon) {
        let (source, etag) = stored.get(&id)?;
        return (source == icon).then(|| format!("/droplets/{id}/icon?v={etag}"));
    }
    (icon.starts_with("/assets/") && !icon.contains("..")).then(|| icon.to_owned())
}

/// What only droplet administrators see.
#[derive(Debug, Clone, Serialize)]
pub struct DropletAdminView {
    pub registry: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub profile_mount: Option<String>,
    pub profile_path: Option<String>,
    pub cap_add: Vec<String>,
    pub read_only_root: bool,
    pub pids_limit: Option<i64>,
    pub health_path: Option<String>,
    pub idle_action: IdleAction,
    pub pool_started: bool,
    /// `shared` (the configured guacd) or `sidecar` (one guacd container per instance).
    pub guacd: GuacdMode,
    /// The sidecar's image; `None` = the configured `[guacd] sidecar_image`.
    pub guacd_image: Option<String>,
    pub external_username: Option<String>,
    pub external_domain: Option<String>,
    pub external_params: BTreeMap<String, String>,
    pub has_external_credentials: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GET /api/v1/droplets`: which droplets, filtered how, which page.
#[derive(Debug, Clone, Default)]
pub struct DropletQuery {
    /// Every droplet of the scope (`?scope=all`, needs `view_droplets`), not the catalogue.
    pub all: bool,
    /// Case-insensitive text in the name or description.
    pub q: Option<String>,
    pub droplet_type: Option<DropletType>,
    pub active: Option<bool>,
    /// With `all`: one tenant (others than the own need `view_tenants`).
    pub tenant_id: Option<i64>,
    pub page: PageRequest,
}

/// Request fields and the catalogue key each stands for. `ports` and the write-only and
/// relational fields are handled apart.
const FIELD_KEYS: [(&str, &str); 29] = [
    ("name", "name"),
    ("description", "description"),
    ("droplet_type", "type"),
    ("image", "image"),
    ("icon_url", "icon"),
    ("cpu_cores", "cores"),
    ("memory_mb", "memory"),
    ("active", "active"),
    ("idle_timeout_secs", "idle_timeout"),
    ("max_lifetime_secs", "max_lifetime"),
    ("idle_action", "idle_action"),
    ("pool_size", "pool_size"),
    ("pool_started", "pool_started"),
    ("env", "env"),
    ("labels", "label"),
    ("registry", "registry"),
    ("network", "network"),
    ("profile_mount", "profile_mount"),
    ("profile_path", "profile_path"),
    ("cap_add", "cap_add"),
    ("read_only_root", "read_only_root"),
    ("pids_limit", "pids_limit"),
    ("health_path", "health_path"),
    ("external_host", "host"),
    ("external_username", "username"),
    ("external_domain", "domain"),
    ("external_params", "param"),
    ("guacd", "guacd"),
    ("guacd_image", "guacd_image"),
];

/// Request fields besides [`FIELD_KEYS`].
const OTHER_FIELDS: [&str; 10] = [
    "target",
    "ports",
    "external_port",
    "group_ids",
    "tenant_id",
    "registry_username",
    "registry_password",
    "external_password",
    "external_private_key",
    "external_passphrase",
];

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::InvalidInput {
        field,
        reason: reason.into(),
    }
}

/// The request field a catalogue key stands for (the port is `ports` on a container and
/// `external_port` on an external host).
fn api_field(key: &str, target: TargetKind) -> &'static str {
    if key == "port" || key == "extra_port" {
        return match target {
            TargetKind::Container => "ports",
            TargetKind::External => "external_port",
        };
    }
    if let Some((api, _)) = FIELD_KEYS.iter().find(|(_, k)| *k == key) {
        return api;
    }
    match key {
        "password" | "private_key" | "passphrase" => "external_password",
        "group" => "group_ids",
        _ => "body",
    }
}

/// The first problem as the error (naming its field), the others added to its reason, so one
/// answer tells everything that is wrong.
fn field_errors(errors: Vec<FieldError>, target: TargetKind) -> AdminError {
    let mut problems = errors.into_iter();
    let Some(first) = problems.next() else {
        return invalid("body", "invalid droplet");
    };
    let field = api_field(&first.field, target);
    let mut reason = first.message;
    let rest: Vec<String> = problems
        .map(|e| format!("{}: {}", api_field(&e.field, target), e.message))
        .collect();
    if !rest.is_empty() {
        reason = format!("{reason} (also: {})", rest.join("; "));
    }
    invalid(field, reason)
}

/// A request body split into what the catalogue parser checks and what is handled apart.
struct Request {
    fields: Map<String, Value>,
    target: Option<TargetKind>,
    group_ids: Option<Vec<i64>>,
    tenant_id: Option<i64>,
    registry: Option<Option<RegistryCredentials>>,
    external: Option<ExternalCredentials>,
}

fn text_field(
    body: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) if s.len() > max => {
            Err(invalid(field, format!("use at most {max} characters")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

impl Request {
    fn read(mut body: Map<String, Value>) -> Result<Self> {
        if let Some(unknown) = body.keys().find(|k| {
            !FIELD_KEYS.iter().any(|(api, _)| api == k) && !OTHER_FIELDS.contains(&k.as_str())
        }) {
            let shown: String = unknown.chars().take(40).collect();
            return Err(invalid("body", format!("unknown field {shown:?}")));
        }
        let target = match body.remove("target") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(
                t.parse::<TargetKind>()
                    .map_err(|_| invalid("target", "must be \"container\" or \"external\""))?,
            ),
            Some(_) => return Err(invalid("target", "must be \"container\" or \"external\"")),
        };
        let group_ids = match body.remove("group_ids") {
            None => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<i64>>(v)
                    .map_err(|_| invalid("group_ids", "must be an array of group ids"))?,
            ),
        };
        let tenant_id = match body.remove("tenant_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| invalid("tenant_id", "must be a tenant id"))?,
            ),
        };
        let registry_user = text_field(&body, "registry_username", ACCOUNT_MAX)?;
        let registry_password = text_field(&body, "registry_password", SECRET_MAX)?;
        let registry = match (
            body.contains_key("registry_username"),
            registry_user,
            registry_password,
        ) {
            (_, Some(username), Some(password)) => {
                if username.chars().any(char::is_control) {
                    return Err(invalid(
                        "registry_username",
                        "control characters are not allowed",
                    ));
                }
                Some(Some(RegistryCredentials { username, password }))
            }
            (_, Some(_), None) => {
                return Err(invalid(
                    "registry_password",
                    "is required with registry_username",
                ));
            }
            (_, None, Some(_)) => {
                return Err(invalid(
                    "registry_username",
                    "is required with registry_password",
                ));
            }
            // `"registry_username": null` removes the stored account.
            (true, None, None) => Some(None),
            (false, None, None) => None,
        };
        let secret_keys = [
            "external_password",
            "external_private_key",
            "external_passphrase",
        ];
        let external = if secret_keys.iter().any(|k| body.contains_key(*k)) {
            let credentials = ExternalCredentials {
                password: text_field(&body, "external_password", SECRET_MAX)?,
                private_key: text_field(&body, "external_private_key", SECRET_MAX)?,
                passphrase: text_field(&body, "external_passphrase", SECRET_MAX)?,
            };
            if credentials.passphrase.is_some() && credentials.private_key.is_none() {
                return Err(invalid(
                    "external_passphrase",
                    "goes with external_private_key",
                ));
            }
            Some(credentials)
        } else {
            None
        };
        for key in [
            "registry_username",
            "registry_password",
            "external_password",
            "external_private_key",
            "external_passphrase",
        ] {
            body.remove(key);
        }
        Ok(Self {
            fields: body,
            target,
            group_ids,
            tenant_id,
            registry,
            external,
        })
    }

    /// Applies the fields to `entry` (a `null` removes a value) and checks the result whole.
    fn definition(&self, mut entry: Map<String, Value>, target: TargetKind) -> Result<Definition> {
        for (field, value) in &self.fields {
            let field = field.as_str();
            match (field, target) {
                ("ports", TargetKind::External) => {
                    return Err(invalid(
                        "ports",
                        "an external host has external_port, not ports",
                    ));
                }
                ("ports", TargetKind::Container) => {
                    entry.remove("port");
                    entry.remove("extra_port");
                    let ports = match value {
                        Value::Null => Vec::new(),
                        Value::Array(items) => items.clone(),
                        _ => return Err(invalid("ports", "must be an array of ports")),
                    };
                    if let Some((first, rest)) = ports.split_first() {
                        entry.insert("port".into(), first.clone());
                        if !rest.is_empty() {
                            entry.insert("extra_port".into(), Value::Array(rest.to_vec()));
                        }
                    }
                    continue;
                }
                ("external_port", TargetKind::Container) => {
                    return Err(invalid(
                        "external_port",
                        "only external droplets (target \"external\") have a host port",
                    ));
                }
                ("external_port", TargetKind::External) => {
                    set(&mut entry, "port", value);
                    continue;
                }
                (
                    "external_host" | "external_username" | "external_domain" | "external_params",
                    TargetKind::Container,
                ) if !value.is_null() => {
                    return Err(invalid(
                        api_field(catalogue_key(field), target),
                        "only external droplets (target \"external\") have this",
                    ));
                }
                _ => {}
            }
            set(&mut entry, catalogue_key(field), value);
        }
        if target == TargetKind::External && !entry.contains_key("host") {
            return Err(invalid(
                "external_host",
                "is required for an external droplet",
            ));
        }
        catalogue::parse_entry(0, &Value::Object(entry)).map_err(|e| field_errors(e.errors, target))
    }
}

fn catalogue_key(field: &str) -> &'static str {
    FIELD_KEYS
        .iter()
        .find(|(api, _)| *api == field)
        .map_or("", |(_, key)| key)
}

fn set(entry: &mut Map<String, Value>, key: &str, value: &Value) {
    if value.is_null() {
        entry.remove(key);
    } else {
        entry.insert(key.to_owned(), value.clone());
    }
}

/// The URL as recorded in the audit log: without its query and fragment, which may carry a
/// token.
fn url_for_log(url: &openidconnect::reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

impl Access<'_> {
    fn droplet_admin(&self) -> bool {
        let p = self.rights();
        p.view_droplets || p.edit_droplets
    }

    fn require_edit_droplets(&self) -> Result<()> {
        if self.rights().edit_droplets {
            Ok(())
        } else {
            Err(AdminError::Forbidden("this needs the edit_droplets right"))
        }
    }

    async fn load_droplet(&self, id: i64) -> Result<Droplet> {
        self.store()
            .get_droplet(id)
            .await?
            .ok_or(AdminError::NotFound("droplet"))
    }

    /// A droplet the principal may change (`edit_droplets`, and the tenant in write scope).
    async fn writable_droplet(&self, id: i64) -> Result<Droplet> {
        self.require_edit_droplets()?;
        let droplet = self.load_droplet(id).await?;
        self.check_writable(droplet.tenant_id, "droplet")?;
        Ok(droplet)
    }

    /// Builds views of `droplets`, with their groups and credential presence fetched once.
    async fn views(&self, droplets: Vec<Droplet>, admin: bool) -> Result<Vec<DropletView>> {
        let mut grants: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (droplet_id, group_id) in self.store().droplet_grants().await? {
            grants.entry(droplet_id).or_default().push(group_id);
        }
        let own_groups: Vec<i64> = if admin {
            Vec::new()
        } else {
            self.store()
                .groups_of_user(self.principal.user.id)
                .await?
                .iter()
                .map(|g| g.id)
                .collect()
        };
        let with_credentials = if admin {
            self.store().droplets_with_registry_credentials().await?
        } else {
            Vec::new()
        };
        let icons = self.store().droplet_icon_tags().await?;
        Ok(droplets
            .into_iter()
            .map(|d| {
                let mut group_ids = grants.remove(&d.id).unwrap_or_default();
                group_ids.sort_unstable();
                if !admin {
                    group_ids.retain(|g| own_groups.contains(g));
                }
                let src = icon_src(d.id, d.icon.as_deref(), &icons);
                view(d, group_ids, admin.then_some(&with_credentials), src)
            })
            .collect())
    }

    async fn view_of(&self, droplet: Droplet, admin: bool) -> Result<DropletView> {
        let mut views = self.views(vec![droplet], admin).await?;
        views.pop().ok_or(AdminError::NotFound("droplet"))
    }

    /// `GET /api/v1/droplets`: the principal's catalogue, or with `all` every droplet of the
    /// read scope; filtered and paged.
    pub async fn list_droplets(&self, query: DropletQuery) -> Result<Page<DropletView>> {
        let (droplets, admin) = if query.all {
            if !self.rights().view_droplets {
                return Err(AdminError::Forbidden(
                    "listing every droplet needs the view_droplets right",
                ));
            }
            let tenant = self.read_scope().list_filter(query.tenant_id)?;
            let all = self.store().list_droplets().await?;
            let droplets: Vec<Droplet> = all
                .into_iter()
                .filter(|d| tenant.is_none_or(|t| d.tenant_id == t))
                .collect();
            (droplets, true)
        } else {
            let mine = self
                .store()
                .list_droplets_for_user(self.principal.user.id)
                .await?;
            (mine, self.droplet_admin())
        };
        let needle = query.q.as_deref().map(str::trim).map(str::to_lowercase);
        let matching: Vec<Droplet> = droplets
            .into_iter()
            .filter(|d| {
                needle.as_deref().is_none_or(|n| {
                    d.name.to_lowercase().contains(n) || d.description.to_lowercase().contains(n)
                })
            })
            .filter(|d| query.droplet_type.is_none_or(|t| d.droplet_type == t))
            .filter(|d| query.active.is_none_or(|a| d.active == a))
            .collect();
        let total = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        let offset = usize::try_from(query.page.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.page.limit).unwrap_or(0);
        let page: Vec<Droplet> = matching.into_iter().skip(offset).take(limit).collect();
        let items = self.views(page, admin).await?;
        Ok(Page::new((items, total), query.page))
    }

    /// `GET /api/v1/droplets/{id}`: a droplet of the principal's catalogue, or any of the read
    /// scope for droplet administrators.
    pub async fn get_droplet(&self, id: i64) -> Result<DropletView> {
        let droplet = self.load_droplet(id).await?;
        if self.droplet_admin() && self.read_scope().admits(droplet.tenant_id) {
            return self.view_of(droplet, true).await;
        }
        let granted = self
            .store()
            .list_droplets_for_user(self.principal.user.id)
            .await?
            .iter()
            .any(|d| d.id == id);
        if granted {
            self.view_of(droplet, false).await
        } else {
            Err(AdminError::NotFound("droplet"))
        }
    }

    /// Checks that every group exists in `tenant_id`; returns them sorted and unique.
    async fn droplet_groups(&self, tenant_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_GROUPS_PER_DROPLET {
            return Err(invalid(
                "group_ids",
                format!("at most {MAX_GROUPS_PER_DROPLET} groups"),
            ));
        }
        for &id in &ids {
            match self.store().get_group(id).await? {
                Some(group) if group.tenant_id == tenant_id => {}
                _ => {
                    return Err(invalid(
                        "group_ids",
                        format!("there is no group {id} in the droplet's tenant"),
                    ));
                }
            }
        }
        Ok(ids)
    }

    fn check_secret_targets(request: &Request, target: TargetKind) -> Result<()> {
        if request.registry.is_some() && target != TargetKind::Container {
            return Err(invalid(
                "registry_username",
                "only container droplets are pulled from a registry",
            ));
        }
        if request.external.is_some() && target != TargetKind::External {
            return Err(invalid(
                "external_password",
                "only external droplets (target \"external\") have stored credentials",
            ));
        }
        Ok(())
    }

    /// Stores the write-only secrets of a request (sealed) for `droplet`.
    async fn store_secrets(&self, droplet: &Droplet, request: &Request, now: i64) -> Result<()> {
        if let Some(registry) = &request.registry {
            let sealed = registry
                .as_ref()
                .map(|c| seal_registry_credentials(self.auth.keyring(), droplet.id, c))
                .transpose()?;
            self.store()
                .set_droplet_registry_credentials(droplet.id, sealed.as_deref(), now)
                .await?;
        }
        if let Some(external) = &request.external {
            store_external_credentials(self.store(), self.auth.keyring(), droplet, external, now)
                .await?;
        }
        Ok(())
    }

    async fn set_grants(&self, droplet_id: i64, wanted: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
        let current = self.store().droplet_group_ids(droplet_id).await?;
        let mut granted = Vec::new();
        let mut revoked = Vec::new();
        for &g in wanted.iter().filter(|g| !current.contains(g)) {
            self.store().grant_droplet(droplet_id, g).await?;
            granted.push(g);
        }
        for &g in current.iter().filter(|g| !wanted.contains(g)) {
            self.store().revoke_droplet(droplet_id, g).await?;
            revoked.push(g);
        }
        Ok((granted, revoked))
    }

    /// `POST /api/v1/droplets`: checks everything, then creates the droplet, its secrets and
    /// its grants; a failure after the creation removes it again.
    pub async fn create_droplet(&self, body: Map<String, Value>, now: i64) -> Result<DropletView> {
        self.require_edit_droplets()?;
        let request = Request::read(body)?;
        let target = request.target.unwrap_or(
            if request
                .fields
                .get("external_host")
                .is_some_and(|v| !v.is_null())
            {
                TargetKind::External
            } else {
                TargetKind::Container
            },
        );
        if !request.fields.contains_key("name") {
            return Err(invalid("name", "is required"));
        }
        if !request.fields.contains_key("droplet_type") {
            return Err(invalid("droplet_type", "is required"));
        }
        let tenant_id = self.target_tenant(request.tenant_id).await?;
        let definition = request.definition(Map::new(), target)?;
        Self::check_secret_targets(&request, target)?;
        let group_ids = self
            .droplet_groups(tenant_id, request.group_ids.as_deref().unwrap_or_default())
            .await?;
        let mut new = definition.droplet;
        new.tenant_id = tenant_id;
        let droplet = self
            .store()
            .create_droplet(&new, now)
            .await
            .map_err(name_conflict)?;
        let finished = async {
            self.store_secrets(&droplet, &request, now).await?;
            self.set_grants(droplet.id, &group_ids).await
        }
        .await;
        if let Err(e) = finished {
            // No droplet without the secrets and groups it was created with.
            let _ = self.store().delete_droplet(droplet.id).await;
            return Err(e);
        }
        let droplet = self.load_droplet(droplet.id).await?;
        let icon_fetch = refresh_icon(self.store(), &droplet, now).await?;
        self.audit(
            "droplet.create",
            "droplet",
            droplet.id,
            json!({
                "name": droplet.name,
                "tenant_id": droplet.tenant_id,
                "droplet_type": droplet.droplet_type,
                "target": droplet.target,
                "image": droplet.image,
                "group_ids": group_ids,
                "registry_credentials": matches!(request.registry, Some(Some(_))),
                "external_credentials": request.external.is_some(),
            }),
            now,
        )
        .await;
        let mut view = self.view_of(droplet, true).await?;
        view.icon_fetch = icon_fetch;
        Ok(view)
    }

    /// `PATCH /api/v1/droplets/{id}`: the named fields change (`null` clears one), the result
    /// is checked whole like a new droplet. The target and the tenant do not change.
    pub async fn update_droplet(
        &self,
        id: i64,
        body: Map<String, Value>,
        now: i64,
    ) -> Result<DropletView> {
        let droplet = self.writable_droplet(id).await?;
        let request = Request::read(body)?;
        if request.tenant_id.is_some_and(|t| t != droplet.tenant_id) {
            return Err(invalid(
                "tenant_id",
                "a droplet stays in its tenant; create it anew in the other one",
            ));
        }
        if request.target.is_some_and(|t| t != droplet.target) {
            return Err(invalid(
                "target",
                "a droplet's target does not change; create a new droplet",
            ));
        }
        let definition = request.definition(catalogue::entry_of(&droplet), droplet.target)?;
        Self::check_secret_targets(&request, droplet.target)?;
        let group_ids = match &request.group_ids {
            Some(ids) => Some(self.droplet_groups(droplet.tenant_id, ids).await?),
            None => None,
        };
        let mut new = definition.droplet;
        new.tenant_id = droplet.tenant_id;
        let mut changed: Vec<&str> = request.fields.keys().map(String::as_str).collect();
        // Unchanged definitions keep `updated_at`, so a no-op edit does not drain a warm pool.
        if new != unchanged(&droplet) {
            self.store()
                .update_droplet(id, &new, now)
                .await
                .map_err(name_conflict)?;
        }
        self.store_secrets(&droplet, &request, now).await?;
        let (granted, revoked) = match &group_ids {
            Some(ids) => self.set_grants(id, ids).await?,
            None => (Vec::new(), Vec::new()),
        };
        if request.registry.is_some() {
            changed.push("registry_credentials");
        }
        if request.external.is_some() {
            changed.push("external_credentials");
        }
        self.audit(
            "droplet.update",
            "droplet",
            id,
            json!({
                "name": new.name,
                "changed": changed,
                "groups_granted": granted,
                "groups_revoked": revoked,
            }),
            now,
        )
        .await;
        let droplet = self.load_droplet(id).await?;
        let icon_fetch = refresh_icon(self.store(), &droplet, now).await?;
        let mut view = self.view_of(droplet, true).await?;
        view.icon_fetch = icon_fetch;
        Ok(view)
    }

    /// `DELETE /api/v1/droplets/{id}`: refused with `in_use` while instances or warm pool
    /// containers of it exist (see [`crate::store::Store::delete_droplet_and_history`]).
    pub async fn delete_droplet(&self, id: i64, now: i64) -> Result<()> {
        let droplet = self.writable_droplet(id).await?;
        self.store().delete_droplet_and_history(id).await?;
        self.audit(
            "droplet.delete",
            "droplet",
            id,
            json!({ "name": droplet.name, "tenant_id": droplet.tenant_id }),
            now,
        )
        .await;
        Ok(())
    }

    /// `PUT /api/v1/droplets/{id}/groups`: exactly these groups (of the droplet's tenant) may
    /// launch it.
    pub async fn set_droplet_groups(
        &self,
        id: i64,
        group_ids: &[i64],
        now: i64,
    ) -> Result<DropletView> {
        let droplet = self.writable_droplet(id).await?;
        let wanted = self.droplet_groups(droplet.tenant_id, group_ids).await?;
        let (granted, revoked) = self.set_grants(id, &wanted).await?;
        self.audit(
            "droplet.groups",
            "droplet",
            id,
            json!({ "name": droplet.name, "granted": granted, "revoked": revoked }),
            now,
        )
        .await;
        self.view_of(droplet, true).await
    }

    /// `POST /api/v1/droplets/{id}/pull`: starts the pull of a container droplet's image; the
    /// orchestrator audits its outcome.
    pub async fn pull_droplet(
        &self,
        orchestrator: &Arc<Orchestrator>,
        id: i64,
    ) -> Result<mpsc::Receiver<PullEvent>> {
        let droplet = self.writable_droplet(id).await?;
        orchestrator
            .pull_image(Actor::user(&self.principal.user), droplet.id)
            .await
    }

    /// The container droplets with an image in the principal's write scope, for "pull all".
    pub async fn pullable_droplets(&self) -> Result<Vec<Droplet>> {
        self.require_edit_droplets()?;
        let scope = self.write_scope();
        Ok(self
            .store()
            .list_droplets()
            .await?
            .into_iter()
            .filter(|d| scope.admits(d.tenant_id))
            .filter(|d| d.target == TargetKind::Container)
            .filter(|d| d.image.as_deref().is_some_and(|i| !i.is_empty()))
            .collect())
    }

    /// `POST /api/v1/droplets/import`: fetches the catalogue at `url` and imports it into the
    /// own tenant (or `tenant_id`, with `edit_tenants`). A dry run writes nothing.
    pub async fn import_droplets(
        &self,
        url: &str,
        tenant_id: Option<i64>,
        dry_run: bool,
        now: i64,
    ) -> Result<ImportReport> {
        if !self.rights().edit_registry {
            return Err(AdminError::Forbidden("this needs the edit_registry right"));
        }
        let tenant_id = self.target_tenant(tenant_id).await?;
        let url = remote_catalogue::parse_url(url)?;
        let text = remote_catalogue::fetch(&url).await?;
        let entries = remote_catalogue::entries(&text, Some(&url)).map_err(|reason| {
            AdminError::InvalidInput {
                field: "url",
                reason,
            }
        })?;
        let mut report =
            remote_catalogue::import(self.store(), tenant_id, entries, dry_run, now).await?;
        // A few icons at a time: a catalogue whose icon sites are slow then takes about one
        // fetch's time limit per few entries, not per entry.
        let imported: Vec<(usize, i64)> = report
            .entries
            .iter()
            .enumerate()
            .filter_map(|(at, entry)| entry.id.map(|id| (at, id)))
            .collect();
        let icon_errors: Vec<(usize, Option<String>)> = stream::iter(imported)
            .map(|(at, id)| async move {
                let droplet = self.load_droplet(id).await?;
                let fetch = refresh_icon(self.store(), &droplet, now).await?;
                Ok::<_, AdminError>((at, fetch.and_then(|f| f.error)))
            })
            .buffer_unordered(ICON_FETCHES_AT_ONCE)
            .try_collect()
            .await?;
        for (at, error) in icon_errors {
            if let Some(entry) = report.entries.get_mut(at) {
                entry.icon_error = error;
            }
        }
        if !dry_run {
            let imported: Vec<i64> = report.entries.iter().filter_map(|e| e.id).collect();
            self.audit(
                "droplet.import",
                "tenant",
                tenant_id,
                json!({
                    "url": url_for_log(&url),
                    "imported": imported,
                    "skipped": report.skipped,
                    "invalid": report.invalid,
                }),
                now,
            )
            .await;
        }
        Ok(report)
    }
}

fn name_conflict(e: AdminError) -> AdminError {
    match e {
        AdminError::Conflict(_) => {
            AdminError::Conflict("this tenant already has a droplet with this name".into())
        }
        other => other,
    }
}

/// The definition a droplet has now, to tell whether an edit changes anything.
fn unchanged(droplet: &Droplet) -> crate::store::NewDroplet {
    let mut new = crate::store::NewDroplet::new(
        droplet.tenant_id,
        droplet.name.clone(),
        droplet.droplet_type,
        droplet.target,
    );
    new.description = droplet.description.clone();
    new.image = droplet.image.clone();
    new.registry = droplet.registry.clone();
    new.cpu_millicores = droplet.cpu_millicores;
    new.memory_mb = droplet.memory_mb;
    new.ports = droplet.ports.clone();
    new.env = droplet.env.clone();
    new.labels = droplet.labels.clone();
    new.profile_path = droplet.profile_path.clone();
    new.network = droplet.network.clone();
    new.idle_timeout_secs = droplet.idle_timeout_secs;
    new.max_lifetime_secs = droplet.max_lifetime_secs;
    new.pool_size = droplet.pool_size;
    new.icon = droplet.icon.clone();
    new.active = droplet.active;
    new.external_host = droplet.external_host.clone();
    new.external_port = droplet.external_port;
    new.external_username = droplet.external_username.clone();
    new.cap_add = droplet.cap_add.clone();
    new.read_only_root = droplet.read_only_root;
    new.pids_limit = droplet.pids_limit;
    new.health_path = droplet.health_path.clone();
    new.profile_mount = droplet.profile_mount.clone();
    new.idle_action = droplet.idle_action;
    new.pool_started = droplet.pool_started;
    new.external_domain = droplet.external_domain.clone();
    new.external_params = droplet.external_params.clone();
    new.guacd = droplet.guacd;
    new.guacd_image = droplet.guacd_image.clone();
    new
}

fn view(
    d: Droplet,
    group_ids: Vec<i64>,
    registry_credentials: Option<&Vec<i64>>,
    icon_src: Option<String>,
) -> DropletView {
    let admin = registry_credentials.map(|_| DropletAdminView {
        registry: d.registry.clone(),
        env: d.env.clone(),
        labels: d.labels.clone(),
        network: d.network.clone(),
        profile_mount: d.profile_mount.clone(),
        profile_path: d.profile_path.clone(),
        cap_add: d.cap_add.clone(),
        read_only_root: d.read_only_root,
        pids_limit: d.pids_limit,
        health_path: d.health_path.clone(),
        idle_action: d.idle_action,
        pool_started: d.pool_started,
        guacd: d.guacd,
        guacd_image: d.guacd_image.clone(),
        external_username: d.external_username.clone(),
        external_domain: d.external_domain.clone(),
        external_params: d.external_params.clone(),
        has_external_credentials: d.external_credentials.is_some(),
        created_at: d.created_at,
        updated_at: d.updated_at,
    });
    DropletView {
        id: d.id,
        tenant_id: d.tenant_id,
        has_registry_credentials: registry_credentials.map(|ids| ids.contains(&d.id)),
        name: d.name,
        description: d.description,
        droplet_type: d.droplet_type,
        target: d.target,
        image: d.image,
        icon_url: d.icon,
        cpu_cores: d.cpu_millicores.map(|m| m as f64 / 1000.0),
        memory_mb: d.memory_mb,
        active: d.active,
        ports: d.ports,
        idle_timeout_secs: d.idle_timeout_secs,
        max_lifetime_secs: d.max_lifetime_secs,
        pool_size: d.pool_size,
        group_ids,
        external_host: d.external_host,
        external_port: d.external_port,
        icon_src,
        icon_fetch: None,
        admin,
    }
}

/// Fetches and stores the icon of `droplet` when it names another site and the stored one
/// (if any) came from elsewhere; forgets a stored icon its droplet no longer names. `None`
/// when there was nothing to fetch. Failures are logged and returned, never raised: the
/// droplet is saved either way.
pub async fn refresh_icon(
    store: &crate::store::Store,
    droplet: &Droplet,
    now: i64,
) -> Result<Option<IconFetch>> {
    let wanted = droplet
        .icon
        .as_deref()
        .map(str::trim)
        .filter(|i| icons::is_remote(i));
    let Some(url) = wanted else {
        store.delete_droplet_icon(droplet.id).await?;
        return Ok(None);
    };
    let stored = store.droplet_icon_tags().await?;
    if stored
        .get(&droplet.id)
        .is_some_and(|(source, _)| source == url)
    {
        return Ok(Some(IconFetch {
            fetched: true,
            error: None,
        }));
    }
    match icons::fetch(droplet.id, url, now).await {
        Ok(icon) => {
            store.put_droplet_icon(&icon).await?;
            Ok(Some(IconFetch {
                fetched: true,
                error: None,
            }))
        }
        Err(error) => {
            tracing::warn!(droplet = droplet.id, %error, "droplet icon not fetched; the page shows the initial");
            store.delete_droplet_icon(droplet.id).await?;
            Ok(Some(IconFetch {
                fetched: false,
                error: Some(error),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn field_of(result: Result<Definition>) -> &'static str {
        match result {
            Err(AdminError::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn definition(value: Value, target: TargetKind) -> Result<Definition> {
        Request::read(body(value))?.definition(Map::new(), target)
    }

    #[test]
    fn fields_are_checked_and_named_as_the_api_spells_them() {
        let ok = json!({"name": "Web", "droplet_type": "http", "image": "a/b:1",
                        "ports": [8080, 9000], "cpu_cores": 0.5, "memory_mb": 256,
                        "env": {"A": "1"}, "labels": {"team": "x"},
                        "icon_url": "/assets/web.svg", "idle_timeout_secs": 600});
        let d = definition(ok.clone(), TargetKind::Container)
            .unwrap()
            .droplet;
        assert_eq!(d.ports, vec![8080, 9000]);
        assert_eq!(d.cpu_millicores, Some(500));
        for (change, field) in [
            (json!({"image": "has space:1"}), "image"),
            (json!({"ports": [0]}), "ports"),
            (json!({"ports": "80"}), "ports"),
            (json!({"memory_mb": 1}), "memory_mb"),
            (json!({"cpu_cores": -1}), "cpu_cores"),
            (json!({"env": {"1BAD": "x"}}), "env"),
            (json!({"labels": {"flowcase.owner": "x"}}), "labels"),
            (json!({"icon_url": "javascript:alert(1)"}), "icon_url"),
            (json!({"icon_url": "ftp://a.example/i.png"}), "icon_url"),
            (json!({"droplet_type": "ftp"}), "droplet_type"),
            (json!({"external_port": 22}), "external_port"),
            (json!({"external_host": "h.example"}), "external_host"),
            (json!({"is_admin": true}), "body"),
        ] {
            let mut value = ok.clone();
            for (k, v) in change.as_object().unwrap() {
                value[k] = v.clone();
            }
            assert_eq!(
                field_of(definition(value, TargetKind::Container)),
                field,
                "{change}"
            );
        }
    }

    #[test]
    fn external_hosts_take_their_own_fields() {
        let ok = json!({"name": "Win", "droplet_type": "rdp", "external_host": "win.example",
                        "external_port": 3390, "external_username": "bob"});
        let d = definition(ok.clone(), TargetKind::External)
            .unwrap()
            .droplet;
        assert_eq!(d.external_port, Some(3390));
        let mut bad = ok.clone();
        bad["external_host"] = json!("bad host!");
        assert_eq!(
            field_of(definition(bad, TargetKind::External)),
            "external_host"
        );
        let mut bad = ok.clone();
        bad["ports"] = json!([1]);
        assert_eq!(field_of(definition(bad, TargetKind::External)), "ports");
        let mut bad = ok;
        bad["image"] = json!("a:1");
        assert_eq!(field_of(definition(bad, TargetKind::External)), "image");
    }

    #[test]
    fn secrets_come_in_pairs_and_are_never_in_errors() {
        let r = Request::read(body(
            json!({"registry_username": "u", "registry_password": "pw-123"}),
        ))
        .unwrap();
        assert!(matches!(r.registry, Some(Some(_))));
        assert!(!r.fields.contains_key("registry_password"));
        let r = Request::read(body(json!({"registry_username": null}))).unwrap();
        assert!(matches!(r.registry, Some(None)));
        for (value, field) in [
            (json!({"registry_password": "pw-123"}), "registry_username"),
            (json!({"registry_username": "u"}), "registry_password"),
            (json!({"external_passphrase": "pp"}), "external_passphrase"),
        ] {
            match Request::read(body(value.clone())) {
                Err(AdminError::InvalidInput { field: f, reason }) => {
                    assert_eq!(f, field, "{value}");
                    assert!(!reason.contains("pw-123"));
                }
                _ => panic!("{value}"),
            }
        }
    }
}

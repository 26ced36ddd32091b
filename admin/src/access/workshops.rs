//! Workshops: a template of droplets for a group of participants, started and stopped all at
//! once.
//!
//! Reading needs `view_workshops`, changing (and starting, stopping) needs `edit_workshops`,
//! with the tenant scope of every admin object: a workshop of another tenant is `NotFound` to a
//! principal who cannot see it. Participants and droplets must belong to the workshop's tenant.
//! Participants read their own workshops (`my_workshops`) without any right.
//!
//! "Start all" launches, for every participant and every droplet of the template, the instance
//! the workshop gave them (or starts it again when stopped) through the orchestrator, in a
//! background task with at most [`LAUNCH_CONCURRENCY`] launches at a time; the request answers
//! at once and the workshop view shows each participant's state as it changes. Each launch is
//! claimed in `workshop_instances` first, so a second "start all" while one runs launches
//! nothing twice. The workshop gives access by itself: participants need no group grant on the
//! droplets, but the launches count against their quotas like any other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Access, Page, PageRequest, Right, validate};
use crate::error::{AdminError, Result};
use crate::orchestrator::{Actor, Orchestrator};
use crate::store::{
    Droplet, DropletType, InstanceStatus, NewWorkshop, Store, Workshop, WorkshopFields,
    WorkshopLink, WorkshopStatus, now_millis,
};

/// Launches of one "start all" running at once: enough to fill a class quickly, few enough not
/// to swamp the engine (each launch pulls nothing but creates, starts and probes a container).
pub const LAUNCH_CONCURRENCY: usize = 4;
/// Participants one workshop may hold.
const MAX_PARTICIPANTS: usize = 500;
/// Droplets one workshop's template may hold.
const MAX_DROPLETS: usize = 20;
/// Length of a workshop when the request gives no end.
const DEFAULT_DURATION_MS: i64 = 24 * 3600 * 1000;
/// A launch claimed longer ago than this is taken to have died with its process.
const STALE_CLAIM_MS: i64 = 10 * 60 * 1000;
/// How long "stop all" waits for an instance that is still starting before giving up on it.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// A time as JSON: unix milliseconds or RFC 3339 text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeValue {
    Millis(i64),
    Text(String),
}

impl TimeValue {
    fn millis(&self, field: &'static str) -> Result<i64> {
        match self {
            Self::Millis(ms) => Ok(*ms),
            Self::Text(text) => validate::instant(field, text),
        }
    }
}

/// `POST /api/v1/workshops`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkshopRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Missing: the creator's own tenant.
    #[serde(default)]
    pub tenant_id: Option<i64>,
    /// Missing: now.
    #[serde(default)]
    pub starts_at: Option<TimeValue>,
    /// Missing: a day after the start.
    #[serde(default)]
    pub ends_at: Option<TimeValue>,
    #[serde(default)]
    pub droplet_ids: Vec<i64>,
    #[serde(default)]
    pub user_ids: Vec<i64>,
    /// A group whose members join too.
    #[serde(default)]
    pub group_id: Option<i64>,
}

/// `PATCH /api/v1/workshops/{id}`: a missing field keeps its value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkshopChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub starts_at: Option<TimeValue>,
    #[serde(default)]
    pub ends_at: Option<TimeValue>,
}

/// `PUT /api/v1/workshops/{id}/participants`: `user_ids` become exactly the participants (when
/// given), and the members of `group_id` join them (when given).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkshopParticipants {
    #[serde(default)]
    pub user_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub group_id: Option<i64>,
}

/// A droplet of the template.
#[derive(Debug, Clone, Serialize)]
pub struct DropletRef {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub droplet_type: DropletType,
    pub icon: Option<String>,
}

impl From<&Droplet> for DropletRef {
    fn from(d: &Droplet) -> Self {
        Self {
            id: d.id,
            name: d.name.clone(),
            droplet_type: d.droplet_type,
            icon: d.icon.clone(),
        }
    }
}

/// What one participant has of one droplet of the template.
#[derive(Debug, Clone, Serialize)]
pub struct SeatInstance {
    pub droplet_id: i64,
    pub instance_id: Option<i64>,
    /// The instance's public name (its host is `<slug>.<apps domain>`).
    pub slug: Option<String>,
    /// `not_started`, `launching`, `failed`, or the instance's own status.
    pub state: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A participant and the state of their instances.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub disabled: bool,
    pub joined_at: i64,
    /// Summary: the state shared by all their instances, or `mixed`.
    pub state: String,
    pub instances: Vec<SeatInstance>,
}

/// A workshop with its template and participants.
#[derive(Debug, Clone, Serialize)]
pub struct WorkshopView {
    #[serde(flatten)]
    pub workshop: Workshop,
    pub droplets: Vec<DropletRef>,
    pub participants: Vec<ParticipantView>,
}

/// A workshop as one of its participants sees it: their own instances only.
#[derive(Debug, Clone, Serialize)]
pub struct MyWorkshop {
    #[serde(flatten)]
    pub workshop: Workshop,
    pub droplets: Vec<DropletRef>,
    pub instances: Vec<SeatInstance>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::InvalidInput {
        field,
        reason: reason.into(),
    }
}

fn name_conflict(e: AdminError) -> AdminError {
    match e {
        AdminError::Conflict(_) => {
            AdminError::Conflict("a workshop with this name already exists in the tenant".into())
        }
        other => other,
    }
}

fn dedup(ids: &[i64]) -> Vec<i64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn check_period(starts_at: i64, ends_at: i64) -> Result<()> {
    if ends_at <= starts_at {
        return Err(invalid("ends_at", "must be after starts_at"));
    }
    Ok(())
}

/// The state of one (participant, droplet) pair from its link, if any.
fn seat_instance(droplet_id: i64, link: Option<&WorkshopLink>) -> SeatInstance {
    let Some(link) = link else {
        return SeatInstance {
            droplet_id,
            instance_id: None,
            slug: None,
            state: "not_started".into(),
            error: None,
        };
    };
    let (state, error) = match (&link.status, &link.error) {
        _ if link.launching => ("launching".to_owned(), None),
        (Some(status), _) => (status.as_str().to_owned(), link.error_reason.clone()),
        (None, Some(error)) => ("failed".to_owned(), Some(error.clone())),
        // The instance row was deleted: the next "start all" launches a new one.
        (None, None) => ("not_started".to_owned(), None),
    };
    SeatInstance {
        droplet_id,
        instance_id: link.instance_id,
        slug: link.slug.clone(),
        state,
        error,
    }
}

fn summary(instances: &[SeatInstance]) -> String {
    match instances.first() {
        None => "not_started".into(),
        Some(first) if instances.iter().all(|i| i.state == first.state) => first.state.clone(),
        Some(_) => "mixed".into(),
    }
}

impl Access<'_> {
    /// `view_workshops`. Workshops of the principal's tenant (or of `tenant_id` / every tenant
    /// for a principal who sees across tenants), by name.
    pub async fn list_workshops(
        &self,
        tenant_id: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<Workshop>> {
        self.require(Right::ViewWorkshops)?;
        let filter = self.read_scope().list_filter(tenant_id)?;
        let found = self
            .store()
            .page_workshops(filter, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// `view_workshops`. One workshop with its droplets and each participant's state.
    pub async fn get_workshop(&self, id: i64) -> Result<WorkshopView> {
        self.require(Right::ViewWorkshops)?;
        let workshop = self.visible_workshop(id).await?;
        self.workshop_view(workshop).await
    }

    /// No right needed: the workshops the principal takes part in, with their own instances.
    pub async fn my_workshops(&self) -> Result<Vec<MyWorkshop>> {
        let me = self.principal.user.id;
        let mut mine = Vec::new();
        for workshop in self.store().workshops_of_participant(me).await? {
            let droplets = self.template(workshop.id).await?;
            let links: Vec<WorkshopLink> = self
                .store()
                .workshop_links(workshop.id)
                .await?
                .into_iter()
                .filter(|l| l.user_id == me)
                .collect();
            let instances = droplets
                .iter()
                .map(|d| seat_instance(d.id, links.iter().find(|l| l.droplet_id == d.id)))
                .collect();
            mine.push(MyWorkshop {
                workshop,
                droplets: droplets.iter().map(DropletRef::from).collect(),
                instances,
            });
        }
        Ok(mine)
    }

    /// `edit_workshops` (and `edit_tenants` for another tenant). Creates a scheduled workshop,
    /// optionally with its template and participants.
    pub async fn create_workshop(&self, req: NewWorkshopRequest, now: i64) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let tenant_id = self.target_tenant(req.tenant_id).await?;
        let name = validate::workshop_name(&req.name)?;
        let description = validate::description(req.description.as_deref().unwrap_or(""))?;
        let starts_at = match &req.starts_at {
            Some(t) => t.millis("starts_at")?,
            None => now,
        };
        let ends_at = match &req.ends_at {
            Some(t) => t.millis("ends_at")?,
            None => starts_at.saturating_add(DEFAULT_DURATION_MS),
        };
        check_period(starts_at, ends_at)?;
        let droplets = self.droplets_in_tenant(tenant_id, &req.droplet_ids).await?;
        let mut user_ids = self.users_in_tenant(tenant_id, &req.user_ids).await?;
        if let Some(group_id) = req.group_id {
            user_ids = self
                .with_group_members(tenant_id, group_id, user_ids)
                .await?;
        }
        let workshop = self
            .store()
            .create_workshop(
                &NewWorkshop {
                    tenant_id,
                    group_id: req.group_id,
                    name,
                    description,
                    starts_at,
                    ends_at,
                    status: WorkshopStatus::Scheduled,
                },
                now,
            )
            .await
            .map_err(name_conflict)?;
        self.store()
            .set_workshop_droplets(workshop.id, &droplets)
            .await?;
        self.store()
            .set_participants(workshop.id, &user_ids, now)
            .await?;
        self.audit(
            "workshop.create",
            "workshop",
            workshop.id,
            serde_json::json!({
                "name": workshop.name,
                "tenant_id": workshop.tenant_id,
                "droplet_ids": droplets,
                "user_ids": user_ids,
            }),
            now,
        )
        .await;
        self.workshop_view(workshop).await
    }

    /// `edit_workshops`. Changes name, description and/or period.
    pub async fn update_workshop(
        &self,
        id: i64,
        changes: WorkshopChanges,
        now: i64,
    ) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let workshop = self.writable_workshop(id).await?;
        let fields = WorkshopFields {
            name: match &changes.name {
                Some(text) => validate::workshop_name(text)?,
                None => workshop.name.clone(),
            },
            description: match &changes.description {
                Some(text) => validate::description(text)?,
                None => workshop.description.clone(),
            },
            starts_at: match &changes.starts_at {
                Some(t) => t.millis("starts_at")?,
                None => workshop.starts_at,
            },
            ends_at: match &changes.ends_at {
                Some(t) => t.millis("ends_at")?,
                None => workshop.ends_at,
            },
            group_id: workshop.group_id,
        };
        check_period(fields.starts_at, fields.ends_at)?;
        let mut diff = serde_json::Map::new();
        if fields.name != workshop.name {
            diff.insert(
                "name".into(),
                serde_json::json!([workshop.name, fields.name]),
            );
        }
        if fields.description != workshop.description {
            diff.insert(
                "description".into(),
                serde_json::json!([workshop.description, fields.description]),
            );
        }
        if fields.starts_at != workshop.starts_at {
            diff.insert(
                "starts_at".into(),
                serde_json::json!([workshop.starts_at, fields.starts_at]),
            );
        }
        if fields.ends_at != workshop.ends_at {
            diff.insert(
                "ends_at".into(),
                serde_json::json!([workshop.ends_at, fields.ends_at]),
            );
        }
        if diff.is_empty() {
            return self.workshop_view(workshop).await;
        }
        let updated = self
            .store()
            .update_workshop(id, &fields)
            .await
            .map_err(name_conflict)?;
        self.audit(
            "workshop.update",
            "workshop",
            id,
            serde_json::json!({ "changes": diff }),
            now,
        )
        .await;
        self.workshop_view(updated).await
    }

    /// `edit_workshops`. Refused while the workshop runs (stop it first); the instances it
    /// started stay their participants'.
    pub async fn delete_workshop(&self, id: i64, now: i64) -> Result<()> {
        self.require(Right::EditWorkshops)?;
        let workshop = self.writable_workshop(id).await?;
        if workshop.status == WorkshopStatus::Running {
            return Err(AdminError::Reference(
                "this workshop is running; stop it first".into(),
            ));
        }
        self.store().delete_workshop(id).await?;
        self.audit(
            "workshop.delete",
            "workshop",
            id,
            serde_json::json!({"name": workshop.name, "tenant_id": workshop.tenant_id}),
            now,
        )
        .await;
        Ok(())
    }

    /// `edit_workshops`. Sets the participants (`user_ids`) and/or adds a group's members
    /// (`group_id`, remembered as the workshop's group). Users must be of the workshop's tenant.
    pub async fn set_workshop_participants(
        &self,
        id: i64,
        req: WorkshopParticipants,
        now: i64,
    ) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let mut workshop = self.writable_workshop(id).await?;
        if req.user_ids.is_none() && req.group_id.is_none() {
            return Err(invalid("body", "give user_ids, group_id or both"));
        }
        let before: Vec<i64> = self
            .store()
            .list_participants(id)
            .await?
            .iter()
            .map(|p| p.user_id)
            .collect();
        let mut user_ids = match &req.user_ids {
            Some(ids) => self.users_in_tenant(workshop.tenant_id, ids).await?,
            None => before.clone(),
        };
        if let Some(group_id) = req.group_id {
            user_ids = self
                .with_group_members(workshop.tenant_id, group_id, user_ids)
                .await?;
            if workshop.group_id != Some(group_id) {
                let fields = WorkshopFields {
                    name: workshop.name.clone(),
                    description: workshop.description.clone(),
                    starts_at: workshop.starts_at,
                    ends_at: workshop.ends_at,
                    group_id: Some(group_id),
                };
                workshop = self.store().update_workshop(id, &fields).await?;
            }
        }
        self.store().set_participants(id, &user_ids, now).await?;
        let added: Vec<i64> = user_ids
            .iter()
            .copied()
            .filter(|u| !before.contains(u))
            .collect();
        let removed: Vec<i64> = before
            .iter()
            .copied()
            .filter(|u| !user_ids.contains(u))
            .collect();
        self.audit(
            "workshop.participants",
            "workshop",
            id,
            serde_json::json!({"added": added, "removed": removed, "group_id": req.group_id}),
            now,
        )
        .await;
        self.workshop_view(workshop).await
    }

    /// `edit_workshops`. Makes `droplet_ids` exactly the template; droplets must be of the
    /// workshop's tenant.
    pub async fn set_workshop_droplets(
        &self,
        id: i64,
        droplet_ids: &[i64],
        now: i64,
    ) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let workshop = self.writable_workshop(id).await?;
        let ids = self
            .droplets_in_tenant(workshop.tenant_id, droplet_ids)
            .await?;
        let before = self.store().workshop_droplet_ids(id).await?;
        self.store().set_workshop_droplets(id, &ids).await?;
        self.audit(
            "workshop.droplets",
            "workshop",
            id,
            serde_json::json!({"before": before, "after": ids}),
            now,
        )
        .await;
        self.workshop_view(workshop).await
    }

    /// `edit_workshops`. Marks the workshop running and launches, in the background, every
    /// participant's instances of the template (see the module documentation). Answers at once
    /// with the workshop as it is. `orchestrator` is the control plane's, or why there is none
    /// (an `engine_error` once the caller is authorized).
    pub async fn start_workshop(
        &self,
        id: i64,
        orchestrator: Result<&Arc<Orchestrator>>,
        now: i64,
    ) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let workshop = self.writable_workshop(id).await?;
        // Only now: a refused caller learns nothing about the engine.
        let orchestrator = orchestrator?;
        let seats = self.store().list_participants(id).await?;
        let droplets = self.store().workshop_droplet_ids(id).await?;
        if seats.is_empty() {
            return Err(invalid("participants", "the workshop has no participants"));
        }
        if droplets.is_empty() {
            return Err(invalid("droplets", "the workshop has no droplets"));
        }
        self.store()
            .set_workshop_status(id, WorkshopStatus::Running)
            .await?;
        self.audit(
            "workshop.start",
            "workshop",
            id,
            serde_json::json!({
                "name": workshop.name,
                "participants": seats.len(),
                "droplets": droplets.len(),
            }),
            now,
        )
        .await;
        let task = StartAll {
            store: self.store().clone(),
            orchestrator: Arc::clone(orchestrator),
            workshop_id: id,
            actor: Actor::user(&self.principal.user),
        };
        tokio::spawn(task.run());
        let workshop = Workshop {
            status: WorkshopStatus::Running,
            ..workshop
        };
        self.workshop_view(workshop).await
    }

    /// `edit_workshops`. Marks the workshop ended and stops, in the background, every instance
    /// it started (they can be started again with "start all").
    pub async fn stop_workshop(
        &self,
        id: i64,
        orchestrator: Result<&Arc<Orchestrator>>,
        now: i64,
    ) -> Result<WorkshopView> {
        self.require(Right::EditWorkshops)?;
        let workshop = self.writable_workshop(id).await?;
        // Only now: a refused caller learns nothing about the engine.
        let orchestrator = orchestrator?;
        self.store()
            .set_workshop_status(id, WorkshopStatus::Ended)
            .await?;
        let links = self.store().workshop_links(id).await?;
        let instance_ids: Vec<i64> = links.iter().filter_map(|l| l.instance_id).collect();
        self.audit(
            "workshop.stop",
            "workshop",
            id,
            serde_json::json!({"name": workshop.name, "instances": instance_ids.len()}),
            now,
        )
        .await;
        let task = StopAll {
            store: self.store().clone(),
            orchestrator: Arc::clone(orchestrator),
            instance_ids,
            actor: Actor::user(&self.principal.user),
        };
        tokio::spawn(task.run());
        let workshop = Workshop {
            status: WorkshopStatus::Ended,
            ..workshop
        };
        self.workshop_view(workshop).await
    }

    async fn visible_workshop(&self, id: i64) -> Result<Workshop> {
        let workshop = self
            .store()
            .get_workshop(id)
            .await?
            .ok_or(AdminError::NotFound("workshop"))?;
        self.check_visible(workshop.tenant_id, "workshop")?;
        Ok(workshop)
    }

    async fn writable_workshop(&self, id: i64) -> Result<Workshop> {
        let workshop = self.visible_workshop(id).await?;
        self.check_writable(workshop.tenant_id, "workshop")?;
        Ok(workshop)
    }

    /// The template's droplets, in id order (a droplet deleted meanwhile is skipped).
    async fn template(&self, workshop_id: i64) -> Result<Vec<Droplet>> {
        let mut droplets = Vec::new();
        for id in self.store().workshop_droplet_ids(workshop_id).await? {
            if let Some(droplet) = self.store().get_droplet(id).await? {
                droplets.push(droplet);
            }
        }
        Ok(droplets)
    }

    async fn workshop_view(&self, workshop: Workshop) -> Result<WorkshopView> {
        let droplets = self.template(workshop.id).await?;
        let links = self.store().workshop_links(workshop.id).await?;
        let mut by_pair: BTreeMap<(i64, i64), &WorkshopLink> = BTreeMap::new();
        for link in &links {
            by_pair.insert((link.user_id, link.droplet_id), link);
        }
        let participants = self
            .store()
            .workshop_seats(workshop.id)
            .await?
            .into_iter()
            .map(|seat| {
                let instances: Vec<SeatInstance> = droplets
                    .iter()
                    .map(|d| seat_instance(d.id, by_pair.get(&(seat.user_id, d.id)).copied()))
                    .collect();
                ParticipantView {
                    user_id: seat.user_id,
                    username: seat.username,
                    display_name: seat.display_name,
                    disabled: seat.disabled,
                    joined_at: seat.joined_at,
                    state: summary(&instances),
                    instances,
                }
            })
            .collect();
        Ok(WorkshopView {
            workshop,
            droplets: droplets.iter().map(DropletRef::from).collect(),
            participants,
        })
    }

    /// The ids, deduplicated, each of which must name a droplet of `tenant_id`; another
    /// tenant's droplet gets the same answer as a missing one.
    async fn droplets_in_tenant(&self, tenant_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
        let ids = dedup(ids);
        if ids.len() > MAX_DROPLETS {
            return Err(invalid(
                "droplet_ids",
                format!("at most {MAX_DROPLETS} droplets"),
            ));
        }
        for &id in &ids {
            match self.store().get_droplet(id).await? {
                Some(d) if d.tenant_id == tenant_id => {}
                _ => {
                    return Err(invalid(
                        "droplet_ids",
                        format!("there is no droplet {id} in the workshop's tenant"),
                    ));
                }
            }
        }
        Ok(ids)
    }

    /// The ids, deduplicated, each of which must name a user of `tenant_id`.
    async fn users_in_tenant(&self, tenant_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
        let ids = dedup(ids);
        if ids.len() > MAX_PARTICIPANTS {
            return Err(invalid(
                "user_ids",
                format!("at most {MAX_PARTICIPANTS} participants"),
            ));
        }
        for &id in &ids {
            match self.store().get_user(id).await? {
                Some(u) if u.tenant_id == tenant_id => {}
                _ => {
                    return Err(invalid(
                        "user_ids",
                        format!("there is no user {id} in the workshop's tenant"),
                    ));
                }
            }
        }
        Ok(ids)
    }

    /// `user_ids` with the members of group `group_id`, which must be of `tenant_id`.
    async fn with_group_members(
        &self,
        tenant_id: i64,
        group_id: i64,
        mut user_ids: Vec<i64>,
    ) -> Result<Vec<i64>> {
        match self.store().get_group(group_id).await? {
            Some(g) if g.tenant_id == tenant_id => {}
            _ => {
                return Err(invalid(
                    "group_id",
                    format!("there is no group {group_id} in the workshop's tenant"),
                ));
            }
        }
        user_ids.extend(
            self.store()
                .users_in_group(group_id)
                .await?
                .iter()
                .map(|u| u.id),
        );
        let user_ids = dedup(&user_ids);
        if user_ids.len() > MAX_PARTICIPANTS {
            return Err(invalid(
                "group_id",
                format!("at most {MAX_PARTICIPANTS} participants"),
            ));
        }
        Ok(user_ids)
    }
}

/// The background half of "start all".
struct StartAll {
    store: Store,
    orchestrator: Arc<Orchestrator>,
    workshop_id: i64,
    actor: Actor,
}

impl StartAll {
    async fn run(self) {
        let this = Arc::new(self);
        let pairs = match this.pairs().await {
            Ok(pairs) => pairs,
            Err(e) => {
                tracing::error!(workshop = this.workshop_id, error = %e, "cannot start the workshop");
                return;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(LAUNCH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (user_id, droplet_id, link) in pairs {
            let this = Arc::clone(&this);
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                if let Err(e) = this.provide(user_id, droplet_id, link).await {
                    tracing::warn!(
                        workshop = this.workshop_id,
                        user_id,
                        droplet_id,
                        error = %e,
                        "workshop launch failed"
                    );
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(workshop = this.workshop_id, "workshop start finished");
    }

    /// Every (participant, droplet) pair with its current link.
    async fn pairs(&self) -> Result<Vec<(i64, i64, Option<WorkshopLink>)>> {
        let seats = self.store.list_participants(self.workshop_id).await?;
        let droplets = self.store.workshop_droplet_ids(self.workshop_id).await?;
        let links = self.store.workshop_links(self.workshop_id).await?;
        let mut pairs = Vec::with_capacity(seats.len() * droplets.len());
        for seat in &seats {
            for &droplet_id in &droplets {
                let link = links
                    .iter()
                    .find(|l| l.user_id == seat.user_id && l.droplet_id == droplet_id)
                    .cloned();
                pairs.push((seat.user_id, droplet_id, link));
            }
        }
        Ok(pairs)
    }

    /// Makes sure `user_id` has a running instance of `droplet_id` from this workshop.
    async fn provide(
        &self,
        user_id: i64,
        droplet_id: i64,
        link: Option<WorkshopLink>,
    ) -> Result<()> {
        // "Stop all" may have come in while this pair waited for a permit.
        match self.store.get_workshop(self.workshop_id).await? {
            Some(w) if w.status == WorkshopStatus::Running => {}
            _ => return Ok(()),
        }
        let previous = link.as_ref().and_then(|l| l.instance_id);
        match link.as_ref().and_then(|l| l.status) {
            Some(
                InstanceStatus::Requested
                | InstanceStatus::Creating
                | InstanceStatus::Starting
                | InstanceStatus::Running
                | InstanceStatus::Stopping,
            ) => return Ok(()),
            Some(InstanceStatus::Stopped | InstanceStatus::Error) => {
                if let Some(instance_id) = previous {
                    self.orchestrator.start(instance_id, &self.actor).await?;
                }
                return Ok(());
            }
            Some(InstanceStatus::Gone | InstanceStatus::Destroying) | None => {}
        }
        let now = now_millis();
        if !self
            .store
            .claim_workshop_launch(
                self.workshop_id,
                user_id,
                droplet_id,
                previous,
                now,
                now - STALE_CLAIM_MS,
            )
            .await?
        {
            return Ok(());
        }
        let outcome = self.launch(user_id, droplet_id).await;
        let recorded = match &outcome {
            Ok(id) => Ok(*id),
            Err(e) => Err(crate::web::error::public_message(e)),
        };
        self.store
            .finish_workshop_launch(self.workshop_id, user_id, droplet_id, recorded)
            .await?;
        outcome.map(|_| ())
    }

    async fn launch(&self, user_id: i64, droplet_id: i64) -> Result<i64> {
        let user = self
            .store
            .get_user(user_id)
            .await?
            .ok_or(AdminError::NotFound("user"))?;
        if user.disabled {
            return Err(AdminError::Forbidden(
                "the participant's account is disabled",
            ));
        }
        let droplet = self
            .store
            .get_droplet(droplet_id)
            .await?
            .ok_or(AdminError::NotFound("droplet"))?;
        let (instance, _) = self.orchestrator.launch(&user, &droplet).await?;
        Ok(instance.id)
    }
}

/// The background half of "stop all".
struct StopAll {
    store: Store,
    orchestrator: Arc<Orchestrator>,
    instance_ids: Vec<i64>,
    actor: Actor,
}

impl StopAll {
    async fn run(self) {
        let this = Arc::new(self);
        let permits = Arc::new(tokio::sync::Semaphore::new(LAUNCH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for instance_id in this.instance_ids.clone() {
            let this = Arc::clone(&this);
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                if let Err(e) = this.stop(instance_id).await {
                    tracing::warn!(instance_id, error = %e, "workshop stop failed");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Stops one instance; one still on its way up is waited for (boundedly) and then stopped,
    /// so "stop all" right after "start all" leaves nothing running.
    async fn stop(&self, instance_id: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            let Some(instance) = self.store.get_instance(instance_id).await? else {
                return Ok(());
            };
            match instance.status {
                InstanceStatus::Running | InstanceStatus::Error => {
                    return self.orchestrator.stop(instance_id, &self.actor).await;
                }
                InstanceStatus::Requested | InstanceStatus::Creating | InstanceStatus::Starting
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(
        status: Option<InstanceStatus>,
        instance: Option<i64>,
        error: Option<&str>,
    ) -> WorkshopLink {
        WorkshopLink {
            user_id: 1,
            droplet_id: 2,
            instance_id: instance,
            error: error.map(str::to_owned),
            launching: instance.is_none() && status.is_none() && error.is_none(),
            claimed_at: 0,
            slug: instance.map(|_| "abc".to_owned()),
            status,
            error_reason: None,
        }
    }

    #[test]
    fn seat_states_read_like_what_happened() {
        assert_eq!(seat_instance(2, None).state, "not_started");
        assert_eq!(
            seat_instance(2, Some(&link(None, None, None))).state,
            "launching"
        );
        let failed = seat_instance(2, Some(&link(None, None, Some("image missing"))));
        assert_eq!(failed.state, "failed");
        assert_eq!(failed.error.as_deref(), Some("image missing"));
        let running = seat_instance(2, Some(&link(Some(InstanceStatus::Running), Some(9), None)));
        assert_eq!(
            (running.state.as_str(), running.instance_id),
            ("running", Some(9))
        );
    }

    #[test]
    fn a_participant_summary_is_the_shared_state_or_mixed() {
        let of = |states: &[&str]| {
            let instances: Vec<SeatInstance> = states
                .iter()
                .map(|s| SeatInstance {
                    droplet_id: 1,
                    instance_id: None,
                    slug: None,
                    state: (*s).to_owned(),
                    error: None,
                })
                .collect();
            summary(&instances)
        };
        assert_eq!(of(&[]), "not_started");
        assert_eq!(of(&["running", "running"]), "running");
        assert_eq!(of(&["running", "stopped"]), "mixed");
    }
}

//! Who may reach an instance: its owner, and principals holding `edit_instances` over the
//! owner's tenant. Everyone else — even a logged-in user who guessed the host name — is refused,
//! as the Python version's missing per-instance check must never come back.
//!
//! The instances API is decided here too: lists (one's own; everyone's in scope with
//! `view_instances`), launches (droplets granted to one of the principal's groups, within the
//! orchestrator's quotas), start, stop and delete (the owner, or `edit_instances` over the
//! owner's tenant). An instance the principal may not see is `NotFound`, whatever the reason.

use std::sync::Arc;
use std::time::Duration;

use super::{Access, Page, PageRequest, Scope};
use crate::auth::Via;
use crate::error::{AdminError, Result};
use crate::orchestrator::{Actor, LaunchOptions, Orchestrator};
use crate::store::{Droplet, Instance, InstanceFilter, InstanceRow, InstanceStatus};

impl Access<'_> {
    /// The instance behind `slug`, if the principal may use it. Missing or deleted instances
    /// are `NotFound`; someone else's is `Forbidden` (the host name is no secret, the content is).
    pub async fn usable_instance(&self, slug: &str) -> Result<Instance> {
        let instance = self.store().get_instance_by_slug(slug).await?;
        self.usable(instance).await
    }

    /// [`Self::usable_instance`] by the instance's primary key (the viewer page's
    /// `/droplet/{id}`), with the same refusals.
    pub async fn usable_instance_by_id(&self, id: i64) -> Result<Instance> {
        let instance = self.store().get_instance(id).await?;
        self.usable(instance).await
    }

    async fn usable(&self, instance: Option<Instance>) -> Result<Instance> {
        let instance = instance
            .filter(|i| !matches!(i.status, InstanceStatus::Gone | InstanceStatus::Destroying))
            .ok_or(AdminError::NotFound("instance"))?;
        if instance.user_id == self.principal.user.id {
            return Ok(instance);
        }
        let owner = self
            .store()
            .get_user(instance.user_id)
            .await?
            .ok_or(AdminError::NotFound("instance"))?;
        if Scope::others_instances(self.rights(), self.own_tenant())
            .is_some_and(|scope| scope.admits(owner.tenant_id))
        {
            return Ok(instance);
        }
        Err(AdminError::Forbidden(
            "this instance belongs to another user",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The instances API: list, launch, start, stop, delete.
// ---------------------------------------------------------------------------------------------

/// How long a start request waits for the start to finish before it answers `202 Accepted`:
/// quick outcomes (already running, a refusal, an external host) come back as such.
const START_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Filters of an instance list (`?status=&user_id=&droplet_id=&q=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    pub status: Option<InstanceStatus>,
    pub user_id: Option<i64>,
    pub droplet_id: Option<i64>,
    pub text: Option<String>,
}

/// What a start request came to.
#[derive(Debug)]
pub enum Started {
    /// Running now.
    Running(InstanceRow),
    /// Under way in the background; the row says how far.
    Pending(InstanceRow),
}

/// Whose usage figures the principal sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsScope {
    /// Their own instances'.
    pub user_id: i64,
    /// The host's as well (`view_instances`).
    pub host: bool,
}

impl Access<'_> {
    /// The principal's own instances (never `gone` ones unless asked by status), newest first.
    pub async fn list_my_instances(
        &self,
        query: InstanceQuery,
        page: PageRequest,
    ) -> Result<Page<InstanceRow>> {
        let filter = InstanceFilter {
            tenant_id: None,
            user_id: Some(self.principal.user.id),
            droplet_id: query.droplet_id,
            status: query.status,
            text: query.text,
        };
        let found = self
            .store()
            .page_instance_rows(&filter, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// `view_instances`. Everyone's instances in the principal's tenant (every tenant with
    /// `view_tenants`), filtered.
    pub async fn list_all_instances(
        &self,
        query: InstanceQuery,
        page: PageRequest,
    ) -> Result<Page<InstanceRow>> {
        if !self.rights().view_instances {
            return Err(AdminError::Forbidden("this needs the view_instances right"));
        }
        let filter = InstanceFilter {
            tenant_id: self.read_scope().list_filter(None)?,
            user_id: query.user_id,
            droplet_id: query.droplet_id,
            status: query.status,
            text: query.text,
        };
        let found = self
            .store()
            .page_instance_rows(&filter, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// Whether the principal may see `row`: their own, or anyone's in their read scope with
    /// `view_instances` or `edit_instances`.
    pub fn may_see_instance(&self, row: &InstanceRow) -> bool {
        let p = self.rights();
        row.instance.user_id == self.principal.user.id
            || ((p.view_instances || p.edit_instances) && self.read_scope().admits(row.tenant_id))
    }

    /// Whether the principal may start, stop or delete `row`: their own, or anyone's in their
    /// write scope with `edit_instances` (the rule of [`Self::usable_instance`]).
    fn may_change_instance(&self, row: &InstanceRow) -> bool {
        row.instance.user_id == self.principal.user.id
            || Scope::others_instances(self.rights(), self.own_tenant())
                .is_some_and(|scope| scope.admits(row.tenant_id))
    }

    /// One instance the principal may see. Missing, `gone` and invisible ones are all
    /// `NotFound`, so ids reveal nothing.
    pub async fn get_instance_row(&self, id: i64) -> Result<InstanceRow> {
        self.store()
            .instance_row(id)
            .await?
            .filter(|row| row.instance.status != InstanceStatus::Gone && self.may_see_instance(row))
            .ok_or(AdminError::NotFound("instance"))
    }

    /// One instance the principal may change: `NotFound` as in [`Self::get_instance_row`],
    /// `Forbidden` when they may only look at it.
    async fn changeable_instance_row(&self, id: i64) -> Result<InstanceRow> {
        let row = self.get_instance_row(id).await?;
        if self.may_change_instance(&row) {
            Ok(row)
        } else {
            Err(AdminError::Forbidden(
                "changing another user's instance needs the edit_instances right",
            ))
        }
    }

    /// The droplets the principal may launch: active and granted to one of their groups. The
    /// catalogue of the seed's `GET /api/droplets`.
    pub async fn launchable_droplets(&self) -> Result<Vec<Droplet>> {
        self.store()
            .list_droplets_for_user(self.principal.user.id)
            .await
    }

    /// Launches `droplet_id` for the principal without waiting for its container (see
    /// [`Orchestrator::launch_in_background`]): a droplet they may not launch is `NotFound`,
    /// quotas and capacity are the orchestrator's. Audited as `instance.launch`.
    pub async fn launch_instance(
        &self,
        orchestrator: &Arc<Orchestrator>,
        droplet_id: i64,
        options: LaunchOptions,
        now: i64,
    ) -> Result<InstanceRow> {
        let droplet = self
            .launchable_droplets()
            .await?
            .into_iter()
            .find(|d| d.id == droplet_id)
            .ok_or(AdminError::NotFound("droplet"))?;
        let instance = orchestrator
            .launch_in_background(&self.principal.user, &droplet, &options)
            .await?;
        self.audit(
            "instance.launch",
            "instance",
            instance.id,
            serde_json::json!({
                "slug": instance.slug,
                "droplet_id": droplet.id,
                "droplet_name": droplet.name,
                "resolution": options.resolution.map(|r| r.to_string()),
            }),
            now,
        )
        .await;
        // As admitted: the background task may already have moved it on, which the event
        // stream reports.
        Ok(InstanceRow {
            instance,
            droplet_name: droplet.name,
            droplet_type: droplet.droplet_type,
            username: self.principal.user.username.clone(),
            tenant_id: self.principal.user.tenant_id,
        })
    }

    /// Starts a stopped (or failed) instance. Waits a moment for the outcome; a start that
    /// takes longer goes on in the background ([`Started::Pending`]) and ends `running` or
    /// `error` with the reason.
    pub async fn start_instance(
        &self,
        orchestrator: &Arc<Orchestrator>,
        id: i64,
        now: i64,
    ) -> Result<Started> {
        let row = self.changeable_instance_row(id).await?;
        match row.instance.status {
            InstanceStatus::Running => return Ok(Started::Running(row)),
            InstanceStatus::Stopped | InstanceStatus::Error => {}
            other => {
                return Err(AdminError::Conflict(format!(
                    "the instance is {other}; it cannot be started now"
                )));
            }
        }
        let actor = Actor::user(&self.principal.user);
        let task = {
            let orchestrator = Arc::clone(orchestrator);
            tokio::spawn(async move { orchestrator.start(id, &actor).await })
        };
        self.audit(
            "instance.start",
            "instance",
            id,
            serde_json::json!({"slug": row.instance.slug, "owner_id": row.instance.user_id}),
            now,
        )
        .await;
        let mut task = task;
        match tokio::time::timeout(START_ANSWER_WAIT, &mut task).await {
            Ok(Ok(Ok(_))) => Ok(Started::Running(self.get_instance_row(id).await?)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => Err(AdminError::Engine(format!("the start task failed: {join}"))),
            // Still starting: the task goes on by itself.
            Err(_) => Ok(Started::Pending(self.get_instance_row(id).await?)),
        }
    }

    /// Stops an instance (it can be started again). Audited as `instance.stop`.
    pub async fn stop_instance(
        &self,
        orchestrator: &Orchestrator,
        id: i64,
        now: i64,
    ) -> Result<InstanceRow> {
        let row = self.changeable_instance_row(id).await?;
        orchestrator
            .stop(id, &Actor::user(&self.principal.user))
            .await?;
        self.audit(
            "instance.stop",
            "instance",
            id,
            serde_json::json!({"slug": row.instance.slug, "owner_id": row.instance.user_id}),
            now,
        )
        .await;
        self.get_instance_row(id).await
    }

    /// Deletes an instance: its container goes, its row stays as `gone` for history (the
    /// profile volume stays too). Audited as `instance.delete`.
    pub async fn delete_instance(
        &self,
        orchestrator: &Orchestrator,
        id: i64,
        now: i64,
    ) -> Result<()> {
        let row = self.changeable_instance_row(id).await?;
        orchestrator
            .destroy(id, &Actor::user(&self.principal.user))
            .await?;
        self.audit(
            "instance.delete",
            "instance",
            id,
            serde_json::json!({"slug": row.instance.slug, "owner_id": row.instance.user_id}),
            now,
        )
        .await;
        Ok(())
    }

    /// Whose usage figures the principal sees: their own instances', and the host's with
    /// `view_instances`.
    pub fn stats_scope(&self) -> StatsScope {
        StatsScope {
            user_id: self.principal.user.id,
            host: self.rights().view_instances,
        }
    }

    /// What an event stream of the principal's shows: their own instances, or with
    /// `all` (needs `view_instances`) every instance they may see. Returns the list filter.
    pub fn event_filter(&self, all: bool) -> Result<InstanceFilter> {
        if !all {
            return Ok(InstanceFilter {
                user_id: Some(self.principal.user.id),
                ..InstanceFilter::default()
            });
        }
        if !self.rights().view_instances {
            return Err(AdminError::Forbidden("this needs the view_instances right"));
        }
        Ok(InstanceFilter {
            tenant_id: self.read_scope().list_filter(None)?,
            ..InstanceFilter::default()
        })
    }

    /// Whether the principal's session or API key still holds (the event stream ends when it
    /// does not): not revoked, not expired, the user not disabled.
    pub async fn still_signed_in(&self, now: i64) -> Result<bool> {
        match &self.principal.via {
            Via::Session { id_hash } => Ok(self
                .store()
                .get_session(id_hash)
                .await?
                .is_some_and(|s| s.is_active(now))),
            Via::ApiKey { key_id } => Ok(self
                .store()
                .list_api_keys_for_user(self.principal.user.id)
                .await?
                .iter()
                .any(|k| k.id == *key_id && k.is_active(now))),
        }
    }
}

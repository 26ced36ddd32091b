//! `flowcase demo`: fills an empty installation with sample tenants, groups, users, droplets
//! and a workshop, so a first visit shows a living dashboard (what the Python version's
//! `create_test_droplets/workshops/tenants` scripts did).
//!
//! It refuses an installation that already holds data (anything beyond what the first start
//! creates), changing nothing, unless `--force`. Every object is found by name before it is
//! created, so a forced second run adds only what is missing and never duplicates, and an
//! existing account keeps its password. Passwords of the accounts it creates are printed once.
//! The droplets' images are not pulled: the output says which ones the engine lacks and the
//! command that pulls each.

use std::time::Duration;

use anyhow::Context;
use flowcase_admin::accounts::{self, bootstrap};
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::engine::Engine;
use flowcase_admin::store::{
    Droplet, DropletType, Group, NewAuditEntry, NewDroplet, NewGroup, NewUser, NewWorkshop,
    Permissions, Store, TargetKind, Tenant, User, WorkshopStatus, now_millis,
};
use flowcase_config::Config;

/// How long one image check may take before the engine is reported unreachable.
const ENGINE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Name of the demo workshop.
pub const WORKSHOP_NAME: &str = "Web development 101";

struct GroupSpec {
    tenant: &'static str,
    name: &'static str,
    description: &'static str,
    rights: &'static [&'static str],
}

struct UserSpec {
    tenant: &'static str,
    username: &'static str,
    display_name: &'static str,
    groups: &'static [&'static str],
}

struct DropletSpec {
    tenant: &'static str,
    name: &'static str,
    description: &'static str,
    image: &'static str,
    port: u16,
    memory_mb: i64,
    /// Groups (of the droplet's tenant) that may launch it.
    groups: &'static [&'static str],
}

const TENANTS: &[&str] = &["Acme Corp", "Globex University"];

const GROUPS: &[GroupSpec] = &[
    GroupSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        name: "Developers",
        description: "Engineers: the development tools",
        rights: &[],
    },
    GroupSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        name: "Trainers",
        description: "Run workshops and watch their participants",
        rights: &[
            "admin_panel",
            "view_users",
            "view_groups",
            "view_droplets",
            "view_instances",
            "view_workshops",
            "edit_workshops",
        ],
    },
    GroupSpec {
        tenant: "Acme Corp",
        name: "Acme Admins",
        description: "Administrators of the Acme Corp tenant",
        rights: &[
            "admin_panel",
            "view_users",
            "edit_users",
            "view_groups",
            "edit_groups",
            "view_droplets",
            "edit_droplets",
            "view_instances",
            "edit_instances",
            "view_workshops",
            "edit_workshops",
        ],
    },
    GroupSpec {
        tenant: "Acme Corp",
        name: "Acme Staff",
        description: "Everyone at Acme Corp",
        rights: &[],
    },
    GroupSpec {
        tenant: "Globex University",
        name: "Students",
        description: "Students of Globex University",
        rights: &[],
    },
];

const USERS: &[UserSpec] = &[
    UserSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        username: "alice",
        display_name: "Alice Martin",
        groups: &[bootstrap::USER_GROUP_NAME, "Developers"],
    },
    UserSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        username: "bob",
        display_name: "Bob Trainer",
        groups: &[bootstrap::USER_GROUP_NAME, "Trainers"],
    },
    UserSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        username: "carol",
        display_name: "Carol Student",
        groups: &[bootstrap::USER_GROUP_NAME],
    },
    UserSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        username: "dave",
        display_name: "Dave Student",
        groups: &[bootstrap::USER_GROUP_NAME],
    },
    UserSpec {
        tenant: "Acme Corp",
        username: "erin",
        display_name: "Erin (Acme admin)",
        groups: &["Acme Admins", "Acme Staff"],
    },
    UserSpec {
        tenant: "Acme Corp",
        username: "frank",
        display_name: "Frank (Acme)",
        groups: &["Acme Staff"],
    },
    UserSpec {
        tenant: "Globex University",
        username: "grace",
        display_name: "Grace (Globex)",
        groups: &["Students"],
    },
];

const DROPLETS: &[DropletSpec] = &[
    DropletSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        name: "Whoami",
        description: "A tiny web app that echoes the request: the quickest first launch",
        image: "traefik/whoami:v1.10",
        port: 80,
        memory_mb: 64,
        groups: &[bootstrap::USER_GROUP_NAME],
    },
    DropletSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        name: "Static site",
        description: "nginx serving its welcome page",
        image: "nginx:1.27-alpine",
        port: 80,
        memory_mb: 128,
        groups: &[bootstrap::USER_GROUP_NAME],
    },
    DropletSpec {
        tenant: bootstrap::DEFAULT_TENANT_NAME,
        name: "HTTP playground",
        description: "httpbin: try requests, headers and status codes",
        image: "mccutchen/go-httpbin:v2.15.0",
        port: 8080,
        memory_mb: 64,
        groups: &["Developers"],
    },
    DropletSpec {
        tenant: "Acme Corp",
        name: "Acme Wiki",
        description: "The company wiki",
        image: "nginx:1.27-alpine",
        port: 80,
        memory_mb: 128,
        groups: &["Acme Staff"],
    },
    DropletSpec {
        tenant: "Globex University",
        name: "Lab notebook",
        description: "A web page per student",
        image: "traefik/whoami:v1.10",
        port: 80,
        memory_mb: 64,
        groups: &["Students"],
    },
];

/// The workshop: its template and participants, all of the default tenant.
const WORKSHOP_DROPLETS: &[&str] = &["Whoami", "Static site"];
const WORKSHOP_PARTICIPANTS: &[&str] = &["alice", "carol", "dave"];

pub fn run(config: Config, force: bool) -> anyhow::Result<()> {
    crate::cli::block_on(async move {
        flowcase_admin::secrets::create_private_dir(&config.server.data_dir).with_context(
            || {
                format!(
                    "cannot create data directory {}",
                    config.server.data_dir.display()
                )
            },
        )?;
        let store = Store::open(&config)
            .await
            .context("cannot open the database")?;
        let result = fill(&config, &store, force).await;
        store.close().await;
        result
    })
}

/// What the installation holds beyond the first start's objects, or `None` when it is empty.
async fn existing_data(store: &Store) -> anyhow::Result<Option<String>> {
    let c = store.counts(None).await?;
    let instances: i64 = c.instances.values().sum();
    // The first start makes one tenant, the Admin and User groups and the administrator.
    let extra = [
        (c.tenants - 1, "tenant"),
        (c.users - 1, "user"),
        (c.groups - 2, "group"),
        (c.droplets, "droplet"),
        (c.workshops, "workshop"),
        (instances, "instance"),
    ];
    let found: Vec<String> = extra
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

async fn fill(config: &Config, store: &Store, force: bool) -> anyhow::Result<()> {
    let now = now_millis();
    if let Some(existing) = existing_data(store).await? {
        if !force {
            anyhow::bail!(
                "this installation already holds data ({existing}); `flowcase demo` only fills \
                 an empty one, and nothing was changed. Run `flowcase demo --force` to add the \
                 demo objects anyway (objects with the demo's names are kept as they are)"
            );
        }
        println!("The installation holds data ({existing}); --force: adding what is missing.\n");
    }
    // What the first start of `serve` would create, when the demo comes first.
    let admin = accounts::bootstrap_admin(store, &config.server.data_dir, now).await?;
    if let Some(admin) = &admin {
        println!(
            "Created the administrator account: {} / {} (saved in {})\n",
            admin.username,
            admin.password,
            admin.credentials_file.display()
        );
    }

    let mut tenants = vec![
        store
            .default_tenant()
            .await?
            .context("the database has no default tenant")?,
    ];
    for name in TENANTS {
        tenants.push(tenant(store, name, now).await?);
    }
    let tenant_id = |name: &str| -> anyhow::Result<i64> {
        tenants
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.id)
            .with_context(|| format!("no tenant {name}"))
    };

    println!(
        "Tenants: {}",
        tenants
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for spec in GROUPS {
        group(store, tenant_id(spec.tenant)?, spec, now).await?;
    }

    println!("\nUsers (passwords are shown this once: note them now):");
    println!(
        "  {:<18} {:<10} {:<28} groups",
        "tenant", "username", "password"
    );
    let mut users: Vec<User> = Vec::new();
    for spec in USERS {
        let tenant = tenant_id(spec.tenant)?;
        let (user, password) = user(store, tenant, spec, now).await?;
        println!(
            "  {:<18} {:<10} {:<28} {}",
            spec.tenant,
            user.username,
            password.as_deref().unwrap_or("(exists, unchanged)"),
            spec.groups.join(", ")
        );
        users.push(user);
    }

    println!("\nDroplets:");
    let engine = DockerEngine::connect(&config.docker.host);
    let mut droplets: Vec<Droplet> = Vec::new();
    let mut to_pull: Vec<&str> = Vec::new();
    for spec in DROPLETS {
        let tenant = tenant_id(spec.tenant)?;
        let droplet = droplet(store, tenant, spec, now).await?;
        let presence = match &engine {
            Ok(engine) => image_presence(engine, spec.image).await,
            Err(e) => format!("not checked (no Docker client: {e})"),
        };
        if presence.starts_with("MUST BE PULLED") {
            to_pull.push(spec.name);
        }
        println!("  {:<16} http  {:<30} {presence}", droplet.name, spec.image);
        droplets.push(droplet);
    }
    if !to_pull.is_empty() {
        println!("\n  Pull the missing images before launching them:");
        for name in &to_pull {
            println!("    flowcase droplet pull {name:?}");
        }
    }

    let default_tenant = tenant_id(bootstrap::DEFAULT_TENANT_NAME)?;
    let template: Vec<i64> = droplets
        .iter()
        .filter(|d| d.tenant_id == default_tenant && WORKSHOP_DROPLETS.contains(&d.name.as_str()))
        .map(|d| d.id)
        .collect();
    let participants: Vec<i64> = users
        .iter()
        .filter(|u| {
            u.tenant_id == default_tenant && WORKSHOP_PARTICIPANTS.contains(&u.username.as_str())
        })
        .map(|u| u.id)
        .collect();
    let workshop = workshop(store, default_tenant, &template, &participants, now).await?;
    println!(
        "\nWorkshop: {:?} (id {}), {} participants ({}), droplets {}; trainer bob starts it \
         from the admin section or with POST /api/v1/workshops/{}/start",
        workshop.name,
        workshop.id,
        participants.len(),
        WORKSHOP_PARTICIPANTS.join(", "),
        WORKSHOP_DROPLETS.join(" and "),
        workshop.id
    );

    let entry = NewAuditEntry {
        actor_name: Some("command line".into()),
        action: "demo.create".into(),
        details: serde_json::json!({
            "tenants": TENANTS.len(),
            "users": USERS.len(),
            "droplets": DROPLETS.len(),
            "workshop": workshop.id,
        }),
        ..NewAuditEntry::default()
    };
    store.append_audit(&entry, now).await?;
    println!(
        "\nDone. Sign in at {} with one of the accounts above.",
        config.server.public_origin()
    );
    Ok(())
}

async fn tenant(store: &Store, name: &str, now: i64) -> anyhow::Result<Tenant> {
    if let Some(existing) = store
        .list_tenants()
        .await?
        .into_iter()
        .find(|t| t.name == name)
    {
        return Ok(existing);
    }
    Ok(store.create_tenant(name, false, now).await?)
}

async fn group(store: &Store, tenant_id: i64, spec: &GroupSpec, now: i64) -> anyhow::Result<Group> {
    if let Some(existing) = store.find_group_by_name(tenant_id, spec.name).await? {
        return Ok(existing);
    }
    let mut permissions = Permissions::default();
    for right in spec.rights {
        anyhow::ensure!(permissions.set(right, true), "unknown right {right}");
    }
    Ok(store
        .create_group(
            &NewGroup {
                tenant_id,
                name: spec.name.to_owned(),
                description: spec.description.to_owned(),
                permissions,
            },
            now,
        )
        .await?)
}

/// The account, and its password when this run created it.
async fn user(
    store: &Store,
    tenant_id: i64,
    spec: &UserSpec,
    now: i64,
) -> anyhow::Result<(User, Option<String>)> {
    if let Some(existing) = store.find_user_by_login(spec.username).await? {
        return Ok((existing, None));
    }
    let password = accounts::generate_password();
    let user = store
        .create_user(
            &NewUser {
                tenant_id,
                username: spec.username.to_owned(),
                display_name: spec.display_name.to_owned(),
                password_hash: Some(accounts::hash_password(&password)?),
                ..NewUser::default()
            },
            now,
        )
        .await?;
    for name in spec.groups {
        let group = store
            .find_group_by_name(tenant_id, name)
            .await?
            .with_context(|| format!("no group {name} in the tenant of {}", spec.username))?;
        store.add_member(user.id, group.id).await?;
    }
    Ok((user, Some(password)))
}

async fn droplet(
    store: &Store,
    tenant_id: i64,
    spec: &DropletSpec,
    now: i64,
) -> anyhow::Result<Droplet> {
    if let Some(existing) = store
        .list_droplets()
        .await?
        .into_iter()
        .find(|d| d.tenant_id == tenant_id && d.name == spec.name)
    {
        return Ok(existing);
    }
    let mut new = NewDroplet::new(
        tenant_id,
        spec.name,
        DropletType::Http,
        TargetKind::Container,
    );
    new.description = spec.description.to_owned();
    new.image = Some(spec.image.to_owned());
    new.ports = vec![spec.port];
    new.memory_mb = Some(spec.memory_mb);
    new.cpu_millicores = Some(500);
    let droplet = store.create_droplet(&new, now).await?;
    for name in spec.groups {
        let group = store
            .find_group_by_name(tenant_id, name)
            .await?
            .with_context(|| format!("no group {name} for droplet {}", spec.name))?;
        store.grant_droplet(droplet.id, group.id).await?;
    }
    Ok(droplet)
}

async fn workshop(
    store: &Store,
    tenant_id: i64,
    droplets: &[i64],
    participants: &[i64],
    now: i64,
) -> anyhow::Result<flowcase_admin::store::Workshop> {
    let (existing, _) = store.page_workshops(Some(tenant_id), 1000, 0).await?;
    if let Some(found) = existing.into_iter().find(|w| w.name == WORKSHOP_NAME) {
        return Ok(found);
    }
    // Tomorrow, for a working day.
    let starts_at = now + DAY_MS;
    let workshop = store
        .create_workshop(
            &NewWorkshop {
                tenant_id,
                group_id: None,
                name: WORKSHOP_NAME.to_owned(),
                description: "Build and publish a first web page; each participant gets \
                              their own web server"
                    .to_owned(),
                starts_at,
                ends_at: starts_at + DAY_MS / 3,
                status: WorkshopStatus::Scheduled,
            },
            now,
        )
        .await?;
    store.set_workshop_droplets(workshop.id, droplets).await?;
    store
        .set_participants(workshop.id, participants, now)
        .await?;
    Ok(workshop)
}

/// Whether the engine has `image`, in words for the listing.
async fn image_presence(engine: &DockerEngine, image: &str) -> String {
    match tokio::time::timeout(ENGINE_CHECK_TIMEOUT, engine.image_present(image)).await {
        Ok(Ok(true)) => "present".into(),
        Ok(Ok(false)) => "MUST BE PULLED (not on the engine)".into(),
        Ok(Err(e)) => format!("not checked (Docker: {e})"),
        Err(_) => "not checked (Docker did not answer)".into(),
    }
}

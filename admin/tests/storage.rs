//! Storage suite: every scenario below runs twice, against a fresh SQLite file in a temporary
//! directory (`sqlite::<name>`) and against a fresh PostgreSQL database (`postgres::<name>`).
//!
//! PostgreSQL comes from `FLOWCASE_TEST_POSTGRES_URL` (e.g.
//! `postgres://flowcase:flowcase@127.0.0.1:5432/flowcase_test`); the role must be allowed to
//! `CREATE DATABASE`. Each test creates its own `flowcase_t_<random>` database through the
//! server's `postgres` maintenance database and drops it afterwards, so tests run in parallel.
//! Without the variable the PostgreSQL tests fail on purpose: a silently skipped backend is an
//! untested backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use flowcase_admin::accounts::bootstrap::{
    ADMIN_GROUP_NAME, ADMIN_USERNAME, CREDENTIALS_FILE, DEFAULT_TENANT_NAME, USER_GROUP_NAME,
};
use flowcase_admin::accounts::{bootstrap_admin, hash_password, verify_password};
use flowcase_admin::store::users::UserFields;
use flowcase_admin::store::{
    Backend, Clipboard, DropletType, InstanceStatus, NewApiKey, NewAuditEntry, NewDroplet,
    NewGroup, NewInstance, NewSession, NewUser, NewWorkshop, Permissions, TargetKind, Tenant, User,
    WorkshopStatus,
};
use flowcase_admin::{AdminError, Store};
use serde_json::json;
use sqlx::{Connection, Executor};

const PG_ENV: &str = "FLOWCASE_TEST_POSTGRES_URL";

/// An arbitrary "now" (2023-11-14), so expected timestamps are plain numbers.
const T0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A freshly migrated database plus a scratch directory, torn down on drop.
struct TestDb {
    store: Store,
    url: String,
    dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A missing parent directory: connect must create it.
        let url = format!("sqlite://{}/nested/flowcase.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        Self {
            store,
            url,
            dir,
            _pg: None,
        }
    }

    async fn postgres() -> Self {
        let base = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set. The storage suite also runs against PostgreSQL: set it to a \
                 server URL whose role may CREATE DATABASE, e.g. \
                 {PG_ENV}=postgres://flowcase:flowcase@127.0.0.1:5432/flowcase_test \
                 (or run scripts/test, which sets it up)"
            )
        });
        let name = format!("flowcase_t_{:016x}", rand::random::<u64>());
        let admin_url = with_database(&base, "postgres");
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL given by {PG_ENV}: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        conn.close().await.ok();
        let scratch = PgScratch { admin_url, name };
        let url = with_database(&base, &scratch.name);
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        Self {
            store,
            url,
            dir: tempfile::tempdir().unwrap(),
            _pg: Some(scratch),
        }
    }
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..path_start])
}

/// A per-test PostgreSQL database, dropped (best effort) when the test ends, pass or fail.
struct PgScratch {
    admin_url: String,
    name: String,
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be unwinding: use a private one.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(sql)).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// Defines `sqlite::<test>` and `postgres::<test>` for each scenario function.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )+
        }
    };
}

on_both_backends!(
    migrations_apply_once_and_reconnect_cleanly,
    tenants_crud_and_single_default,
    users_crud_and_unique_conflicts,
    login_lookup_is_case_insensitive,
    groups_memberships_and_permission_union,
    users_page_by_tenant_and_update,
    users_search_by_name_email_and_display_name,
    groups_page_update_and_replace_memberships,
    tenants_get_and_page,
    every_permission_flag_round_trips,
    droplets_round_trip_with_json_blob_and_access,
    droplets_update_and_delete_with_their_history,
    instances_round_trip_every_status,
    sessions_expire_touch_and_revoke,
    api_keys_find_touch_and_revoke,
    audit_is_newest_first_pages_and_prunes,
    workshops_participants_and_droplets,
    on_delete_rules,
    values_survive_the_any_driver,
    bootstrap_creates_the_admin_once,
    bootstrap_does_nothing_when_users_exist,
    bootstrap_replaces_a_stale_credentials_file,
    bootstrap_reuses_surviving_groups,
    concurrent_bootstraps_create_one_admin,
    bootstrap_yields_to_a_concurrent_winner,
    tunnel_tokens_are_claimed_once,
    clipboard_restrictions_of_any_group_apply,
    app_codes_are_claimed_once_and_pruned_after_expiry,
    workshop_templates_seats_and_launch_claims,
    audit_filters_and_tenant_scope,
    counts_by_tenant_and_server_version,
    the_installation_id_is_made_once_and_kept,
    sessions_used_through_instances_stay_alive_and_idle_ones_end,
);

async fn sessions_used_through_instances_stay_alive_and_idle_ones_end(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let session = |id: &str, idle: i64, remember: bool| NewSession {
        id: id.to_owned(),
        user_id: alice.id,
        idle_expires_at: T0 + idle,
        absolute_expires_at: T0 + 10_000,
        remember,
        client_addr: None,
        user_agent: None,
    };
    for new in [
        session("used", 1_000, false),
        session("near-end", 1_000, false),
        session("unused", 1_000, false),
        session("remembered", 10_000, true),
        session("already-idle", 100, false),
    ] {
        db.store.create_session(&new, T0).await.unwrap();
    }
    let used = |id: &str, at: i64| (id.to_owned(), at);
    let kept = db
        .store
        .keep_sessions_alive(
            &[
                used("used", T0 + 500),
                used("near-end", T0 + 9_500),
                used("remembered", T0 + 500),
                used("already-idle", T0 + 500),
                used("no-such-session", T0 + 500),
            ],
            1_000,
        )
        .await
        .unwrap();
    // "near-end" was idle at T0 + 1 000 already, used at 9 500: not revived.
    assert_eq!(kept, 1);
    let get = |id: &'static str| async move { db.store.get_session(id).await.unwrap().unwrap() };
    let s = get("used").await;
    assert_eq!((s.last_seen_at, s.idle_expires_at), (T0 + 500, T0 + 1_500));
    assert_eq!(get("remembered").await.idle_expires_at, T0 + 10_000);
    assert_eq!(get("already-idle").await.idle_expires_at, T0 + 100);
    // Renewed within the absolute end.
    db.store
        .keep_sessions_alive(&[used("used", T0 + 1_400)], 9_000)
        .await
        .unwrap();
    assert_eq!(get("used").await.idle_expires_at, T0 + 10_000);

    // At T0 + 1 200: "unused", "near-end" and "already-idle" ran out of idle time; "used" and
    // "remembered" did not.
    assert_eq!(db.store.end_idle_sessions(T0 + 1_200).await.unwrap(), 3);
    for id in ["unused", "near-end", "already-idle"] {
        assert_eq!(get(id).await.revoked_at, Some(T0 + 1_200), "{id}");
    }
    for id in ["used", "remembered"] {
        assert_eq!(get(id).await.revoked_at, None, "{id}");
    }
    assert_eq!(
        db.store.end_idle_sessions(T0 + 1_300).await.unwrap(),
        0,
        "once"
    );
}

async fn the_installation_id_is_made_once_and_kept(db: &TestDb) {
    let first = db.store.installation_id().await.unwrap();
    assert!(first.len() >= 32, "{first}");
    assert_eq!(db.store.installation_id().await.unwrap(), first);
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        again.installation_id().await.unwrap(),
        first,
        "another connection"
    );
    again.close().await;
}

async fn app_codes_are_claimed_once_and_pruned_after_expiry(db: &TestDb) {
    let store = &db.store;
    assert!(
        store
            .claim_app_code("code-1", T0 + 60_000, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_app_code("code-1", T0 + 60_000, T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_app_code("code-2", T0 + 60_000, T0 + 2)
            .await
            .unwrap()
    );
    // Once expired, the row is pruned by the next claim (the code itself is refused by then).
    assert!(
        store
            .claim_app_code("code-3", T0 + 200_000, T0 + 100_000)
            .await
            .unwrap()
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM used_app_codes")
        .fetch_one(&sqlx::AnyPool::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(left, 1);
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pattern), other),
        }
    };
}

async fn default_tenant(db: &TestDb) -> Tenant {
    db.store
        .create_tenant(DEFAULT_TENANT_NAME, true, T0)
        .await
        .unwrap()
}

async fn new_user(db: &TestDb, tenant_id: i64, username: &str) -> User {
    db.store
        .create_user(
            &NewUser {
                tenant_id,
                username: username.to_owned(),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap()
}

async fn new_droplet(db: &TestDb, tenant_id: i64, name: &str) -> i64 {
    let new = NewDroplet::new(tenant_id, name, DropletType::Vnc, TargetKind::Container);
    db.store.create_droplet(&new, T0).await.unwrap().id
}

async fn new_instance(db: &TestDb, slug: &str, droplet_id: i64, user_id: i64, now: i64) -> i64 {
    let new = NewInstance {
        slug: slug.to_owned(),
        droplet_id,
        user_id,
        status: InstanceStatus::Requested,
    };
    db.store.create_instance(&new, now).await.unwrap().id
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn migrations_apply_once_and_reconnect_cleanly(db: &TestDb) {
    let tenant = default_tenant(db).await;
    for _ in 0..2 {
        let again = Store::connect(&db.url).await.unwrap();
        again.ping().await.unwrap();
        assert_eq!(again.backend(), db.store.backend());
        assert_eq!(again.list_tenants().await.unwrap(), vec![tenant.clone()]);
        again.close().await;
    }
    let dialect = match db.store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let files = fs::read_dir(format!(
        "{}/migrations/{dialect}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .count();
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(usize::try_from(applied).unwrap(), files);
    raw.close().await;
}

async fn tenants_crud_and_single_default(db: &TestDb) {
    assert_eq!(db.store.default_tenant().await.unwrap(), None);
    let default = default_tenant(db).await;
    assert_eq!(default.name, DEFAULT_TENANT_NAME);
    assert!(default.is_default);
    assert_eq!(default.created_at, T0);
    let other = db.store.create_tenant("Acme", false, T0 + 1).await.unwrap();
    assert!(!other.is_default);

    assert_eq!(
        db.store.default_tenant().await.unwrap(),
        Some(default.clone())
    );
    assert_eq!(
        db.store.list_tenants().await.unwrap(),
        vec![other.clone(), default.clone()]
    );
    assert_err!(
        db.store.create_tenant("Second default", true, T0).await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store.create_tenant("Acme", false, T0).await,
        AdminError::Conflict(_)
    );
}

async fn users_crud_and_unique_conflicts(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned();
    let alice = db
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "Alice".to_owned(),
                email: Some("Alice@Example.org".to_owned()),
                password_hash: Some(hash.clone()),
                display_name: "Alice Liddell".to_owned(),
                external: false,
                disabled: false,
                protected: true,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.email.as_deref(), Some("alice@example.org"));
    assert_eq!(alice.password_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(alice.display_name, "Alice Liddell");
    assert!(alice.protected && !alice.disabled && !alice.external);
    assert_eq!((alice.created_at, alice.updated_at), (T0, T0));
    assert_eq!(
        db.store.get_user(alice.id).await.unwrap(),
        Some(alice.clone())
    );

    // An SSO account: no password, no e-mail; several NULL e-mails may coexist.
    let sso = db
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "bob".to_owned(),
                external: true,
                disabled: true,
                ..NewUser::default()
            },
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!((sso.email.clone(), sso.password_hash.clone()), (None, None));
    assert!(sso.external && sso.disabled && !sso.protected);
    let carol = new_user(db, tenant.id, "carol").await;
    assert_eq!(carol.email, None);

    assert_eq!(db.store.count_users().await.unwrap(), 3);
    let names: Vec<String> = db
        .store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    db.store
        .set_password_hash(sso.id, Some("new-hash"), T0 + 5)
        .await
        .unwrap();
    db.store
        .set_user_disabled(sso.id, false, T0 + 6)
        .await
        .unwrap();
    let sso = db.store.get_user(sso.id).await.unwrap().unwrap();
    assert_eq!(sso.password_hash.as_deref(), Some("new-hash"));
    assert!(!sso.disabled);
    assert_eq!(sso.updated_at, T0 + 6);
    db.store
        .set_user_disabled(sso.id, true, T0 + 7)
        .await
        .unwrap();
    db.store
        .set_password_hash(sso.id, None, T0 + 8)
        .await
        .unwrap();
    let sso = db.store.get_user(sso.id).await.unwrap().unwrap();
    assert!(sso.disabled);
    assert_eq!(sso.password_hash, None);

    // Uniqueness ignores letter case, for usernames and e-mails.
    let dup = |username: &str, email: Option<&str>| NewUser {
        tenant_id: tenant.id,
        username: username.to_owned(),
        email: email.map(str::to_owned),
        ..NewUser::default()
    };
    assert_err!(
        db.store.create_user(&dup("ALICE", None), T0).await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store
            .create_user(&dup("alice2", Some("ALICE@example.ORG")), T0)
            .await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store
            .create_user(
                &NewUser {
                    tenant_id: tenant.id + 1000,
                    ..dup("dave", None)
                },
                T0
            )
            .await,
        AdminError::Reference(_)
    );

    assert_eq!(db.store.get_user(9_999).await.unwrap(), None);
    assert_err!(
        db.store.set_user_disabled(9_999, true, T0).await,
        AdminError::NotFound("user")
    );
    assert_err!(
        db.store.set_password_hash(9_999, None, T0).await,
        AdminError::NotFound("user")
    );
    db.store.delete_user(carol.id).await.unwrap();
    assert_eq!(db.store.get_user(carol.id).await.unwrap(), None);
    assert_err!(
        db.store.delete_user(carol.id).await,
        AdminError::NotFound("user")
    );
    // Ids are not reused after deletion.
    let erin = new_user(db, tenant.id, "erin").await;
    assert!(erin.id > carol.id);
}

async fn login_lookup_is_case_insensitive(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = db
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "Alice".to_owned(),
                email: Some("alice@example.org".to_owned()),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap();
    for login in [
        "alice",
        "ALICE",
        "aLiCe",
        "alice@example.org",
        "Alice@EXAMPLE.org",
    ] {
        let found = db.store.find_user_by_login(login).await.unwrap();
        assert_eq!(found.map(|u| u.id), Some(alice.id), "login {login:?}");
    }
    assert_eq!(db.store.find_user_by_login("alic").await.unwrap(), None);
    assert_eq!(db.store.find_user_by_login("").await.unwrap(), None);

    // A username equal to someone else's e-mail: the username wins.
    let squatter = db
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "mallory".to_owned(),
                email: Some("Bob@example.org".to_owned()),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap();
    let bob = new_user(db, tenant.id, "bob@example.org").await;
    let found = db
        .store
        .find_user_by_login("BOB@example.org")
        .await
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(bob.id));
    let found = db.store.find_user_by_login("mallory").await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(squatter.id));
}

async fn groups_memberships_and_permission_union(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let other_tenant = db.store.create_tenant("Acme", false, T0).await.unwrap();
    let user = new_user(db, tenant.id, "alice").await;
    let loner = new_user(db, tenant.id, "bob").await;

    let viewers = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Viewers".to_owned(),
                description: "look, don't touch".to_owned(),
                permissions: Permissions {
                    admin_panel: true,
                    view_users: true,
                    view_instances: true,
                    ..Permissions::default()
                },
            },
            T0,
        )
        .await
        .unwrap();
    let editors = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Editors".to_owned(),
                permissions: Permissions {
                    edit_users: true,
                    edit_droplets: true,
                    view_users: false,
                    ..Permissions::default()
                },
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(viewers.description, "look, don't touch");
    assert_eq!(
        db.store.get_group(viewers.id).await.unwrap(),
        Some(viewers.clone())
    );
    assert_eq!(
        db.store
            .find_group_by_name(tenant.id, "Editors")
            .await
            .unwrap(),
        Some(editors.clone())
    );
    assert_eq!(
        db.store
            .find_group_by_name(tenant.id, "editors")
            .await
            .unwrap(),
        None
    );

    // Names are unique per tenant only.
    assert_err!(
        db.store
            .create_group(
                &NewGroup {
                    tenant_id: tenant.id,
                    name: "Viewers".to_owned(),
                    ..NewGroup::default()
                },
                T0
            )
            .await,
        AdminError::Conflict(_)
    );
    let elsewhere = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: other_tenant.id,
                name: "Viewers".to_owned(),
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(db.store.list_groups().await.unwrap().len(), 3);
    assert_ne!(elsewhere.id, viewers.id);

    assert_eq!(
        db.store.user_permissions(user.id).await.unwrap(),
        Permissions::default()
    );
    db.store.add_member(user.id, viewers.id).await.unwrap();
    db.store.add_member(user.id, viewers.id).await.unwrap();
    db.store.add_member(user.id, editors.id).await.unwrap();
    let groups: Vec<String> = db
        .store
        .groups_of_user(user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, ["Editors", "Viewers"]);

    let union = db.store.user_permissions(user.id).await.unwrap();
    assert_eq!(
        union,
        Permissions {
            admin_panel: true,
            view_users: true,
            view_instances: true,
            edit_users: true,
            edit_droplets: true,
            ..Permissions::default()
        }
    );
    assert_eq!(
        db.store.user_permissions(loner.id).await.unwrap(),
        Permissions::default()
    );

    assert!(db.store.remove_member(user.id, viewers.id).await.unwrap());
    assert!(!db.store.remove_member(user.id, viewers.id).await.unwrap());
    let union = db.store.user_permissions(user.id).await.unwrap();
    assert!(!union.admin_panel && !union.view_users && union.edit_users);

    db.store
        .set_group_permissions(editors.id, &Permissions::all())
        .await
        .unwrap();
    assert_eq!(
        db.store.user_permissions(user.id).await.unwrap(),
        Permissions::all()
    );
    assert_err!(
        db.store
            .set_group_permissions(9_999, &Permissions::all())
            .await,
        AdminError::NotFound("group")
    );
    assert_err!(
        db.store.add_member(user.id, 9_999).await,
        AdminError::Reference(_)
    );
    assert_err!(
        db.store.add_member(9_999, viewers.id).await,
        AdminError::Reference(_)
    );
}

async fn users_search_by_name_email_and_display_name(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let other = db.store.create_tenant("Acme", false, T0).await.unwrap();
    for (tenant_id, username, email, display) in [
        (
            tenant.id,
            "alice",
            Some("alice@corp.example"),
            "Alice Liddell",
        ),
        (tenant.id, "bob", None, "Robert 100%_sure"),
        (tenant.id, "carol", Some("carol@other.example"), "Carol"),
        (other.id, "dave", Some("dave@corp.example"), "Dave"),
    ] {
        db.store
            .create_user(
                &NewUser {
                    tenant_id,
                    username: username.to_owned(),
                    email: email.map(str::to_owned),
                    display_name: display.to_owned(),
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .unwrap();
    }
    let search = |tenant: Option<i64>, q: &'static str, limit: i64, offset: i64| {
        let store = db.store.clone();
        async move {
            let (users, total) = store.search_users(tenant, q, limit, offset).await.unwrap();
            let names: Vec<String> = users.into_iter().map(|u| u.username).collect();
            (names, total)
        }
    };
    // Username, e-mail and display name, in any letter case; every tenant or one.
    assert_eq!(
        search(None, "CORP", 50, 0).await,
        (vec!["alice".into(), "dave".into()], 2)
    );
    assert_eq!(
        search(Some(tenant.id), "corp", 50, 0).await,
        (vec!["alice".into()], 1)
    );
    assert_eq!(
        search(None, "liddell", 50, 0).await,
        (vec!["alice".into()], 1)
    );
    assert_eq!(
        search(None, " Car ", 50, 0).await,
        (vec!["carol".into()], 1)
    );
    // `%` and `_` are matched as themselves, not as wildcards.
    assert_eq!(search(None, "100%_", 50, 0).await, (vec!["bob".into()], 1));
    assert_eq!(search(None, "%", 50, 0).await, (vec!["bob".into()], 1));
    assert_eq!(search(None, "_", 50, 0).await, (vec!["bob".into()], 1));
    assert_eq!(search(None, "!", 50, 0).await, (vec![], 0));
    // Paged like the list; the total counts every match.
    assert_eq!(
        search(None, "example", 1, 1).await,
        (vec!["carol".into()], 3)
    );
    assert_eq!(search(Some(other.id), "alice", 50, 0).await, (vec![], 0));
}

async fn users_page_by_tenant_and_update(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let other = db.store.create_tenant("Acme", false, T0).await.unwrap();
    let carol = new_user(db, tenant.id, "carol").await;
    let alice = new_user(db, tenant.id, "alice").await;
    let bob = new_user(db, other.id, "bob").await;
    let names = |users: &[User]| users.iter().map(|u| u.username.clone()).collect::<Vec<_>>();

    let (page, total) = db.store.page_users(Some(tenant.id), 50, 0).await.unwrap();
    assert_eq!(
        (names(&page), total),
        (vec!["alice".into(), "carol".into()], 2)
    );
    let (page, total) = db.store.page_users(Some(other.id), 50, 0).await.unwrap();
    assert_eq!((names(&page), total), (vec!["bob".into()], 1));
    let (page, total) = db.store.page_users(None, 2, 1).await.unwrap();
    assert_eq!(
        (names(&page), total),
        (vec!["bob".into(), "carol".into()], 3)
    );
    let (page, total) = db.store.page_users(Some(tenant.id), 1, 5).await.unwrap();
    assert_eq!((page.len(), total), (0, 2));
    let (page, total) = db.store.page_users(Some(9_999), 50, 0).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));

    let fields = UserFields {
        username: "Alicia".to_owned(),
        email: Some("Alicia@Example.ORG".to_owned()),
        display_name: "Alicia L.".to_owned(),
    };
    let updated = db
        .store
        .update_user(alice.id, &fields, T0 + 10)
        .await
        .unwrap();
    assert_eq!(updated.username, "alicia");
    assert_eq!(updated.email.as_deref(), Some("alicia@example.org"));
    assert_eq!(updated.display_name, "Alicia L.");
    assert_eq!((updated.created_at, updated.updated_at), (T0, T0 + 10));
    assert_eq!((updated.id, updated.tenant_id), (alice.id, tenant.id));
    assert_eq!(
        db.store.get_user(alice.id).await.unwrap(),
        Some(updated.clone())
    );

    // Taking somebody else's username or e-mail, in any letter case, is a conflict.
    let taken = UserFields {
        username: "BOB".to_owned(),
        ..fields.clone()
    };
    assert_err!(
        db.store.update_user(alice.id, &taken, T0).await,
        AdminError::Conflict(_)
    );
    let taken = UserFields {
        username: "carol".to_owned(),
        email: None,
        display_name: String::new(),
    };
    assert_err!(
        db.store.update_user(bob.id, &taken, T0).await,
        AdminError::Conflict(_)
    );
    let email_taken = UserFields {
        username: "bob".to_owned(),
        email: Some("ALICIA@example.org".to_owned()),
        display_name: String::new(),
    };
    assert_err!(
        db.store.update_user(bob.id, &email_taken, T0).await,
        AdminError::Conflict(_)
    );
    // Removing the e-mail.
    let cleared = db
        .store
        .update_user(
            alice.id,
            &UserFields {
                email: None,
                ..fields.clone()
            },
            T0 + 11,
        )
        .await
        .unwrap();
    assert_eq!(cleared.email, None);
    assert_err!(
        db.store.update_user(9_999, &fields, T0).await,
        AdminError::NotFound("user")
    );

    let staff = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Staff".to_owned(),
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert!(db.store.users_in_group(staff.id).await.unwrap().is_empty());
    db.store.add_member(carol.id, staff.id).await.unwrap();
    db.store.add_member(alice.id, staff.id).await.unwrap();
    assert_eq!(
        names(&db.store.users_in_group(staff.id).await.unwrap()),
        ["alicia", "carol"]
    );
}

async fn groups_page_update_and_replace_memberships(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let other = db.store.create_tenant("Acme", false, T0).await.unwrap();
    let group = |tenant_id: i64, name: &str, permissions: Permissions| NewGroup {
        tenant_id,
        name: name.to_owned(),
        permissions,
        ..NewGroup::default()
    };
    let viewers = Permissions {
        view_users: true,
        ..Permissions::default()
    };
    let editors = Permissions {
        edit_users: true,
        ..Permissions::default()
    };
    let v = db
        .store
        .create_group(&group(tenant.id, "Viewers", viewers), T0)
        .await
        .unwrap();
    let e = db
        .store
        .create_group(&group(tenant.id, "Editors", editors), T0)
        .await
        .unwrap();
    let x = db
        .store
        .create_group(&group(other.id, "Admin", Permissions::default()), T0)
        .await
        .unwrap();
    let names = |groups: &[flowcase_admin::store::Group]| {
        groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>()
    };

    let (page, total) = db.store.page_groups(Some(tenant.id), 50, 0).await.unwrap();
    assert_eq!(
        (names(&page), total),
        (vec!["Editors".into(), "Viewers".into()], 2)
    );
    let (page, total) = db.store.page_groups(Some(other.id), 50, 0).await.unwrap();
    assert_eq!((names(&page), total), (vec!["Admin".into()], 1));
    // All tenants: by tenant, then name.
    let (page, total) = db.store.page_groups(None, 50, 0).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        page.iter().map(|g| g.id).collect::<Vec<_>>(),
        [e.id, v.id, x.id]
    );
    let (page, total) = db.store.page_groups(None, 1, 1).await.unwrap();
    assert_eq!((names(&page), total), (vec!["Viewers".into()], 3));

    let updated = db
        .store
        .update_group(v.id, "Readers", "read only", &viewers.union(&editors))
        .await
        .unwrap();
    assert_eq!(updated.name, "Readers");
    assert_eq!(updated.description, "read only");
    assert_eq!(updated.permissions, viewers.union(&editors));
    assert_eq!(
        (updated.id, updated.tenant_id, updated.created_at),
        (v.id, tenant.id, T0)
    );
    assert_eq!(
        db.store.get_group(v.id).await.unwrap(),
        Some(updated.clone())
    );
    assert_err!(
        db.store.update_group(v.id, "Editors", "", &viewers).await,
        AdminError::Conflict(_)
    );
    // The same name in another tenant is fine.
    db.store
        .update_group(x.id, "Readers", "", &Permissions::default())
        .await
        .unwrap();
    assert_err!(
        db.store.update_group(9_999, "Ghost", "", &viewers).await,
        AdminError::NotFound("group")
    );

    let alice = new_user(db, tenant.id, "alice").await;
    let ids = |groups: Vec<flowcase_admin::store::Group>| {
        groups.into_iter().map(|g| g.id).collect::<Vec<_>>()
    };
    db.store
        .set_user_groups(alice.id, &[v.id, e.id])
        .await
        .unwrap();
    let mut held = ids(db.store.groups_of_user(alice.id).await.unwrap());
    held.sort_unstable();
    let mut expected = vec![v.id, e.id];
    expected.sort_unstable();
    assert_eq!(held, expected);
    db.store.set_user_groups(alice.id, &[e.id]).await.unwrap();
    assert_eq!(
        ids(db.store.groups_of_user(alice.id).await.unwrap()),
        [e.id]
    );
    assert_eq!(db.store.user_permissions(alice.id).await.unwrap(), editors);
    // An unknown group refuses the whole replacement: the old memberships stay.
    assert_err!(
        db.store.set_user_groups(alice.id, &[v.id, 9_999]).await,
        AdminError::Reference(_)
    );
    assert_eq!(
        ids(db.store.groups_of_user(alice.id).await.unwrap()),
        [e.id]
    );
    assert_err!(
        db.store.set_user_groups(9_999, &[v.id]).await,
        AdminError::Reference(_)
    );
    db.store.set_user_groups(alice.id, &[]).await.unwrap();
    assert!(db.store.groups_of_user(alice.id).await.unwrap().is_empty());
    assert_eq!(
        db.store.user_permissions(alice.id).await.unwrap(),
        Permissions::default()
    );
}

async fn tenants_get_and_page(db: &TestDb) {
    let default = default_tenant(db).await;
    let beta = db.store.create_tenant("Beta", false, T0 + 1).await.unwrap();
    let acme = db.store.create_tenant("Acme", false, T0 + 2).await.unwrap();
    assert_eq!(
        db.store.get_tenant(beta.id).await.unwrap(),
        Some(beta.clone())
    );
    assert_eq!(db.store.get_tenant(9_999).await.unwrap(), None);
    let (page, total) = db.store.page_tenants(2, 0).await.unwrap();
    assert_eq!((page, total), (vec![acme.clone(), beta.clone()], 3));
    let (page, total) = db.store.page_tenants(2, 2).await.unwrap();
    assert_eq!((page, total), (vec![default.clone()], 3));
    let (page, total) = db.store.page_tenants(5, 10).await.unwrap();
    assert_eq!((page, total), (vec![], 3));
}

async fn every_permission_flag_round_trips(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let user = new_user(db, tenant.id, "alice").await;
    let all_off = Permissions::default();
    // One group per flag with only that flag set: catches a column/field mix-up anywhere.
    let mut singles = Vec::new();
    for (i, column) in Permissions::COLUMNS.iter().enumerate() {
        let mut only = serde_json::to_value(all_off).unwrap();
        only[*column] = json!(true);
        let permissions: Permissions = serde_json::from_value(only).unwrap();
        assert_ne!(permissions, all_off, "{column}");
        let group = db
            .store
            .create_group(
                &NewGroup {
                    tenant_id: tenant.id,
                    name: format!("only-{i}"),
                    permissions,
                    ..NewGroup::default()
                },
                T0,
            )
            .await
            .unwrap();
        let stored = db.store.get_group(group.id).await.unwrap().unwrap();
        assert_eq!(stored.permissions, permissions, "{column}");
        singles.push(group.id);
    }
    assert_eq!(db.store.user_permissions(user.id).await.unwrap(), all_off);
    for id in &singles {
        db.store.add_member(user.id, *id).await.unwrap();
    }
    assert_eq!(
        db.store.user_permissions(user.id).await.unwrap(),
        Permissions::all()
    );
}

async fn droplets_round_trip_with_json_blob_and_access(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let mut new = NewDroplet::new(
        tenant.id,
        "Firefox",
        DropletType::Http,
        TargetKind::Container,
    );
    new.description = "Web browser: «quotes», 'single', \"double\", back\\slash".to_owned();
    new.image = Some("flowcase/firefox:latest".to_owned());
    new.registry = Some("ghcr.io".to_owned());
    new.cpu_millicores = Some(1_500);
    new.memory_mb = Some(2048);
    new.ports = vec![3000, 65535];
    new.env = BTreeMap::from([
        ("LANG".to_owned(), "fr_FR.UTF-8".to_owned()),
        ("EMPTY".to_owned(), String::new()),
        ("QUOTE".to_owned(), "say \"hi\"\n".to_owned()),
    ]);
    new.labels = BTreeMap::from([("com.flowcase.kind".to_owned(), "desktop".to_owned())]);
    new.profile_path = Some("/profiles/{user_id}/{droplet_id}".to_owned());
    new.network = Some("flowcase-net".to_owned());
    new.idle_timeout_secs = Some(3_600);
    new.max_lifetime_secs = Some(86_400);
    new.pool_size = 2;
    new.icon = Some("firefox.svg".to_owned());
    let firefox = db.store.create_droplet(&new, T0).await.unwrap();
    assert_eq!(firefox.name, new.name);
    assert_eq!(firefox.description, new.description);
    assert_eq!(firefox.droplet_type, DropletType::Http);
    assert_eq!(firefox.target, TargetKind::Container);
    assert_eq!(firefox.image, new.image);
    assert_eq!(firefox.registry, new.registry);
    assert_eq!(firefox.cpu_millicores, Some(1_500));
    assert_eq!(firefox.memory_mb, Some(2048));
    assert_eq!(firefox.ports, vec![3000, 65535]);
    assert_eq!(firefox.env, new.env);
    assert_eq!(firefox.labels, new.labels);
    assert_eq!(firefox.profile_path, new.profile_path);
    assert_eq!(firefox.network, new.network);
    assert_eq!(firefox.idle_timeout_secs, Some(3_600));
    assert_eq!(firefox.max_lifetime_secs, Some(86_400));
    assert_eq!(firefox.pool_size, 2);
    assert_eq!(firefox.icon, new.icon);
    assert!(firefox.active);
    assert_eq!(firefox.external_host, None);
    assert_eq!(firefox.external_credentials, None);
    assert_eq!((firefox.created_at, firefox.updated_at), (T0, T0));
    assert_eq!(
        db.store.get_droplet(firefox.id).await.unwrap(),
        Some(firefox.clone())
    );

    // An external RDP host with sealed credentials covering every byte value.
    let mut rdp = NewDroplet::new(tenant.id, "Windows", DropletType::Rdp, TargetKind::External);
    rdp.external_host = Some("10.0.0.5".to_owned());
    rdp.external_port = Some(3389);
    rdp.external_username = Some("bob".to_owned());
    rdp.external_credentials = Some((0..=255).collect());
    rdp.active = false;
    let windows = db.store.create_droplet(&rdp, T0).await.unwrap();
    let stored = db.store.get_droplet(windows.id).await.unwrap().unwrap();
    assert_eq!(stored.target, TargetKind::External);
    assert_eq!(stored.external_host.as_deref(), Some("10.0.0.5"));
    assert_eq!(stored.external_port, Some(3389));
    assert_eq!(stored.external_username.as_deref(), Some("bob"));
    assert_eq!(stored.external_credentials, rdp.external_credentials);
    assert_eq!(stored.cpu_millicores, None);
    assert!(stored.ports.is_empty() && stored.env.is_empty() && stored.labels.is_empty());
    assert!(!stored.active);

    for droplet_type in DropletType::ALL {
        let new = NewDroplet::new(
            tenant.id,
            format!("type-{droplet_type}"),
            *droplet_type,
            TargetKind::Container,
        );
        let created = db.store.create_droplet(&new, T0).await.unwrap();
        let stored = db.store.get_droplet(created.id).await.unwrap().unwrap();
        assert_eq!(stored.droplet_type, *droplet_type);
        assert_eq!(
            droplet_type.as_str().parse::<DropletType>().unwrap(),
            *droplet_type
        );
    }
    assert_err!("telnet".parse::<DropletType>(), AdminError::InvalidData(_));

    let active: Vec<i64> = db
        .store
        .list_active_droplets()
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(active.contains(&firefox.id) && !active.contains(&windows.id));
    assert_eq!(db.store.list_droplets().await.unwrap().len(), 6);

    db.store
        .set_droplet_active(firefox.id, false, T0 + 9)
        .await
        .unwrap();
    let hidden = db.store.get_droplet(firefox.id).await.unwrap().unwrap();
    assert!(!hidden.active);
    assert_eq!(hidden.updated_at, T0 + 9);
    db.store
        .set_droplet_active(firefox.id, true, T0 + 10)
        .await
        .unwrap();
    assert!(
        db.store
            .get_droplet(firefox.id)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    assert_err!(
        db.store.set_droplet_active(9_999, true, T0).await,
        AdminError::NotFound("droplet")
    );

    // Access goes through groups; inactive droplets never show.
    let user = new_user(db, tenant.id, "alice").await;
    let group = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Staff".to_owned(),
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert!(
        db.store
            .list_droplets_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );
    db.store.grant_droplet(firefox.id, group.id).await.unwrap();
    db.store.grant_droplet(firefox.id, group.id).await.unwrap();
    db.store.grant_droplet(windows.id, group.id).await.unwrap();
    assert!(
        db.store
            .list_droplets_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );
    db.store.add_member(user.id, group.id).await.unwrap();
    let visible: Vec<i64> = db
        .store
        .list_droplets_for_user(user.id)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(visible, vec![firefox.id]);
    assert_eq!(
        db.store.droplet_group_ids(firefox.id).await.unwrap(),
        vec![group.id]
    );
    assert!(db.store.revoke_droplet(firefox.id, group.id).await.unwrap());
    assert!(!db.store.revoke_droplet(firefox.id, group.id).await.unwrap());
    assert!(
        db.store
            .list_droplets_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );

    assert_err!(
        db.store.create_droplet(&new, T0).await,
        AdminError::Conflict(_)
    );
    let other = db.store.create_tenant("Acme", false, T0).await.unwrap();
    let mut same_name = new.clone();
    same_name.tenant_id = other.id;
    db.store.create_droplet(&same_name, T0).await.unwrap();
    assert_err!(
        db.store.grant_droplet(firefox.id, 9_999).await,
        AdminError::Reference(_)
    );
}

async fn droplets_update_and_delete_with_their_history(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let id = new_droplet(db, tenant.id, "Desktop").await;
    new_droplet(db, tenant.id, "Taken").await;

    // Every definition field is replaced; the tenant and creation time stay.
    let mut changed = NewDroplet::new(
        tenant.id,
        "Desk 2",
        DropletType::Http,
        TargetKind::Container,
    );
    changed.image = Some("a/b:2".to_owned());
    changed.ports = vec![8080];
    changed.env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
    changed.active = false;
    let updated = db.store.update_droplet(id, &changed, T0 + 5).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.droplet_type, updated.active),
        ("Desk 2", DropletType::Http, false)
    );
    assert_eq!((updated.created_at, updated.updated_at), (T0, T0 + 5));
    assert_eq!(updated.env, changed.env);
    changed.name = "Taken".to_owned();
    assert_err!(
        db.store.update_droplet(id, &changed, T0).await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store.update_droplet(999_999, &changed, T0).await,
        AdminError::NotFound("droplet")
    );

    // Grants and credentials are listed for many droplets at once.
    let group = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Launchers".to_owned(),
                description: String::new(),
                permissions: Permissions::default(),
            },
            T0,
        )
        .await
        .unwrap();
    db.store.grant_droplet(id, group.id).await.unwrap();
    assert!(
        db.store
            .droplet_grants()
            .await
            .unwrap()
            .contains(&(id, group.id))
    );
    db.store
        .set_droplet_registry_credentials(id, Some(b"sealed"), T0)
        .await
        .unwrap();
    assert_eq!(
        db.store.droplets_with_registry_credentials().await.unwrap(),
        vec![id]
    );

    // Refused while an instance is not gone; nothing is deleted then.
    let instance = new_instance(db, "d3l-one", id, alice.id, T0).await;
    assert_err!(
        db.store.delete_droplet_and_history(id).await,
        AdminError::Reference(_)
    );
    assert!(db.store.get_instance(instance).await.unwrap().is_some());
    db.store
        .set_instance_status(instance, InstanceStatus::Gone, None, T0 + 9)
        .await
        .unwrap();
    db.store.delete_droplet_and_history(id).await.unwrap();
    assert_eq!(db.store.get_droplet(id).await.unwrap(), None);
    assert_eq!(db.store.get_instance(instance).await.unwrap(), None);
    assert_eq!(
        db.store.droplet_group_ids(id).await.unwrap(),
        Vec::<i64>::new()
    );
    assert_err!(
        db.store.delete_droplet_and_history(id).await,
        AdminError::NotFound("droplet")
    );
}

async fn instances_round_trip_every_status(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let bob = new_user(db, tenant.id, "bob").await;
    let droplet = new_droplet(db, tenant.id, "Desktop").await;

    let first = db
        .store
        .create_instance(
            &NewInstance {
                slug: "k3j5-first".to_owned(),
                droplet_id: droplet,
                user_id: alice.id,
                status: InstanceStatus::Requested,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(first.status, InstanceStatus::Requested);
    assert_eq!((first.droplet_id, first.user_id), (droplet, alice.id));
    assert_eq!(first.created_at, T0);
    assert_eq!(
        (first.started_at, first.stopped_at, first.last_activity_at),
        (None, None, None)
    );
    assert_eq!(
        db.store.get_instance_by_slug("k3j5-first").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        db.store.get_instance(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        db.store.get_instance_by_slug("K3J5-FIRST").await.unwrap(),
        None
    );

    let second = new_instance(db, "k3j5-second", droplet, alice.id, T0 + 10).await;
    let bobs = new_instance(db, "bobs", droplet, bob.id, T0 + 20).await;
    let mine: Vec<i64> = db
        .store
        .list_instances_for_user(alice.id)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(mine, vec![second, first.id]);
    assert_err!(
        db.store
            .create_instance(
                &NewInstance {
                    slug: "bobs".to_owned(),
                    droplet_id: droplet,
                    user_id: alice.id,
                    status: InstanceStatus::Requested,
                },
                T0
            )
            .await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store
            .create_instance(
                &NewInstance {
                    slug: "orphan".to_owned(),
                    droplet_id: 9_999,
                    user_id: alice.id,
                    status: InstanceStatus::Requested,
                },
                T0
            )
            .await,
        AdminError::Reference(_)
    );

    // Every state, with the timestamp rules: running stamps started_at and clears stopped_at,
    // ending states stamp stopped_at, the others leave both alone.
    let mut started = None;
    let mut stopped = None;
    for (step, status) in InstanceStatus::ALL.iter().copied().enumerate() {
        let now = T0 + 1_000 * (i64::try_from(step).unwrap() + 1);
        let reason = (status == InstanceStatus::Error).then_some("image pull failed: 'x' \"y\"");
        db.store
            .set_instance_status(first.id, status, reason, now)
            .await
            .unwrap();
        if status == InstanceStatus::Running {
            started = Some(now);
            stopped = None;
        } else if status.is_terminal() {
            stopped = Some(now);
        }
        let stored = db.store.get_instance(first.id).await.unwrap().unwrap();
        assert_eq!(stored.status, status);
        assert_eq!(stored.error_reason.as_deref(), reason, "{status}");
        assert_eq!(stored.started_at, started, "{status}");
        assert_eq!(stored.stopped_at, stopped, "{status}");
        assert_eq!(status.as_str().parse::<InstanceStatus>().unwrap(), status);
        let listed = db.store.list_instances_by_status(status).await.unwrap();
        assert!(listed.iter().any(|i| i.id == first.id), "{status}");
        assert!(listed.iter().all(|i| i.status == status), "{status}");
    }
    assert_eq!(InstanceStatus::ALL.len(), 9);
    // A restart after an error clears the old stop time and reason.
    db.store
        .set_instance_status(first.id, InstanceStatus::Running, None, T0 + 50_000)
        .await
        .unwrap();
    let restarted = db.store.get_instance(first.id).await.unwrap().unwrap();
    assert_eq!(restarted.started_at, Some(T0 + 50_000));
    assert_eq!((restarted.stopped_at, restarted.error_reason), (None, None));
    assert_err!(
        "paused".parse::<InstanceStatus>(),
        AdminError::InvalidData(_)
    );

    db.store
        .touch_instance(first.id, T0 + 60_000)
        .await
        .unwrap();
    db.store
        .set_instance_container(
            first.id,
            Some("4f1c0ffee"),
            Some("flowcase-k3j5-first"),
            Some("flowcase-k3j5-first:6901"),
        )
        .await
        .unwrap();
    let stored = db.store.get_instance(first.id).await.unwrap().unwrap();
    assert_eq!(stored.last_activity_at, Some(T0 + 60_000));
    assert_eq!(stored.container_id.as_deref(), Some("4f1c0ffee"));
    assert_eq!(
        stored.container_name.as_deref(),
        Some("flowcase-k3j5-first")
    );
    assert_eq!(stored.upstream.as_deref(), Some("flowcase-k3j5-first:6901"));

    let requested = db
        .store
        .list_instances_by_status(InstanceStatus::Requested)
        .await
        .unwrap();
    assert_eq!(
        requested.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![second, bobs]
    );
    assert_err!(
        db.store
            .set_instance_status(9_999, InstanceStatus::Gone, None, T0)
            .await,
        AdminError::NotFound("instance")
    );
    assert_err!(
        db.store.touch_instance(9_999, T0).await,
        AdminError::NotFound("instance")
    );
}

async fn sessions_expire_touch_and_revoke(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let bob = new_user(db, tenant.id, "bob").await;
    let new = |id: &str, user_id: i64| NewSession {
        id: id.to_owned(),
        user_id,
        idle_expires_at: T0 + 1_000,
        absolute_expires_at: T0 + 10_000,
        remember: true,
        client_addr: Some("203.0.113.7".to_owned()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".to_owned()),
    };
    let session = db
        .store
        .create_session(&new("hash-a1", alice.id), T0)
        .await
        .unwrap();
    assert_eq!(session.id, "hash-a1");
    assert_eq!((session.created_at, session.last_seen_at), (T0, T0));
    assert!(session.remember);
    assert_eq!(session.client_addr.as_deref(), Some("203.0.113.7"));
    assert_eq!(session.revoked_at, None);
    assert_eq!(
        db.store.get_session("hash-a1").await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(db.store.get_session("hash-zz").await.unwrap(), None);
    assert!(session.is_active(T0 + 999));
    assert!(!session.is_active(T0 + 1_000));

    let short = NewSession {
        remember: false,
        client_addr: None,
        user_agent: None,
        ..new("hash-a2", alice.id)
    };
    let short = db.store.create_session(&short, T0).await.unwrap();
    assert!(!short.remember);
    assert_eq!((short.client_addr, short.user_agent), (None, None));
    db.store
        .create_session(&new("hash-b1", bob.id), T0)
        .await
        .unwrap();
    assert_err!(
        db.store.create_session(&new("hash-a1", bob.id), T0).await,
        AdminError::Conflict(_)
    );
    assert_err!(
        db.store.create_session(&new("hash-x", 9_999), T0).await,
        AdminError::Reference(_)
    );

    // Activity moves the idle deadline but never past the absolute one.
    db.store
        .touch_session("hash-a1", T0 + 900, T0 + 9_900)
        .await
        .unwrap();
    let touched = db.store.get_session("hash-a1").await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, T0 + 900);
    assert!(touched.is_active(T0 + 9_000));
    assert!(!touched.is_active(T0 + 9_900));
    db.store
        .touch_session("hash-a1", T0 + 9_000, T0 + 19_000)
        .await
        .unwrap();
    let touched = db.store.get_session("hash-a1").await.unwrap().unwrap();
    assert!(!touched.is_active(T0 + 10_000));

    db.store
        .revoke_session("hash-a1", T0 + 2_000)
        .await
        .unwrap();
    db.store
        .revoke_session("hash-a1", T0 + 3_000)
        .await
        .unwrap();
    let revoked = db.store.get_session("hash-a1").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 2_000));
    assert!(!revoked.is_active(T0 + 2_001));
    assert_err!(
        db.store
            .touch_session("hash-a1", T0 + 4_000, T0 + 5_000)
            .await,
        AdminError::NotFound("session")
    );
    assert_err!(
        db.store.revoke_session("hash-zz", T0).await,
        AdminError::NotFound("session")
    );

    // Revoking all of alice's sessions counts only the live one and spares bob.
    assert_eq!(
        db.store
            .revoke_user_sessions(alice.id, T0 + 5_000)
            .await
            .unwrap(),
        1
    );
    let a2 = db.store.get_session("hash-a2").await.unwrap().unwrap();
    assert_eq!(a2.revoked_at, Some(T0 + 5_000));
    let a1 = db.store.get_session("hash-a1").await.unwrap().unwrap();
    assert_eq!(a1.revoked_at, Some(T0 + 2_000));
    let b1 = db.store.get_session("hash-b1").await.unwrap().unwrap();
    assert_eq!(b1.revoked_at, None);
    assert_eq!(
        db.store
            .revoke_user_sessions(alice.id, T0 + 6_000)
            .await
            .unwrap(),
        0
    );
}

async fn api_keys_find_touch_and_revoke(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let new = |hash: &str, expires_at: Option<i64>| NewApiKey {
        user_id: alice.id,
        name: "CI".to_owned(),
        secret_hash: hash.to_owned(),
        prefix: "fc_3kd9".to_owned(),
        expires_at,
    };
    let forever = db
        .store
        .create_api_key(&new("h-forever", None), T0)
        .await
        .unwrap();
    let expiring = db
        .store
        .create_api_key(&new("h-expiring", Some(T0 + 100)), T0 + 1)
        .await
        .unwrap();
    assert_eq!(forever.prefix, "fc_3kd9");
    assert_eq!((forever.created_at, forever.last_used_at), (T0, None));
    assert_eq!(expiring.expires_at, Some(T0 + 100));
    assert_eq!(
        db.store.find_api_key_by_hash("h-forever").await.unwrap(),
        Some(forever.clone())
    );
    assert_eq!(db.store.find_api_key_by_hash("h-nope").await.unwrap(), None);
    assert!(forever.is_active(i64::MAX));
    assert!(expiring.is_active(T0 + 99) && !expiring.is_active(T0 + 100));
    assert_err!(
        db.store.create_api_key(&new("h-forever", None), T0).await,
        AdminError::Conflict(_)
    );
    let ids: Vec<i64> = db
        .store
        .list_api_keys_for_user(alice.id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![expiring.id, forever.id]);

    db.store.touch_api_key(forever.id, T0 + 50).await.unwrap();
    db.store.revoke_api_key(forever.id, T0 + 60).await.unwrap();
    db.store.revoke_api_key(forever.id, T0 + 70).await.unwrap();
    let stored = db
        .store
        .find_api_key_by_hash("h-forever")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at, Some(T0 + 50));
    assert_eq!(stored.revoked_at, Some(T0 + 60));
    assert!(!stored.is_active(T0 + 61));
    assert_err!(
        db.store.revoke_api_key(9_999, T0).await,
        AdminError::NotFound("api key")
    );
}

async fn audit_is_newest_first_pages_and_prunes(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let details = json!({
        "nested": {"list": [1, 2.5, "x", null, true]},
        "unicode": "été ✓ 🚀",
        "markup": "<script>alert('x')</script>",
    });
    let entry = |action: &str| NewAuditEntry {
        actor_user_id: Some(alice.id),
        actor_name: Some("alice".to_owned()),
        action: action.to_owned(),
        target_kind: Some("user".to_owned()),
        target_id: Some(alice.id.to_string()),
        client_addr: Some("2001:db8::1".to_owned()),
        details: details.clone(),
    };
    // Inserted out of time order; "c" and "d" share a timestamp.
    db.store.append_audit(&entry("b"), T0 + 20).await.unwrap();
    db.store.append_audit(&entry("a"), T0 + 10).await.unwrap();
    db.store.append_audit(&entry("c"), T0 + 30).await.unwrap();
    let system = NewAuditEntry {
        action: "d".to_owned(),
        ..NewAuditEntry::default()
    };
    db.store.append_audit(&system, T0 + 30).await.unwrap();

    let page = db.store.list_audit(10, 0).await.unwrap();
    let actions: Vec<&str> = page.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["d", "c", "b", "a"]);
    assert_eq!(page[1].at, T0 + 30);
    assert_eq!(page[1].details, details);
    assert_eq!(page[1].actor_user_id, Some(alice.id));
    assert_eq!(page[1].actor_name.as_deref(), Some("alice"));
    assert_eq!(page[1].target_id, Some(alice.id.to_string()));
    assert_eq!(page[1].client_addr.as_deref(), Some("2001:db8::1"));
    assert_eq!(page[0].details, json!({}));
    assert_eq!(
        (page[0].actor_user_id, page[0].actor_name.clone()),
        (None, None)
    );

    let page: Vec<String> = db
        .store
        .list_audit(2, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(page, ["c", "b"]);
    assert!(db.store.list_audit(10, 4).await.unwrap().is_empty());
    assert_eq!(db.store.count_audit().await.unwrap(), 4);

    assert_eq!(db.store.prune_audit(T0 + 20).await.unwrap(), 1);
    assert_eq!(db.store.prune_audit(T0 + 20).await.unwrap(), 0);
    let left: Vec<String> = db
        .store
        .list_audit(10, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(left, ["d", "c", "b"]);
    assert_eq!(db.store.count_audit().await.unwrap(), 3);
}

async fn workshops_participants_and_droplets(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let bob = new_user(db, tenant.id, "bob").await;
    let group = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Class of 2025".to_owned(),
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    let droplet = new_droplet(db, tenant.id, "Lab desktop").await;
    let new = NewWorkshop {
        tenant_id: tenant.id,
        group_id: Some(group.id),
        name: "Intro to Linux".to_owned(),
        description: "Day one".to_owned(),
        starts_at: T0 + 3_600_000,
        ends_at: T0 + 7_200_000,
        status: WorkshopStatus::Scheduled,
    };
    let workshop = db.store.create_workshop(&new, T0).await.unwrap();
    assert_eq!(workshop.group_id, Some(group.id));
    assert_eq!(
        (workshop.starts_at, workshop.ends_at),
        (new.starts_at, new.ends_at)
    );
    assert_eq!(workshop.status, WorkshopStatus::Scheduled);
    assert_eq!(
        db.store.get_workshop(workshop.id).await.unwrap(),
        Some(workshop.clone())
    );
    assert_err!(
        db.store.create_workshop(&new, T0).await,
        AdminError::Conflict(_)
    );
    for status in WorkshopStatus::ALL {
        db.store
            .set_workshop_status(workshop.id, *status)
            .await
            .unwrap();
        let stored = db.store.get_workshop(workshop.id).await.unwrap().unwrap();
        assert_eq!(stored.status, *status);
    }
    assert_err!(
        db.store
            .set_workshop_status(9_999, WorkshopStatus::Ended)
            .await,
        AdminError::NotFound("workshop")
    );

    db.store
        .add_participant(workshop.id, bob.id, T0 + 2)
        .await
        .unwrap();
    db.store
        .add_participant(workshop.id, alice.id, T0 + 1)
        .await
        .unwrap();
    db.store
        .add_participant(workshop.id, alice.id, T0 + 5)
        .await
        .unwrap();
    let instance = new_instance(db, "lab-alice", droplet, alice.id, T0).await;
    db.store
        .set_participant_instance(workshop.id, alice.id, Some(instance))
        .await
        .unwrap();
    let seats = db.store.list_participants(workshop.id).await.unwrap();
    assert_eq!(seats.len(), 2);
    assert_eq!(
        (seats[0].user_id, seats[0].instance_id, seats[0].joined_at),
        (alice.id, Some(instance), T0 + 1)
    );
    assert_eq!((seats[1].user_id, seats[1].instance_id), (bob.id, None));
    db.store
        .set_participant_instance(workshop.id, alice.id, None)
        .await
        .unwrap();
    assert_eq!(
        db.store.list_participants(workshop.id).await.unwrap()[0].instance_id,
        None
    );
    assert_err!(
        db.store
            .set_participant_instance(workshop.id, 9_999, None)
            .await,
        AdminError::NotFound("workshop participant")
    );

    db.store
        .add_workshop_droplet(workshop.id, droplet)
        .await
        .unwrap();
    db.store
        .add_workshop_droplet(workshop.id, droplet)
        .await
        .unwrap();
    assert_eq!(
        db.store.workshop_droplet_ids(workshop.id).await.unwrap(),
        vec![droplet]
    );
    assert_err!(
        db.store.add_workshop_droplet(workshop.id, 9_999).await,
        AdminError::Reference(_)
    );
}

async fn on_delete_rules(db: &TestDb) {
    let tenant = default_tenant(db).await;
    let alice = new_user(db, tenant.id, "alice").await;
    let keeper = new_user(db, tenant.id, "keeper").await;
    let group = db
        .store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Staff".to_owned(),
                permissions: Permissions {
                    view_users: true,
                    ..Permissions::default()
                },
                ..NewGroup::default()
            },
            T0,
        )
        .await
        .unwrap();
    let droplet = new_droplet(db, tenant.id, "Desktop").await;
    let spare = new_droplet(db, tenant.id, "Spare").await;
    db.store.add_member(alice.id, group.id).await.unwrap();
    db.store.add_member(keeper.id, group.id).await.unwrap();
    db.store.grant_droplet(droplet, group.id).await.unwrap();
    db.store.grant_droplet(spare, group.id).await.unwrap();
    let workshop = db
        .store
        .create_workshop(
            &NewWorkshop {
                tenant_id: tenant.id,
                group_id: Some(group.id),
                name: "Lab".to_owned(),
                description: String::new(),
                starts_at: T0,
                ends_at: T0 + 1,
                status: WorkshopStatus::Running,
            },
            T0,
        )
        .await
        .unwrap();
    db.store
        .add_workshop_droplet(workshop.id, droplet)
        .await
        .unwrap();
    db.store
        .add_workshop_droplet(workshop.id, spare)
        .await
        .unwrap();
    db.store
        .add_participant(workshop.id, alice.id, T0)
        .await
        .unwrap();
    db.store
        .add_participant(workshop.id, keeper.id, T0)
        .await
        .unwrap();
    let instance = new_instance(db, "alice-desktop", droplet, alice.id, T0).await;
    db.store
        .set_participant_instance(workshop.id, alice.id, Some(instance))
        .await
        .unwrap();
    db.store
        .create_session(
            &NewSession {
                id: "alice-session".to_owned(),
                user_id: alice.id,
                idle_expires_at: T0 + 1,
                absolute_expires_at: T0 + 1,
                remember: false,
                client_addr: None,
                user_agent: None,
            },
            T0,
        )
        .await
        .unwrap();
    db.store
        .create_api_key(
            &NewApiKey {
                user_id: alice.id,
                name: "k".to_owned(),
                secret_hash: "alice-key".to_owned(),
                prefix: "fc_".to_owned(),
                expires_at: None,
            },
            T0,
        )
        .await
        .unwrap();
    db.store
        .append_audit(
            &NewAuditEntry {
                actor_user_id: Some(alice.id),
                actor_name: Some("alice".to_owned()),
                action: "instance.create".to_owned(),
                ..NewAuditEntry::default()
            },
            T0,
        )
        .await
        .unwrap();

    // Instances hold their droplet and their user: a row may stand for a live container.
    assert_err!(
        db.store.delete_droplet(droplet).await,
        AdminError::Reference(_)
    );
    assert_err!(
        db.store.delete_user(alice.id).await,
        AdminError::Reference(_)
    );
    assert!(db.store.get_user(alice.id).await.unwrap().is_some());
    assert!(db.store.get_droplet(droplet).await.unwrap().is_some());

    // Tenants hold everything they own.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(tenant.id)
        .execute(&raw)
        .await;
    match deleted {
        Err(sqlx::Error::Database(e)) => assert!(e.is_foreign_key_violation(), "{e}"),
        other => panic!("deleting a tenant that owns rows must fail, got {other:?}"),
    }
    raw.close().await;

    // Deleting the instance frees the participant's seat but keeps it.
    db.store.delete_instance(instance).await.unwrap();
    let seats = db.store.list_participants(workshop.id).await.unwrap();
    assert_eq!(seats.len(), 2);
    assert!(seats.iter().all(|s| s.instance_id.is_none()));

    // Deleting the user cascades to sessions, keys, memberships and seats; the log keeps the
    // entry and the name but loses the link.
    db.store.delete_user(alice.id).await.unwrap();
    assert_eq!(db.store.get_session("alice-session").await.unwrap(), None);
    assert_eq!(
        db.store.find_api_key_by_hash("alice-key").await.unwrap(),
        None
    );
    let seats = db.store.list_participants(workshop.id).await.unwrap();
    assert_eq!(
        seats.iter().map(|s| s.user_id).collect::<Vec<_>>(),
        vec![keeper.id]
    );
    let log = db.store.list_audit(10, 0).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].actor_user_id, None);
    assert_eq!(log[0].actor_name.as_deref(), Some("alice"));

    // Deleting a droplet without instances removes its grants and workshop slots.
    db.store.delete_droplet(spare).await.unwrap();
    assert_eq!(
        db.store.workshop_droplet_ids(workshop.id).await.unwrap(),
        vec![droplet]
    );
    assert_eq!(
        db.store.droplet_group_ids(spare).await.unwrap(),
        Vec::<i64>::new()
    );

    // Deleting a group removes memberships and grants, and detaches workshops.
    db.store.delete_group(group.id).await.unwrap();
    assert!(db.store.groups_of_user(keeper.id).await.unwrap().is_empty());
    assert_eq!(
        db.store.user_permissions(keeper.id).await.unwrap(),
        Permissions::default()
    );
    assert!(
        db.store
            .droplet_group_ids(droplet)
            .await
            .unwrap()
            .is_empty()
    );
    let workshop = db.store.get_workshop(workshop.id).await.unwrap().unwrap();
    assert_eq!(workshop.group_id, None);
    assert_err!(
        db.store.delete_group(group.id).await,
        AdminError::NotFound("group")
    );
    assert_err!(
        db.store.delete_instance(instance).await,
        AdminError::NotFound("instance")
    );
    assert!(db.store.get_user(keeper.id).await.unwrap().is_some());
}

async fn values_survive_the_any_driver(db: &TestDb) {
    let tenant = default_tenant(db).await;
    // Text with quotes, backslashes, control characters and non-ASCII; empty is not NULL.
    let display = "Zoë O'Brien \"\\ \t\n 🚀 ∑";
    let user = db
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "Zoë".to_owned(),
                display_name: display.to_owned(),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap();
    let stored = db.store.get_user(user.id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, display);
    assert_eq!(stored.username, "zoë");
    let found = db.store.find_user_by_login("ZOË").await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(user.id));
    let blank = new_user(db, tenant.id, "blank").await;
    assert_eq!(blank.display_name, "");

    // i64 beyond 2^53 (where a float would round) and at the extremes.
    let big = 9_007_199_254_740_993_i64;
    db.store
        .create_session(
            &NewSession {
                id: "big".to_owned(),
                user_id: user.id,
                idle_expires_at: i64::MAX,
                absolute_expires_at: big,
                remember: false,
                client_addr: None,
                user_agent: None,
            },
            i64::MIN,
        )
        .await
        .unwrap();
    let session = db.store.get_session("big").await.unwrap().unwrap();
    assert_eq!(session.idle_expires_at, i64::MAX);
    assert_eq!(session.absolute_expires_at, big);
    assert_eq!(session.created_at, i64::MIN);

    // Empty blobs are distinct from NULL; extremes of every integer width we store.
    let mut new = NewDroplet::new(
        tenant.id,
        "extremes",
        DropletType::Ssh,
        TargetKind::External,
    );
    new.external_credentials = Some(Vec::new());
    new.memory_mb = Some(i64::MAX);
    new.cpu_millicores = Some(i64::MIN);
    new.external_port = Some(u16::MAX);
    let droplet = db.store.create_droplet(&new, T0).await.unwrap();
    let stored = db.store.get_droplet(droplet.id).await.unwrap().unwrap();
    assert_eq!(stored.external_credentials, Some(Vec::new()));
    assert_eq!(stored.memory_mb, Some(i64::MAX));
    assert_eq!(stored.cpu_millicores, Some(i64::MIN));
    assert_eq!(stored.external_port, Some(u16::MAX));
    assert!(stored.env.is_empty());

    // NULL and non-NULL values alternate through the same cached statements: a NULL parameter
    // declared with the wrong type on PostgreSQL would break the next non-NULL insert.
    for i in 0..12_i64 {
        let mut new = NewDroplet::new(
            tenant.id,
            format!("alternating-{i}"),
            DropletType::Vnc,
            TargetKind::Container,
        );
        if i % 2 == 1 {
            new.image = Some("img".to_owned());
            new.cpu_millicores = Some(250 * i);
            new.memory_mb = Some(512);
            new.idle_timeout_secs = Some(60);
            new.external_port = Some(5900);
            new.external_credentials = Some(vec![1, 2, 3]);
        }
        let created = db.store.create_droplet(&new, T0 + i).await.unwrap();
        let stored = db.store.get_droplet(created.id).await.unwrap().unwrap();
        assert_eq!(stored.cpu_millicores, new.cpu_millicores);
        assert_eq!(stored.external_credentials, new.external_credentials);
        assert_eq!(stored.image, new.image);
    }

    // Flags read back as both values (0/1 integer columns on either backend).
    for disabled in [true, false, true] {
        db.store
            .set_user_disabled(user.id, disabled, T0)
            .await
            .unwrap();
        assert_eq!(
            db.store.get_user(user.id).await.unwrap().unwrap().disabled,
            disabled
        );
    }
}

async fn bootstrap_creates_the_admin_once(db: &TestDb) {
    let data = db.dir.path().join("data");
    let outcome = bootstrap_admin(&db.store, &data, T0)
        .await
        .unwrap()
        .expect("an empty database must be bootstrapped");
    let path = data.join(CREDENTIALS_FILE);
    assert_eq!(outcome.username, ADMIN_USERNAME);
    assert_eq!(outcome.credentials_file, path);
    assert_eq!(outcome.password.chars().count(), 24);
    assert!(!format!("{outcome:?}").contains(&outcome.password));

    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode {mode:o}");
    let dir_mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o077, 0, "data directory mode {dir_mode:o}");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(
            "Flowcase Gateway administrator\nusername: admin\npassword: {}\n",
            outcome.password
        )
    );

    let admin = db.store.find_user_by_login("Admin").await.unwrap().unwrap();
    assert_eq!(admin.id, outcome.user_id);
    assert!(admin.protected && !admin.disabled && !admin.external);
    let hash = admin.password_hash.clone().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify_password(&outcome.password, &hash));
    assert!(!verify_password("not the password", &hash));

    let tenant = db.store.default_tenant().await.unwrap().unwrap();
    assert_eq!(tenant.name, DEFAULT_TENANT_NAME);
    assert_eq!(admin.tenant_id, tenant.id);
    let groups = db.store.groups_of_user(admin.id).await.unwrap();
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        [ADMIN_GROUP_NAME]
    );
    assert_eq!(groups[0].permissions, Permissions::all());
    assert_eq!(
        db.store.user_permissions(admin.id).await.unwrap(),
        Permissions::all()
    );
    let user_group = db
        .store
        .find_group_by_name(tenant.id, USER_GROUP_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user_group.permissions, Permissions::default());
    assert_eq!(db.store.count_users().await.unwrap(), 1);

    // Second start: nothing happens, the file is left exactly as it was.
    let before = fs::read(&path).unwrap();
    let modified = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(
        bootstrap_admin(&db.store, &data, T0 + 1_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
    assert_eq!(db.store.count_users().await.unwrap(), 1);
    assert_eq!(db.store.list_groups().await.unwrap().len(), 2);
}

async fn bootstrap_does_nothing_when_users_exist(db: &TestDb) {
    let tenant = default_tenant(db).await;
    db.store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "alice".to_owned(),
                password_hash: Some(hash_password("alice's password").unwrap()),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap();
    let data = db.dir.path().join("data");
    assert!(
        bootstrap_admin(&db.store, &data, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!data.join(CREDENTIALS_FILE).exists());
    assert_eq!(db.store.find_user_by_login("admin").await.unwrap(), None);
    assert!(db.store.list_groups().await.unwrap().is_empty());
}

async fn bootstrap_replaces_a_stale_credentials_file(db: &TestDb) {
    let data = db.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let path = data.join(CREDENTIALS_FILE);
    fs::write(&path, "stale password from an older database\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    let outcome = bootstrap_admin(&db.store, &data, T0)
        .await
        .unwrap()
        .unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode {mode:o}");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with(&format!("password: {}\n", outcome.password)));
    assert!(!text.contains("stale"));
}

async fn bootstrap_reuses_surviving_groups(db: &TestDb) {
    // Every user deleted, tenant and groups left behind (and "Admin" stripped of its rights).
    let tenant = default_tenant(db).await;
    for name in [ADMIN_GROUP_NAME, USER_GROUP_NAME] {
        db.store
            .create_group(
                &NewGroup {
                    tenant_id: tenant.id,
                    name: name.to_owned(),
                    ..NewGroup::default()
                },
                T0,
            )
            .await
            .unwrap();
    }
    let outcome = bootstrap_admin(&db.store, db.dir.path(), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.store.list_groups().await.unwrap().len(), 2);
    assert_eq!(db.store.list_tenants().await.unwrap(), vec![tenant]);
    assert_eq!(
        db.store.user_permissions(outcome.user_id).await.unwrap(),
        Permissions::all()
    );
}

async fn concurrent_bootstraps_create_one_admin(db: &TestDb) {
    // Two stores with their own pools stand for two processes starting together.
    let first = Store::connect(&db.url).await.unwrap();
    let second = Store::connect(&db.url).await.unwrap();
    let dir_a = db.dir.path().join("a");
    let dir_b = db.dir.path().join("b");
    let a = tokio::spawn({
        let dir = dir_a.clone();
        async move { bootstrap_admin(&first, &dir, T0).await }
    });
    let b = tokio::spawn({
        let dir = dir_b.clone();
        async move { bootstrap_admin(&second, &dir, T0).await }
    });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert!(
        a.is_some() != b.is_some(),
        "exactly one starter must bootstrap: {a:?} / {b:?}"
    );
    assert_eq!(db.store.count_users().await.unwrap(), 1);
    assert_eq!(db.store.list_groups().await.unwrap().len(), 2);
    assert_eq!(db.store.list_tenants().await.unwrap().len(), 1);
    let (winner_dir, loser_dir) = if a.is_some() {
        (dir_a, dir_b)
    } else {
        (dir_b, dir_a)
    };
    assert!(winner_dir.join(CREDENTIALS_FILE).exists());
    assert!(!loser_dir.join(CREDENTIALS_FILE).exists());
}

async fn bootstrap_yields_to_a_concurrent_winner(db: &TestDb) {
    // This connection plays another process that is half-way through its own bootstrap: it holds
    // the write lock with the default tenant and an admin inserted but not yet committed.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let mut winner = match db.store.backend() {
        Backend::Sqlite => raw.begin_with("BEGIN IMMEDIATE").await.unwrap(),
        Backend::Postgres => raw.begin().await.unwrap(),
    };
    sqlx::query("INSERT INTO tenants (name, is_default, created_at) VALUES ('Default', 1, 0)")
        .execute(&mut *winner)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (tenant_id, username, display_name, created_at, updated_at) \
         SELECT id, 'admin', '', 0, 0 FROM tenants",
    )
    .execute(&mut *winner)
    .await
    .unwrap();

    let store = db.store.clone();
    let data = db.dir.path().join("loser");
    let loser = tokio::spawn({
        let data = data.clone();
        async move { bootstrap_admin(&store, &data, T0).await }
    });
    match db.store.backend() {
        // Wait until the bootstrap is blocked on our uncommitted unique keys, so it is the
        // conflict (not an early "users exist") that stops it.
        Backend::Postgres => {
            let mut waited = 0;
            loop {
                let blocked: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&raw)
                .await
                .unwrap();
                if blocked > 0 {
                    break;
                }
                waited += 1;
                assert!(
                    waited < 600,
                    "the bootstrap never blocked on the winner's rows"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        // SQLite serialises writers: the bootstrap waits for BEGIN IMMEDIATE within its busy
        // timeout and then finds the winner's user.
        Backend::Sqlite => tokio::time::sleep(std::time::Duration::from_millis(1_500)).await,
    }
    winner.commit().await.unwrap();

    assert!(loser.await.unwrap().unwrap().is_none());
    assert!(!data.join(CREDENTIALS_FILE).exists());
    assert_eq!(db.store.count_users().await.unwrap(), 1);
    assert!(db.store.list_groups().await.unwrap().is_empty());
    raw.close().await;
}

// ---------------------------------------------------------------------------------------------
// SQLite-only behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let db = TestDb::sqlite().await;
    assert!(db.dir.path().join("nested/flowcase.db").is_file());
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_one_database() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.create_tenant("Default", true, T0).await.unwrap();
    for _ in 0..5 {
        store.ping().await.unwrap();
        assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    }
    // Foreign keys are enforced on the connection.
    assert_err!(store.add_member(1, 1).await, AdminError::Reference(_));
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_echoing_secrets() {
    let err = Store::connect("mysql://root:hunter2@db/flowcase")
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::UnsupportedDatabaseUrl(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn postgres_urls_get_their_database_replaced() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/flowcase_test", "x"),
        "postgres://u:p@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "postgres"),
        "postgres://u:p@h/postgres?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

/// A tunnel token is claimed once, whichever process (connection) asks; expired claims are
/// swept so the table does not grow.
async fn tunnel_tokens_are_claimed_once(db: &TestDb) {
    let s = &db.store;
    assert!(s.claim_tunnel_token("a", T0 + 60_000, T0).await.unwrap());
    assert!(
        !s.claim_tunnel_token("a", T0 + 60_000, T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        s.claim_tunnel_token("b", T0 + 60_000, T0 + 1)
            .await
            .unwrap()
    );
    // Concurrent claims of one token: exactly one wins.
    let claims = (0..8).map(|_| s.claim_tunnel_token("c", T0 + 60_000, T0 + 2));
    let won = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    // Once expired, an entry is swept (the token itself is refused by its expiry by then).
    assert!(
        s.claim_tunnel_token("a", T0 + 120_000, T0 + 60_000)
            .await
            .unwrap()
    );
}

/// Clipboard restrictions are per group, off by default, and a member of any restricting group
/// is restricted (they are restrictions, not rights: no union of grants).
async fn clipboard_restrictions_of_any_group_apply(db: &TestDb) {
    let s = &db.store;
    let tenant = default_tenant(db).await;
    let user = new_user(db, tenant.id, "alice").await;
    let loner = new_user(db, tenant.id, "bob").await;
    let group = |name: &str| NewGroup {
        tenant_id: tenant.id,
        name: name.to_owned(),
        description: String::new(),
        permissions: Permissions::default(),
    };
    let open = s.create_group(&group("Open"), T0).await.unwrap();
    let strict = s.create_group(&group("Strict"), T0).await.unwrap();
    assert_eq!(
        s.group_clipboard(open.id).await.unwrap(),
        Some(Clipboard::default())
    );
    assert_eq!(s.group_clipboard(9_999).await.unwrap(), None);
    let no_paste = Clipboard {
        disable_copy: false,
        disable_paste: true,
    };
    s.set_group_clipboard(strict.id, no_paste).await.unwrap();
    assert_eq!(s.group_clipboard(strict.id).await.unwrap(), Some(no_paste));
    assert_err!(
        s.set_group_clipboard(9_999, no_paste).await,
        AdminError::NotFound(_)
    );
    s.add_member(user.id, open.id).await.unwrap();
    assert_eq!(
        s.user_clipboard(user.id).await.unwrap(),
        Clipboard::default()
    );
    s.add_member(user.id, strict.id).await.unwrap();
    assert_eq!(s.user_clipboard(user.id).await.unwrap(), no_paste);
    assert_eq!(
        s.user_clipboard(loner.id).await.unwrap(),
        Clipboard::default(),
        "no group, no restriction"
    );
    // Restrictions do not leak into the rights.
    assert_eq!(
        s.user_permissions(user.id).await.unwrap(),
        Permissions::default()
    );
}

async fn workshop_templates_seats_and_launch_claims(db: &TestDb) {
    let store = &db.store;
    let tenant = default_tenant(db).await;
    let other = store.create_tenant("Other", false, T0).await.unwrap();
    let alice = new_user(db, tenant.id, "alice").await;
    let bob = new_user(db, tenant.id, "bob").await;
    let d1 = new_droplet(db, tenant.id, "One").await;
    let d2 = new_droplet(db, tenant.id, "Two").await;
    let new = |tenant_id: i64, name: &str| NewWorkshop {
        tenant_id,
        group_id: None,
        name: name.to_owned(),
        description: String::new(),
        starts_at: T0,
        ends_at: T0 + 1,
        status: WorkshopStatus::Scheduled,
    };
    let w = store
        .create_workshop(&new(tenant.id, "B lab"), T0)
        .await
        .unwrap();
    store
        .create_workshop(&new(tenant.id, "A lab"), T0)
        .await
        .unwrap();
    store
        .create_workshop(&new(other.id, "C lab"), T0)
        .await
        .unwrap();
    let (page, total) = store.page_workshops(Some(tenant.id), 10, 0).await.unwrap();
    assert_eq!(total, 2);
    let names: Vec<&str> = page.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["A lab", "B lab"]);
    let (page, total) = store.page_workshops(None, 1, 1).await.unwrap();
    assert_eq!((page.len(), total), (1, 3));
    assert_eq!(page[0].name, "B lab");

    let fields = flowcase_admin::store::WorkshopFields {
        name: "B lab (renamed)".into(),
        description: "<b>".into(),
        starts_at: T0 + 10,
        ends_at: T0 + 20,
        group_id: None,
    };
    let updated = store.update_workshop(w.id, &fields).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.ends_at),
        ("B lab (renamed)", T0 + 20)
    );
    assert_err!(
        store.update_workshop(9_999, &fields).await,
        AdminError::NotFound("workshop")
    );

    store.set_workshop_droplets(w.id, &[d1, d2]).await.unwrap();
    store
        .set_participants(w.id, &[alice.id, bob.id], T0)
        .await
        .unwrap();
    let seats = store.workshop_seats(w.id).await.unwrap();
    assert_eq!(seats.len(), 2);
    assert_eq!(seats[0].username, "alice");
    assert!(!seats[0].disabled);

    // Claims: one launcher per pair; a failed or stale claim, or a gone instance, is re-claimed.
    assert!(
        store
            .claim_workshop_launch(w.id, alice.id, d1, None, T0, T0 - 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_workshop_launch(w.id, alice.id, d1, None, T0 + 1, T0 - 1)
            .await
            .unwrap()
    );
    let links = store.workshop_links(w.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].instance_id, links[0].status), (None, None));
    assert!(links[0].launching);
    store
        .finish_workshop_launch(w.id, alice.id, d1, Err("image missing".into()))
        .await
        .unwrap();
    assert_eq!(
        store.workshop_links(w.id).await.unwrap()[0]
            .error
            .as_deref(),
        Some("image missing")
    );
    assert!(
        store
            .claim_workshop_launch(w.id, alice.id, d1, None, T0 + 2, T0 - 1)
            .await
            .unwrap()
    );
    let instance = new_instance(db, "ws-alice", d1, alice.id, T0).await;
    store
        .finish_workshop_launch(w.id, alice.id, d1, Ok(instance))
        .await
        .unwrap();
    let link = store.workshop_links(w.id).await.unwrap().remove(0);
    assert_eq!(link.instance_id, Some(instance));
    assert_eq!(link.slug.as_deref(), Some("ws-alice"));
    assert!(link.status.is_some());
    assert_eq!(link.error, None);
    // A linked instance is claimed again only by who saw it gone.
    assert!(
        !store
            .claim_workshop_launch(w.id, alice.id, d1, None, T0 + 3, T0 + 3)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_workshop_launch(w.id, alice.id, d1, Some(instance), T0 + 3, T0)
            .await
            .unwrap()
    );
    // An instance row deleted under the link frees the pair too.
    store
        .finish_workshop_launch(w.id, alice.id, d1, Ok(instance))
        .await
        .unwrap();
    store.delete_instance(instance).await.unwrap();
    let link = store.workshop_links(w.id).await.unwrap().remove(0);
    assert_eq!((link.instance_id, link.launching), (None, false));
    assert!(
        store
            .claim_workshop_launch(w.id, alice.id, d1, None, T0 + 4, T0)
            .await
            .unwrap()
    );
    // A claim older than the stale bound is taken over.
    assert!(
        store
            .claim_workshop_launch(w.id, bob.id, d2, None, T0, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_workshop_launch(w.id, bob.id, d2, None, T0 + 9, T0 + 5)
            .await
            .unwrap()
    );

    // Leaving the seat or the template drops the links; the instance stays.
    store.set_participants(w.id, &[bob.id], T0).await.unwrap();
    assert!(
        store
            .workshop_links(w.id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.user_id == bob.id)
    );
    store.set_workshop_droplets(w.id, &[d1]).await.unwrap();
    assert!(store.workshop_links(w.id).await.unwrap().is_empty());
    assert_eq!(
        store.workshops_of_participant(bob.id).await.unwrap().len(),
        1
    );
    assert!(
        store
            .workshops_of_participant(alice.id)
            .await
            .unwrap()
            .is_empty()
    );

    store.delete_workshop(w.id).await.unwrap();
    assert_err!(
        store.delete_workshop(w.id).await,
        AdminError::NotFound("workshop")
    );
}

async fn audit_filters_and_tenant_scope(db: &TestDb) {
    use flowcase_admin::store::AuditFilter;
    let store = &db.store;
    let tenant = default_tenant(db).await;
    let other = store.create_tenant("Other", false, T0).await.unwrap();
    let alice = new_user(db, tenant.id, "alice").await;
    let olga = new_user(db, other.id, "olga").await;
    for (i, (actor, action, target)) in [
        (&alice, "user.create", "7"),
        (&alice, "user.update", "7"),
        (&olga, "user.create", "8"),
        (&olga, "workshop.start", "1"),
        (&alice, "user_create", "9"),
    ]
    .into_iter()
    .enumerate()
    {
        let entry = NewAuditEntry {
            actor_user_id: Some(actor.id),
            actor_name: Some(actor.username.clone()),
            action: action.into(),
            target_kind: Some(action.split(['.', '_']).next().unwrap().into()),
            target_id: Some(target.into()),
            ..NewAuditEntry::default()
        };
        store
            .append_audit(&entry, T0 + i64::try_from(i).unwrap())
            .await
            .unwrap();
    }
    let run = |filter: AuditFilter| async move {
        let (items, total) = store.page_audit(&filter, 50, 0).await.unwrap();
        assert_eq!(usize::try_from(total).unwrap(), items.len());
        items
            .iter()
            .map(|e| (e.action.clone(), e.target_id.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
            .collect()
    };
    assert_eq!(run(AuditFilter::default()).await.len(), 5);
    // A prefix is literal: `user.` does not match `user_create` (no LIKE wildcards).
    let prefix = AuditFilter {
        action: Some("user.".into()),
        action_prefix: true,
        ..AuditFilter::default()
    };
    assert_eq!(
        run(prefix).await,
        pairs(&[
            ("user.create", "8"),
            ("user.update", "7"),
            ("user.create", "7")
        ])
    );
    let exact = AuditFilter {
        action: Some("user.create".into()),
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(run(exact).await, pairs(&[("user.create", "7")]));
    let target = AuditFilter {
        target_kind: Some("user".into()),
        target_id: Some("7".into()),
        ..AuditFilter::default()
    };
    assert_eq!(run(target).await.len(), 2);
    let window = AuditFilter {
        since: Some(T0 + 1),
        until: Some(T0 + 3),
        ..AuditFilter::default()
    };
    assert_eq!(
        run(window).await,
        pairs(&[("user.create", "8"), ("user.update", "7")])
    );
    let scoped = AuditFilter {
        actor_tenant: Some(other.id),
        ..AuditFilter::default()
    };
    assert_eq!(
        run(scoped).await,
        pairs(&[("workshop.start", "1"), ("user.create", "8")])
    );
    let (page, total) = store
        .page_audit(&AuditFilter::default(), 2, 3)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (2, 5));
    assert_eq!(page[0].action, "user.update");
}

async fn counts_by_tenant_and_server_version(db: &TestDb) {
    let store = &db.store;
    let tenant = default_tenant(db).await;
    let other = store.create_tenant("Other", false, T0).await.unwrap();
    let alice = new_user(db, tenant.id, "alice").await;
    new_user(db, other.id, "olga").await;
    let droplet = new_droplet(db, tenant.id, "One").await;
    new_instance(db, "count-me", droplet, alice.id, T0).await;
    let all = store.counts(None).await.unwrap();
    assert_eq!((all.tenants, all.users, all.droplets), (2, 2, 1));
    assert_eq!(all.instances.values().sum::<i64>(), 1);
    let mine = store.counts(Some(other.id)).await.unwrap();
    assert_eq!((mine.tenants, mine.users, mine.droplets), (1, 1, 0));
    assert!(mine.instances.is_empty());
    let version = store.server_version().await.unwrap();
    match store.backend() {
        Backend::Sqlite => assert!(version.starts_with("3."), "{version}"),
        Backend::Postgres => assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit())),
    }
}

//! `flowcase demo` through the real binary: it fills an empty installation (tenants, groups,
//! users with passwords printed once, droplets whose missing images are named, a workshop), the
//! demo accounts sign in and see their catalogue and workshop, and a second run is refused
//! without changing anything; `--force` adds nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_admin::store::Store;
use flowcase_e2e::api::Api;
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};

/// The password printed for `username` in the demo's user table.
fn password_of(stdout: &str, username: &str) -> String {
    stdout
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == username)?;
            fields.get(at + 1).map(|p| (*p).to_owned())
        })
        .unwrap_or_else(|| panic!("no password for {username} in:\n{stdout}"))
}

async fn store_of(dir: &GatewayDir) -> Store {
    Store::connect(&format!(
        "sqlite://{}",
        dir.data_dir().join("flowcase.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn the_demo_fills_an_empty_installation_once() {
    let dir = GatewayDir::new();
    let out = dir.cli(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The administrator is created first (as `serve` would), with its credentials file.
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    assert!(stdout.contains(&admin_password));
    // No image can be pulled here: every droplet is marked, with the command that pulls it.
    for droplet in ["Whoami", "Static site", "HTTP playground"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(droplet) && l.contains("http"))
            .unwrap_or_else(|| panic!("no line for {droplet}:\n{stdout}"));
        assert!(line.contains("MUST BE PULLED"), "{line}");
        assert!(stdout.contains(&format!("flowcase droplet pull \"{droplet}\"")));
    }

    let store = store_of(&dir).await;
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts.tenants, 3);
    assert_eq!(counts.users, 8);
    assert_eq!(counts.droplets, 5);
    assert_eq!(counts.workshops, 1);

    let gw = Gateway::start(&dir).await;
    // A participant sees the workshop and its droplets; the catalogue holds what their groups
    // may launch.
    let alice = Api::login(&gw, &dir, "alice", &password_of(&stdout, "alice")).await;
    let mine = alice.get_ok("/api/v1/workshops/mine").await;
    assert_eq!(mine["items"][0]["name"], "Web development 101");
    let droplets: Vec<&str> = mine["items"][0]["droplets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(droplets, ["Whoami", "Static site"]);
    let alice_id = store.find_user_by_login("alice").await.unwrap().unwrap().id;
    let mut catalogue: Vec<String> = store
        .list_droplets_for_user(alice_id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    catalogue.sort();
    assert_eq!(catalogue, ["HTTP playground", "Static site", "Whoami"]);
    // The trainer manages the workshop; its participants are listed with their state.
    let bob = Api::login(&gw, &dir, "bob", &password_of(&stdout, "bob")).await;
    let listed = bob.get_ok("/api/v1/workshops").await;
    assert_eq!(listed["total"], 1);
    let id = listed["items"][0]["id"].as_i64().unwrap();
    let workshop = bob.get_ok(&format!("/api/v1/workshops/{id}")).await;
    let participants: Vec<(&str, &str)> = workshop["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["username"].as_str().unwrap(),
                p["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        participants,
        [
            ("alice", "not_started"),
            ("carol", "not_started"),
            ("dave", "not_started")
        ]
    );
    // A tenant's administrator sees their tenant's users only.
    let erin = Api::login(&gw, &dir, "erin", &password_of(&stdout, "erin")).await;
    let users = erin.get_ok("/api/v1/users").await;
    assert_eq!(users["total"], 2);
    // The administrator's credentials work too.
    Api::login(&gw, &dir, &admin_name, &admin_password).await;

    // A second run is refused and changes nothing.
    let again = dir.cli(&["demo"]);
    assert!(!again.status.success());
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(refusal.contains("already holds data"), "{refusal}");
    assert!(refusal.contains("nothing was changed"), "{refusal}");
    assert!(refusal.contains("--force"), "{refusal}");
    assert_eq!(store.counts(None).await.unwrap(), counts);

    // --force adds only what is missing: here nothing, and no password is reset.
    let forced = dir.cli(&["demo", "--force"]);
    let forced_out = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{forced_out}");
    assert!(forced_out.contains("(exists, unchanged)"));
    assert_eq!(store.counts(None).await.unwrap(), counts);
    Api::login(&gw, &dir, "alice", &password_of(&stdout, "alice")).await;
}

/// The usual order: the gateway has started once (administrator, default tenant, built-in
/// groups), then the demo runs next to it; that installation still counts as empty.
#[tokio::test]
async fn the_demo_fills_an_installation_that_has_started_once() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    let out = dir.cli(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The administrator exists already: the demo neither recreates nor prints it.
    assert!(!stdout.contains(&admin_password));
    assert!(!stdout.contains("Created the administrator account"));
    let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;
    let tenants = admin.get_ok("/api/v1/tenants").await;
    assert_eq!(tenants["total"], 3);
    // A student of another tenant: no workshop of theirs, no right to list workshops.
    let grace = Api::login(&gw, &dir, "grace", &password_of(&stdout, "grace")).await;
    assert_eq!(
        grace.get_ok("/api/v1/workshops/mine").await["items"],
        serde_json::json!([])
    );
    let (status, body) = grace.get("/api/v1/workshops").await;
    assert_eq!(
        (status.as_u16(), flowcase_e2e::api::code(&body)),
        (403, "forbidden")
    );
}

//! Groups, permissions and tenants through the real binary: the admin API for users, groups and
//! tenants, and the one authorization layer behind it. Non-administrators are refused on every
//! admin endpoint, tenant administrators see and touch only their own tenant (other tenants'
//! ids answer 404), rights are the union of group flags and never follow a group's name,
//! protected entities survive, nobody escalates their own rights, password resets end sessions,
//! and every change lands in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::api::{Api, code};
use flowcase_e2e::instances::login_response;
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";

/// The flags of a tenant administrator: everything inside a tenant, nothing across tenants.
const TENANT_ADMIN: &[&str] = &[
    "admin_panel",
    "view_users",
    "edit_users",
    "view_groups",
    "edit_groups",
];

/// `(action, actor_name, target_id, client_addr)` of an audit entry.
type AuditRow = (String, Option<String>, Option<String>, Option<String>);

struct Env {
    dir: GatewayDir,
    gw: Gateway,
}

impl Env {
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        Env { dir, gw }
    }

    fn client(&self) -> Client {
        self.gw.client(&self.dir.data_dir(), &["localhost"])
    }

    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.login_with(&self.client(), username, password).await
    }

    async fn login_with(
        &self,
        client: &Client,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        login_response(&self.gw, client, username, password).await
    }

    async fn api(&self, username: &str, password: &str) -> Api {
        Api::login(&self.gw, &self.dir, username, password).await
    }

    /// The bootstrap administrator: a global administrator (the Admin group holds every flag).
    async fn admin(&self) -> Api {
        let (username, password) = read_credentials(&self.dir.data_dir());
        self.api(&username, &password).await
    }

    async fn audit_actions(&self) -> Vec<AuditRow> {
        let url = format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT action, actor_name, target_id, client_addr FROM audit_log ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    }
}

/// The administration this file's tests set up through the API.
trait Admin {
    async fn create_tenant(&self, name: &str) -> i64;
    async fn create_user(&self, tenant_id: Option<i64>, username: &str, group_ids: &[i64]) -> i64;
    async fn me(&self) -> Value;
}

impl Admin for Api {
    async fn create_tenant(&self, name: &str) -> i64 {
        let (status, body) = self.post("/api/v1/tenants", json!({"name": name})).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    async fn create_user(&self, tenant_id: Option<i64>, username: &str, group_ids: &[i64]) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/users",
                json!({
                    "tenant_id": tenant_id,
                    "username": username,
                    "password": PASSWORD,
                    "group_ids": group_ids,
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body.get("generated_password").is_none());
        body["id"].as_i64().unwrap()
    }

    async fn me(&self) -> Value {
        let (status, body) = self.get("/api/v1/session").await;
        assert_eq!(status, 200);
        body["user"].clone()
    }
}

fn usernames(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

/// Every admin endpoint, with a valid request for each, aimed at existing objects.
fn admin_routes(user_id: i64, group_id: i64) -> Vec<(Method, String, Option<Value>)> {
    let u = format!("/api/v1/users/{user_id}");
    let g = format!("/api/v1/groups/{group_id}");
    vec![
        (Method::GET, "/api/v1/users".into(), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"username": "intruder", "password": PASSWORD})),
        ),
        (Method::GET, u.clone(), None),
        (
            Method::PATCH,
            u.clone(),
            Some(json!({"display_name": "pwned"})),
        ),
        (Method::DELETE, u.clone(), None),
        (
            Method::POST,
            format!("{u}/password"),
            Some(json!({"new_password": "an-attackers-password"})),
        ),
        (Method::POST, format!("{u}/password"), None),
        (
            Method::PUT,
            format!("{u}/groups"),
            Some(json!({"group_ids": [group_id]})),
        ),
        (Method::GET, "/api/v1/groups".into(), None),
        (
            Method::POST,
            "/api/v1/groups".into(),
            Some(json!({"name": "Mine", "permissions": {"edit_users": true}})),
        ),
        (Method::GET, g.clone(), None),
        (
            Method::PATCH,
            g.clone(),
            Some(json!({"permissions": {"edit_tenants": true}})),
        ),
        (Method::DELETE, g, None),
        (Method::GET, "/api/v1/tenants".into(), None),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            Some(json!({"name": "Shadow"})),
        ),
        (Method::GET, format!("{u}/api-keys"), None),
        (Method::DELETE, format!("{u}/api-keys/1"), None),
    ]
}

#[tokio::test]
async fn non_admins_get_403_on_every_admin_endpoint() {
    let env = Env::start().await;
    let admin = env.admin().await;
    let admin_id = admin.me().await["id"].as_i64().unwrap();
    let staff = admin.create_group(None, "Staff", &["view_droplets"]).await;
    let nobody_id = admin.create_user(None, "nobody", &[]).await;
    let nobody = env.api("nobody", PASSWORD).await;
    let perms = nobody.me().await["permissions"].clone();
    assert!(
        perms.as_object().unwrap().values().all(|v| v == false),
        "{perms}"
    );

    // Aimed at somebody else's objects and at their own account alike.
    for target in [admin_id, nobody_id] {
        for (method, path, body) in admin_routes(target, staff) {
            let (status, answer) = nobody.call(method.clone(), &path, body).await;
            assert_eq!(
                (status, code(&answer)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{method} {path}: {answer}"
            );
        }
    }
    // Anonymous callers are not even asked about rights.
    let anonymous = env.client();
    for (method, path, body) in admin_routes(admin_id, staff) {
        let mut req = anonymous
            .request(method.clone(), env.gw.url("localhost", &path))
            .header("origin", env.gw.origin());
        if let Some(body) = body {
            req = req.json(&body);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }

    // Nothing changed.
    let (status, page) = admin.get("/api/v1/users").await;
    assert_eq!(status, 200);
    assert_eq!(usernames(&page), ["admin", "nobody"]);
    let (status, group) = admin.get(&format!("/api/v1/groups/{staff}")).await;
    assert_eq!(status, 200);
    assert_eq!(group["permissions"]["edit_tenants"], false);
    assert_eq!(group["members"], json!([]));
    let (_, tenants) = admin.get("/api/v1/tenants").await;
    assert_eq!(tenants["total"], 1);
    assert_eq!(env.login("nobody", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn tenant_admins_are_confined_to_their_tenant() {
    let env = Env::start().await;
    let root = env.admin().await;
    let alpha = root.create_tenant("Alpha").await;
    let beta = root.create_tenant("Beta").await;
    let alpha_managers = root
        .create_group(Some(alpha), "Managers", TENANT_ADMIN)
        .await;
    let beta_managers = root
        .create_group(Some(beta), "Managers", TENANT_ADMIN)
        .await;
    let beta_staff = root.create_group(Some(beta), "Staff", &[]).await;
    root.create_user(Some(alpha), "alice", &[alpha_managers])
        .await;
    let carol = root.create_user(Some(alpha), "carol", &[]).await;
    let bob = root.create_user(Some(beta), "bob", &[beta_managers]).await;
    let dave = root.create_user(Some(beta), "dave", &[beta_staff]).await;

    let alice = env.api("alice", PASSWORD).await;
    assert_eq!(alice.me().await["tenant_id"], alpha);

    // Lists hold only Alpha.
    let (status, page) = alice.get("/api/v1/users").await;
    assert_eq!(status, 200);
    assert_eq!(usernames(&page), ["alice", "carol"]);
    assert_eq!(page["total"], 2);
    let (status, page) = alice.get("/api/v1/groups").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [alpha_managers]);
    for path in [
        format!("/api/v1/users?tenant_id={beta}"),
        format!("/api/v1/groups?tenant_id={beta}"),
        "/api/v1/users?tenant_id=999999".to_owned(),
    ] {
        let (status, body) = alice.get(&path).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    let (status, page) = alice.get(&format!("/api/v1/users?tenant_id={alpha}")).await;
    assert_eq!((status, usernames(&page).len()), (StatusCode::OK, 2));

    // Beta's objects answer exactly like ids that do not exist.
    for target in [bob, dave, 999_999] {
        let u = format!("/api/v1/users/{target}");
        for (method, path, body) in [
            (Method::GET, u.clone(), None),
            (Method::PATCH, u.clone(), Some(json!({"display_name": "x"}))),
            (Method::PATCH, u.clone(), Some(json!({"disabled": true}))),
            (Method::DELETE, u.clone(), None),
            (Method::POST, format!("{u}/password"), None),
            (
                Method::PUT,
                format!("{u}/groups"),
                Some(json!({"group_ids": []})),
            ),
        ] {
            let (status, body) = alice.call(method.clone(), &path, body).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {path}: {body}"
            );
        }
    }
    for target in [beta_managers, beta_staff, 999_999] {
        let g = format!("/api/v1/groups/{target}");
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "Renamed"}))),
            (Method::DELETE, None),
        ] {
            let (status, answer) = alice.call(method.clone(), &g, body).await;
            assert_eq!(
                (status, code(&answer)),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {g}: {answer}"
            );
        }
    }
    // Beta's groups cannot be given to an Alpha user, and look like unknown groups.
    let (status, body) = alice
        .put(
            &format!("/api/v1/users/{carol}/groups"),
            json!({"group_ids": [beta_staff]}),
        )
        .await;
    assert_eq!(
        (status, code(&body), body["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            Some("group_ids")
        ),
        "{body}"
    );

    // New objects land in Alpha; naming Beta needs edit_tenants.
    let (status, body) = alice
        .post(
            "/api/v1/users",
            json!({"username": "erin", "tenant_id": beta, "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = alice
        .post(
            "/api/v1/groups",
            json!({"name": "Sneaky", "tenant_id": beta}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, erin) = alice
        .post(
            "/api/v1/users",
            json!({"username": "erin", "email": "erin@example.org"}),
        )
        .await;
    assert_eq!(status, 201, "{erin}");
    assert_eq!(erin["tenant_id"], alpha);
    assert!(erin["generated_password"].as_str().unwrap().len() >= 10);
    assert!(erin.get("password_hash").is_none());
    let erin_id = erin["id"].as_i64().unwrap();
    let (status, body) = alice
        .put(
            &format!("/api/v1/users/{erin_id}/groups"),
            json!({"group_ids": [alpha_managers]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"][0]["name"], "Managers");
    assert_eq!(body["permissions"]["edit_users"], true);

    // Tenants themselves are out of reach, and so is every right Alice does not hold.
    for (method, body) in [
        (Method::GET, None),
        (Method::POST, Some(json!({"name": "Mine"}))),
    ] {
        let (status, answer) = alice.call(method, "/api/v1/tenants", body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::FORBIDDEN, "forbidden")
        );
    }
    let (status, body) = alice
        .post(
            "/api/v1/groups",
            json!({"name": "Global", "permissions": {"edit_tenants": true}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, body) = alice
        .patch(
            &format!("/api/v1/groups/{alpha_managers}"),
            json!({"permissions": {"view_tenants": true}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let me = alice.me().await;
    assert_eq!(me["permissions"]["view_tenants"], false);

    // The global administrator sees both tenants.
    let (status, page) = root.get("/api/v1/users").await;
    assert_eq!(status, 200);
    assert_eq!(
        usernames(&page),
        ["admin", "alice", "bob", "carol", "dave", "erin"]
    );
    let (_, page) = root.get(&format!("/api/v1/users?tenant_id={beta}")).await;
    assert_eq!(usernames(&page), ["bob", "dave"]);
    let (status, body) = root.get(&format!("/api/v1/users/{dave}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["display_name"], "dave");
    assert_eq!(body["groups"][0]["id"], beta_staff);
    let (_, page) = root.get("/api/v1/groups").await;
    assert_eq!(page["total"], 5, "Admin, User, 2 x Managers, Staff: {page}");
    let (status, body) = root.get(&format!("/api/v1/groups/{beta_managers}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Managers");
    assert_eq!(body["members"][0]["username"], "bob");
    let (_, tenants) = root.get("/api/v1/tenants").await;
    assert_eq!(tenants["total"], 3);

    // Bob, Beta's administrator, is confined the same way in the other direction.
    let bob_api = env.api("bob", PASSWORD).await;
    let (_, page) = bob_api.get("/api/v1/users").await;
    assert_eq!(usernames(&page), ["bob", "dave"]);
    let (status, _) = bob_api.get(&format!("/api/v1/users/{carol}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn protected_entities_survive_and_nobody_locks_themselves_out() {
    let env = Env::start().await;
    let root = env.admin().await;
    let admin_id = root.me().await["id"].as_i64().unwrap();
    let (_, groups) = root.get("/api/v1/groups").await;
    let group_id = |name: &str| {
        groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| {
                assert_eq!(g["builtin"], true, "{g}");
                g["id"].as_i64().unwrap()
            })
            .unwrap()
    };
    let (admin_group, user_group) = (group_id("Admin"), group_id("User"));

    // A second global administrator cannot delete, disable or demote the protected one.
    root.create_user(None, "root2", &[admin_group]).await;
    let root2 = env.api("root2", PASSWORD).await;
    let admin_path = format!("/api/v1/users/{admin_id}");
    for (method, path, body) in [
        (Method::DELETE, admin_path.clone(), None),
        (
            Method::PATCH,
            admin_path.clone(),
            Some(json!({"disabled": true})),
        ),
        (
            Method::PUT,
            format!("{admin_path}/groups"),
            Some(json!({"group_ids": [user_group]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/groups/{admin_group}"),
            None,
        ),
        (Method::DELETE, format!("/api/v1/groups/{user_group}"), None),
        (
            Method::PATCH,
            format!("/api/v1/groups/{admin_group}"),
            Some(json!({"name": "Admins"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{user_group}"),
            Some(json!({"name": "Everyone"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{admin_group}"),
            Some(json!({"permissions": {"edit_tenants": false}})),
        ),
    ] {
        let (status, body) = root2.call(method.clone(), &path, body).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "protected"),
            "{method} {path}: {body}"
        );
    }
    // Nor can the protected administrator, nor anyone, harm their own account by accident.
    for (method, path, body) in [
        (Method::DELETE, admin_path.clone(), None),
        (
            Method::PATCH,
            admin_path.clone(),
            Some(json!({"disabled": true})),
        ),
        (
            Method::PUT,
            format!("{admin_path}/groups"),
            Some(json!({"group_ids": []})),
        ),
        (Method::POST, format!("{admin_path}/password"), None),
    ] {
        let (status, body) = root.call(method.clone(), &path, body).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "protected"),
            "{method} {path}: {body}"
        );
    }
    let root2_id = root2.me().await["id"].as_i64().unwrap();
    let (status, body) = root2
        .put(
            &format!("/api/v1/users/{root2_id}/groups"),
            json!({"group_ids": [user_group]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "protected"));
    let (status, body) = root2.delete(&format!("/api/v1/users/{root2_id}")).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "protected"));

    // A group one belongs to cannot be stripped of one's last copy of a right...
    let ops = root
        .create_group(None, "Operators", &["view_instances", "edit_instances"])
        .await;
    let ops_admins = root
        .create_group(
            None,
            "Ops admins",
            &[
                "view_instances",
                "edit_instances",
                "view_groups",
                "edit_groups",
            ],
        )
        .await;
    root.create_user(None, "oscar", &[ops_admins, ops]).await;
    let oscar = env.api("oscar", PASSWORD).await;
    let (status, _) = oscar
        .patch(
            &format!("/api/v1/groups/{ops}"),
            json!({"permissions": {"edit_instances": false}}),
        )
        .await;
    assert_eq!(status, 200, "Oscar keeps edit_instances through Ops admins");
    let (status, body) = oscar
        .patch(
            &format!("/api/v1/groups/{ops_admins}"),
            json!({"permissions": {"edit_groups": false}}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "protected"));
    let (status, body) = oscar.delete(&format!("/api/v1/groups/{ops_admins}")).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "protected"));
    // ...and the groups holding rights Oscar lacks are out of his reach.
    let (status, body) = oscar.delete(&format!("/api/v1/groups/{admin_group}")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );

    // A tenant administrator of the default tenant cannot take over the global administrator.
    let helpdesk = root
        .create_group(None, "Helpdesk", &["view_users", "edit_users"])
        .await;
    root.create_user(None, "helen", &[helpdesk]).await;
    let helen = env.api("helen", PASSWORD).await;
    let (status, body) = helen
        .post(&format!("{admin_path}/password"), json!({}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, body) = helen
        .patch(&admin_path, json!({"email": "helen@example.org"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = helen.get(&admin_path).await;
    assert_eq!(status, 200, "reading is allowed, changing is not");

    // Everything protected is still there and intact.
    let (_, admin) = root.get(&admin_path).await;
    assert_eq!(admin["disabled"], false);
    assert_eq!(admin["protected"], true);
    assert_eq!(admin["email"], Value::Null);
    assert!(
        admin["permissions"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == true)
    );
    let (_, group) = root.get(&format!("/api/v1/groups/{admin_group}")).await;
    assert_eq!(group["name"], "Admin");
    assert!(
        group["permissions"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == true)
    );
    let (status, _) = root.get(&format!("/api/v1/groups/{user_group}")).await;
    assert_eq!(status, 200);
    // There is no way to delete a tenant, the default one included.
    let (status, _) = root.delete("/api/v1/tenants/1").await;
    assert!(!status.is_success(), "{status}");
    let (_, tenants) = root.get("/api/v1/tenants").await;
    assert_eq!(tenants["items"][0]["is_default"], true);
}

#[tokio::test]
async fn rights_are_the_union_of_group_flags_and_never_follow_a_name() {
    let env = Env::start().await;
    let root = env.admin().await;
    let readers = root.create_group(None, "Readers", &["view_users"]).await;
    let auditors = root.create_group(None, "Auditors", &["view_groups"]).await;
    root.create_user(None, "uma", &[readers, auditors]).await;
    let uma = env.api("uma", PASSWORD).await;
    let perms = uma.me().await["permissions"].clone();
    for (flag, value) in perms.as_object().unwrap() {
        let expected = flag == "view_users" || flag == "view_groups";
        assert_eq!(value, &json!(expected), "{flag}");
    }
    assert_eq!(uma.get("/api/v1/users").await.0, 200);
    assert_eq!(uma.get("/api/v1/groups").await.0, 200);
    assert_eq!(uma.get("/api/v1/tenants").await.0, 403);
    let (status, _) = uma
        .post(
            "/api/v1/users",
            json!({"username": "x", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 403);

    // A group named "Admin" in another tenant is just a name.
    let beta = root.create_tenant("Beta").await;
    let fake_admin = root.create_group(Some(beta), "Admin", &[]).await;
    root.create_user(Some(beta), "mallory", &[fake_admin]).await;
    let mallory = env.api("mallory", PASSWORD).await;
    let me = mallory.me().await;
    assert!(
        me["permissions"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == false),
        "{me}"
    );
    for (method, path, body) in admin_routes(me["id"].as_i64().unwrap(), fake_admin) {
        let (status, answer) = mallory.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    let (_, group) = root.get(&format!("/api/v1/groups/{fake_admin}")).await;
    assert_eq!(group["builtin"], false);
    // It is not protected either: its tenant's administrator may delete it.
    let (status, _) = root.delete(&format!("/api/v1/groups/{fake_admin}")).await;
    assert_eq!(status, 204);

    // Changing a group's flags changes its members' rights on their next request.
    let (status, _) = root
        .patch(
            &format!("/api/v1/groups/{readers}"),
            json!({"permissions": {"view_users": false, "view_tenants": true}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(uma.get("/api/v1/users").await.0, 403);
    assert_eq!(uma.get("/api/v1/tenants").await.0, 200);
}

#[tokio::test]
async fn password_resets_end_sessions_and_changes_are_audited() {
    let env = Env::start().await;
    let root = env.admin().await;
    let erin_id = root.create_user(None, "erin", &[]).await;
    let erin_path = format!("/api/v1/users/{erin_id}");
    let erin = env.api("erin", PASSWORD).await;
    assert_eq!(erin.get("/api/v1/session").await.0, 200);
    let key = Api::with_key(&env.gw, &env.dir, &erin.create_key("script").await);
    assert_eq!(key.get("/api/v1/session").await.0, 200);

    // A generated password is returned once and ends every session of the user, and their API
    // keys: a reset is how a compromised account is taken back.
    let (status, body) = root
        .call(Method::POST, &format!("{erin_path}/password"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let generated = body["password"].as_str().unwrap().to_owned();
    assert!(generated.len() >= 10);
    assert_eq!(erin.get("/api/v1/session").await.0, 401);
    assert_eq!(
        key.get("/api/v1/session").await.0,
        401,
        "the API key is revoked"
    );
    assert_eq!(env.login("erin", PASSWORD).await.status(), 401);
    let erin = env.api("erin", &generated).await;

    // A chosen password follows the policy; setting it also ends the sessions.
    let (status, body) = root
        .post(
            &format!("{erin_path}/password"),
            json!({"new_password": "short"}),
        )
        .await;
    assert_eq!(
        (status, code(&body), body["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            Some("new_password")
        )
    );
    assert_eq!(
        erin.get("/api/v1/session").await.0,
        200,
        "a refused reset changes nothing"
    );
    let (status, _) = root
        .post(
            &format!("{erin_path}/password"),
            json!({"new_password": "another-long-passphrase"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(erin.get("/api/v1/session").await.0, 401);
    let erin = env.api("erin", "another-long-passphrase").await;

    // Updates, disabling (which also ends sessions), enabling.
    let (status, body) = root
        .patch(
            &erin_path,
            json!({"display_name": "Erin <b>E.</b>", "email": "Erin@Example.org"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], "Erin <b>E.</b>");
    assert_eq!(body["email"], "erin@example.org");
    let (status, body) = root.patch(&erin_path, json!({"email": null})).await;
    assert_eq!((status, &body["email"]), (StatusCode::OK, &Value::Null));
    let (status, body) = root.patch(&erin_path, json!({"disabled": true})).await;
    assert_eq!((status, &body["disabled"]), (StatusCode::OK, &json!(true)));
    assert_eq!(erin.get("/api/v1/session").await.0, 401);
    assert_eq!(
        env.login("erin", "another-long-passphrase").await.status(),
        401
    );
    let (status, _) = root.patch(&erin_path, json!({"disabled": false})).await;
    assert_eq!(status, 200);
    assert_eq!(
        env.login("erin", "another-long-passphrase").await.status(),
        200
    );

    // Groups, memberships, tenants.
    let crew = root.create_group(None, "Crew", &["view_droplets"]).await;
    let (status, _) = root
        .patch(
            &format!("/api/v1/groups/{crew}"),
            json!({"description": "the crew", "permissions": {"view_instances": true}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = root
        .put(&format!("{erin_path}/groups"), json!({"group_ids": [crew]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["permissions"]["view_instances"], true);
    let (status, _) = root.delete(&format!("/api/v1/groups/{crew}")).await;
    assert_eq!(status, 204);
    let (status, _) = root.get(&format!("/api/v1/groups/{crew}")).await;
    assert_eq!(status, 404);
    root.create_tenant("Gamma").await;
    let (status, _) = root.delete(&erin_path).await;
    assert_eq!(status, 204);
    let (status, _) = root.get(&erin_path).await;
    assert_eq!(status, 404);

    let entries = env.audit_actions().await;
    let actions: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for expected in [
        "user.create",
        "user.password_reset",
        "user.update",
        "user.disable",
        "user.enable",
        "group.create",
        "group.update",
        "user.groups",
        "group.delete",
        "tenant.create",
        "user.delete",
    ] {
        let entry = entries
            .iter()
            .find(|e| e.0 == expected)
            .unwrap_or_else(|| panic!("no {expected} in {actions:?}"));
        assert_eq!(entry.1.as_deref(), Some("admin"), "{expected}: actor");
        assert!(entry.2.is_some(), "{expected}: target");
        assert!(entry.3.is_some(), "{expected}: client address");
    }
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "user.password_reset")
            .count(),
        2
    );
    let reset = entries
        .iter()
        .find(|e| e.0 == "user.password_reset")
        .unwrap();
    assert_eq!(reset.2, Some(erin_id.to_string()));
}

#[tokio::test]
async fn inputs_are_validated_and_lists_are_paginated() {
    let env = Env::start().await;
    let root = env.admin().await;
    for (body, field) in [
        (
            json!({"username": "bad name", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "-dash", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "a@b.org", "password": PASSWORD}),
            "username",
        ),
        (json!({"username": "", "password": PASSWORD}), "username"),
        (
            json!({"username": "x".repeat(65), "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "okay", "email": "not-an-address", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "okay", "email": "a@b", "password": PASSWORD}),
            "email",
        ),
        (json!({"username": "okay", "password": "short"}), "password"),
        (
            json!({"username": "okay", "password": PASSWORD, "is_admin": true}),
            "body",
        ),
        (
            json!({"username": "okay", "password": PASSWORD, "group_ids": [999999]}),
            "group_ids",
        ),
        (
            json!({"username": "okay", "password": PASSWORD, "tenant_id": 999999}),
            "tenant_id",
        ),
    ] {
        let (status, answer) = root.post("/api/v1/users", body.clone()).await;
        assert_eq!(
            (status, code(&answer), answer["error"]["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                Some(field)
            ),
            "{body}: {answer}"
        );
    }
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (
            json!({"name": "Ok", "permissions": {"superuser": true}}),
            "permissions",
        ),
        (
            json!({"name": "Ok", "description": "d".repeat(501)}),
            "description",
        ),
    ] {
        let (status, answer) = root.post("/api/v1/groups", body.clone()).await;
        assert_eq!(
            (status, code(&answer), answer["error"]["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                Some(field)
            ),
            "{body}: {answer}"
        );
    }
    let (status, answer) = root.post("/api/v1/tenants", json!({"name": "  "})).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
    );
    let (status, answer) = root.get("/api/v1/users/not-a-number").await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // Duplicates are conflicts, whatever the letter case.
    root.create_user(None, "Zoe", &[]).await;
    let (status, answer) = root
        .post(
            "/api/v1/users",
            json!({"username": "ZOE", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, code(&answer)), (StatusCode::CONFLICT, "conflict"));
    root.create_tenant("Acme").await;
    let (status, _) = root.post("/api/v1/tenants", json!({"name": "Acme"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = root.post("/api/v1/groups", json!({"name": "Admin"})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Pages: default 50, at most 200, totals independent of the page.
    for i in 0..4 {
        root.create_user(None, &format!("user{i}"), &[]).await;
    }
    let (_, page) = root.get("/api/v1/users").await;
    assert_eq!(
        (
            page["total"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64()
        ),
        (Some(6), Some(50), Some(0))
    );
    let (_, page) = root.get("/api/v1/users?limit=2&offset=3").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["total"], 6);
    assert_eq!(page["items"][0]["username"], "user2");
    let (_, page) = root.get("/api/v1/users?limit=1000").await;
    assert_eq!(page["limit"], 200);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("tenant_id=x", "tenant_id"),
    ] {
        let (status, answer) = root.get(&format!("/api/v1/users?{query}")).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{query}"
        );
    }
    let (_, page) = root.get("/api/v1/groups?limit=1").await;
    assert_eq!(
        (
            page["items"].as_array().unwrap().len(),
            page["total"].as_i64()
        ),
        (1, Some(2))
    );
    let (_, page) = root.get("/api/v1/tenants?offset=1").await;
    assert_eq!(page["items"][0]["name"], "Default");
}

#[tokio::test]
async fn administrators_see_and_revoke_a_users_api_keys_which_stop_at_once() {
    let env = Env::start().await;
    let root = env.admin().await;
    let carol_id = root.create_user(None, "carol", &[]).await;
    let dave_id = root.create_user(None, "dave", &[]).await;
    let carol = env.api("carol", PASSWORD).await;
    let hostile = "<img src=x onerror=alert(1)>";
    let (status, created) = carol
        .post("/api/v1/account/api-keys", json!({"name": hostile}))
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let key_id = created["key"]["id"].as_i64().unwrap();
    let with_key = |path: &str| {
        env.client()
            .get(env.gw.url("localhost", path))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(with_key("/api/v1/session").await.unwrap().status(), 200);

    // The administrator sees the key, never its secret.
    let carol_keys = format!("/api/v1/users/{carol_id}/api-keys");
    let (status, listed) = root.get(&carol_keys).await;
    assert_eq!(status, 200, "{listed}");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["name"], hostile);
    assert_eq!(items[0]["id"], key_id);
    assert!(!listed.to_string().contains(&token), "{listed}");
    assert!(items[0].get("secret_hash").is_none(), "{listed}");
    let (_, other) = root.get(&format!("/api/v1/users/{dave_id}/api-keys")).await;
    assert_eq!(other["items"], json!([]));
    // A script holding the administrator's own API key may do the same.
    let (status, admin_key) = root
        .post("/api/v1/account/api-keys", json!({"name": "ops script"}))
        .await;
    assert_eq!(status, 201, "{admin_key}");
    let listed_by_key: Value = env
        .client()
        .get(env.gw.url("localhost", &carol_keys))
        .bearer_auth(admin_key["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed_by_key["items"][0]["id"], key_id, "{listed_by_key}");

    // The admin's user page lists it, escaped.
    let html = root.page(&format!("/admin/users/{carol_id}")).await;
    assert!(
        html.contains(&format!("data-revoke=\"{key_id}\"")),
        "{html}"
    );
    // Escaped (askama writes numeric references): the text is there, the tag is not.
    assert!(html.contains("img src=x onerror=alert(1)"), "{html}");
    assert!(!html.contains(hostile));
    // The owner's account page shows the same table from the same template.
    let own = carol.page("/account").await;
    assert!(own.contains(&format!("data-revoke=\"{key_id}\"")), "{own}");
    assert!(own.contains("Create key") && !own.contains(hostile));

    // A key is revoked only through its own user's path, and unknown keys are 404.
    let (status, body) = root
        .delete(&format!("/api/v1/users/{dave_id}/api-keys/{key_id}"))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = root.delete(&format!("{carol_keys}/999999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = root.delete(&format!("{carol_keys}/not-a-number")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(with_key("/api/v1/session").await.unwrap().status(), 200);

    // Revoked: the very next request with the key is refused, the user's session is untouched.
    let (status, body) = root.delete(&format!("{carol_keys}/{key_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(with_key("/api/v1/session").await.unwrap().status(), 401);
    assert_eq!(carol.get("/api/v1/session").await.0, 200);
    let (_, listed) = root.get(&carol_keys).await;
    assert!(
        listed["items"][0]["revoked_at"].as_i64().is_some(),
        "{listed}"
    );
    let audit = env.audit_actions().await;
    assert!(
        audit
            .iter()
            .any(|(action, actor, target, _)| action == "api_key.revoke"
                && actor.as_deref() == Some("admin")
                && target.as_deref() == Some(carol_id.to_string().as_str())),
        "{audit:?}"
    );

    // A tenant administrator of another tenant neither sees nor revokes carol's keys.
    let beta = root.create_tenant("Beta").await;
    let managers = root
        .create_group(Some(beta), "Managers", TENANT_ADMIN)
        .await;
    root.create_user(Some(beta), "beatrice", &[managers]).await;
    let beatrice = env.api("beatrice", PASSWORD).await;
    let (status, _) = beatrice.get(&carol_keys).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = beatrice.delete(&format!("{carol_keys}/{key_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

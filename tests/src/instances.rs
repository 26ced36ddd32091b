//! Instances for front-door tests that need no Docker: users added through the CLI, and a
//! running instance whose upstream is an [`EchoServer`], written straight into the gateway's
//! SQLite database with the admin crate's `Store`. The front door only reads the database, so
//! it treats such a row exactly like one the orchestrator wrote for a real container. Also the
//! `http` droplet of the kit's test web server and the `User` group its droplets are granted
//! to, for the tests that launch real containers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flowcase_admin::store::{
    DropletType, InstanceStatus, NewDroplet, NewInstance, Store, TargetKind, now_millis,
};

use crate::GatewayDir;
use crate::echo::EchoServer;

/// The port the kit's test web server image listens on (`flowcase_test_images::httpd_image`).
pub const HTTPD_PORT: u16 = 8080;

/// An `http` droplet of the kit's test web server (its image built on first use) as an
/// administrator would set one up: its port, `/health`, 0.1 CPU and 64 MiB. Not stored yet:
/// callers add what their test needs (a description, environment) first.
pub async fn httpd_droplet(tenant_id: i64, name: &str) -> NewDroplet {
    let image = tokio::task::spawn_blocking(flowcase_test_images::httpd_image)
        .await
        .unwrap()
        .unwrap();
    let mut new = NewDroplet::new(tenant_id, name, DropletType::Http, TargetKind::Container);
    new.image = Some(image);
    new.ports = vec![HTTPD_PORT];
    new.health_path = Some("/health".into());
    new.cpu_millicores = Some(100);
    new.memory_mb = Some(64);
    new
}

/// The default tenant's `User` group, the group tests grant their droplets to.
pub struct UsersGroup {
    pub tenant_id: i64,
    /// The group's id.
    pub id: i64,
}

/// The default tenant's `User` group, once the existing users `members` are in it.
pub async fn users_group(store: &Store, members: &[&str]) -> UsersGroup {
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let group = store
        .find_group_by_name(tenant.id, "User")
        .await
        .unwrap()
        .unwrap();
    for login in members {
        let user = store
            .find_user_by_login(login)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no user {login}"));
        store.add_member(user.id, group.id).await.unwrap();
    }
    UsersGroup {
        tenant_id: tenant.id,
        id: group.id,
    }
}

/// A running instance served by an echo server.
pub struct EchoInstance {
    /// The upstream; dropping it stops it (the instance then points at a dead address).
    pub echo: EchoServer,
    /// `<slug>.apps.localhost`, the instance's host under the default apps domain.
    pub host: String,
    /// The instance's primary key.
    pub id: i64,
}

/// Adds a local user with `flowcase user add <name> --password-stdin`.
pub fn add_user(dir: &GatewayDir, name: &str, password: &str) {
    let out = dir.cli_with_stdin(
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a running instance `slug` owned by the existing user `owner`, on a fresh HTTP
/// droplet, with an echo server as its upstream, and waits until the running gateway routes
/// its host.
pub async fn echo_instance(dir: &GatewayDir, owner: &str, slug: &str) -> EchoInstance {
    let echo = EchoServer::start().await;
    let id = running_instance_row(
        dir,
        owner,
        slug,
        ("Echo", DropletType::Http),
        &echo.addr.to_string(),
        None,
    )
    .await;
    let host = format!("{slug}.apps.localhost");
    wait_until_routed(dir, &host).await;
    EchoInstance { echo, host, id }
}

/// A running container labelled as this gateway's instance `slug`, for rows written by
/// [`running_instance_row`]: reconciliation, which any container event on the shared dockerd
/// may set off, finds the row's container where the row says and leaves the row alone. It
/// serves nothing (no network): the row's upstream is the test's own server. The gateway
/// dir's drop removes it with the gateway's other containers.
fn placeholder_container(dir: &GatewayDir, slug: &str) -> String {
    let image = flowcase_test_images::httpd_image().unwrap();
    let out = std::process::Command::new("docker")
        .args(["run", "-d", "--network", "none", "--label"])
        .arg(format!("flowcase.deployment={}", dir.deployment()))
        .arg("--label")
        .arg(format!("flowcase.instance={slug}"))
        .arg("--name")
        .arg(format!("{}-{slug}", dir.deployment()))
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Writes a running instance `slug` of the existing user `owner` straight into the gateway's
/// database, on the droplet `droplet` (name and type; created the first time, then shared, as a
/// catalogue entry would be), at `upstream`, with `password` sealed as its desktop password as
/// the orchestrator seals it. Returns the instance's id.
pub async fn running_instance_row(
    dir: &GatewayDir,
    owner: &str,
    slug: &str,
    (droplet_name, kind): (&str, DropletType),
    upstream: &str,
    password: Option<&str>,
) -> i64 {
    use flowcase_admin::orchestrator::{CREDENTIALS_PURPOSE, InstanceCredentials};
    let store = Store::connect(&database_url(dir)).await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let user = store
        .find_user_by_login(owner)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no user {owner}"));
    let now = now_millis();
    let existing = store
        .list_droplets()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == droplet_name && d.tenant_id == tenant.id);
    let droplet = match existing {
        Some(droplet) => droplet,
        None => store
            .create_droplet(
                &NewDroplet::new(tenant.id, droplet_name, kind, TargetKind::Container),
                now,
            )
            .await
            .unwrap(),
    };
    // Before the row: the row goes from created to running in a few statements, leaving a
    // refresh of the gateway's routes little chance to see it half written.
    let container = placeholder_container(dir, slug);
    let instance = store
        .create_instance(
            &NewInstance {
                slug: slug.into(),
                droplet_id: droplet.id,
                user_id: user.id,
                status: InstanceStatus::Requested,
            },
            now,
        )
        .await
        .unwrap();
    store
        .set_instance_container(
            instance.id,
            Some(&container),
            Some(&format!("flowcase-{slug}")),
            Some(upstream),
        )
        .await
        .unwrap();
    if let Some(password) = password {
        let keyring =
            flowcase_admin::secrets::ensure_key_file(&dir.data_dir().join("secret.key")).unwrap();
        let sealed = flowcase_admin::secrets::seal::seal(
            &keyring,
            CREDENTIALS_PURPOSE,
            &InstanceCredentials {
                password: password.to_owned(),
            },
            i64::MAX,
        )
        .unwrap();
        store
            .set_instance_credentials(instance.id, Some(&sealed))
            .await
            .unwrap();
    }
    store
        .set_instance_status(instance.id, InstanceStatus::Running, None, now)
        .await
        .unwrap();
    store.close().await;
    instance.id
}

/// A running VNC desktop instance for tunnel tests. Its "container" is only an address: the
/// guacd double records what the gateway asks it to connect to, it dials nothing.
pub struct DesktopInstance {
    pub id: i64,
    pub slug: String,
    /// What the row says the desktop listens on (`127.0.0.1:<port>`, as in published-loopback).
    pub upstream: SocketAddr,
    /// The per-instance desktop password, sealed in the row as the orchestrator seals it.
    pub password: String,
}

/// Creates a running VNC instance `slug` owned by `owner` on a fresh VNC droplet, with a sealed
/// desktop password, written straight into the gateway's SQLite database (like
/// [`echo_instance`]). Point the gateway's `[guacd] address` at a [`crate::guacd::GuacdDouble`]
/// (`FLOWCASE_GUACD__ADDRESS`) to open it through the tunnel, and keep the gateway away from
/// Docker (`FLOWCASE_DOCKER__HOST` at a socket that does not exist): reconciliation would mark
/// the row gone, its container being nowhere.
pub async fn desktop_instance(dir: &GatewayDir, owner: &str, slug: &str) -> DesktopInstance {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 5901));
    let password = format!("{:08x}", rand::random::<u32>());
    let id = running_instance_row(
        dir,
        owner,
        slug,
        (&format!("Desktop {slug}"), DropletType::Vnc),
        &upstream.to_string(),
        Some(&password),
    )
    .await;
    DesktopInstance {
        id,
        slug: slug.into(),
        upstream,
        password,
    }
}

/// The database of the gateway of `dir`: its `FLOWCASE_DATABASE__URL`, or its SQLite file.
pub fn database_url(dir: &GatewayDir) -> String {
    dir.env
        .get("FLOWCASE_DATABASE__URL")
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}", dir.data_dir().join("flowcase.db").display()))
}

/// Waits until the running gateway routes `host`: it reloads instances every 500 ms, but a
/// loaded machine can stretch that, so a fixed sleep made tests flaky. An unknown instance host
/// answers 404; a known one sends an anonymous visitor to sign in.
pub async fn wait_until_routed(dir: &GatewayDir, host: &str) {
    let pem = std::fs::read(dir.data_dir().join("tls/self-signed.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], dir.https_port)))
        .build()
        .unwrap();
    let url = format!("https://{host}:{}/", dir.https_port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = client.get(&url).send().await.map(|r| r.status());
        if matches!(&status, Ok(s) if *s != reqwest::StatusCode::NOT_FOUND) {
            // Routed, but maybe as the row was half written (`requested`, no upstream yet):
            // anonymous requests cannot tell. A refresh that starts now reads the finished row;
            // give it time to start and finish (it runs every 500 ms).
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway does not route {host} yet: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/v1/session` for `user` on the public host with `client`, as the sign-in page sends
/// it; the answer untouched (a refusal is the test's to check).
pub async fn login_response(
    gw: &crate::Gateway,
    client: &reqwest::Client,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(gw.url("localhost", "/api/v1/session"))
        .header("origin", gw.origin())
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Logs `user` in on the public host with `client` (its cookie jar keeps the session); returns
/// the session's CSRF token.
pub async fn login(
    gw: &crate::Gateway,
    client: &reqwest::Client,
    user: &str,
    password: &str,
) -> String {
    let resp = login_response(gw, client, user, password).await;
    assert_eq!(resp.status(), 200, "login of {user}");
    resp.json::<serde_json::Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Goes through the instance-host login (app-auth code → host-only cookie) with a logged-in
/// `client` and returns the app cookie as `name=value`, for clients that send it by hand.
pub async fn app_cookie(gw: &crate::Gateway, client: &reqwest::Client, host: &str) -> String {
    app_cookie_across(gw, gw, client, host).await
}

/// [`app_cookie`] with the code asked of `issuer` and redeemed on `redeemer` (two gateways on
/// one database): returns the host-only app cookie set by `redeemer`.
pub async fn app_cookie_across(
    issuer: &crate::Gateway,
    redeemer: &crate::Gateway,
    client: &reqwest::Client,
    host: &str,
) -> String {
    // Every hop goes to the issuer except the redemption of the code on the instance host.
    let mut url = reqwest::Url::parse(&issuer.url(host, "/")).unwrap();
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            if c.starts_with("__Host-flowcase_app=") {
                return c.split(';').next().unwrap().to_owned();
            }
        }
        assert!(
            resp.status().is_redirection(),
            "no app cookie; got {}",
            resp.status()
        );
        url = url
            .join(resp.headers()["location"].to_str().unwrap())
            .unwrap();
        if url.host_str() == Some(host) && url.query().is_some_and(|q| q.contains("code")) {
            url.set_port(Some(redeemer.ports.0)).unwrap();
        }
    }
    panic!("no app cookie after 10 redirects");
}

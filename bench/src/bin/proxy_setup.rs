//! Set-up of the proxy benchmark (`bench/proxy.sh` runs it against a running gateway): an
//! instance owned by the benchmark user whose upstream is the benchmark's upstream, written into
//! the gateway's SQLite database as the orchestrator would; then the real login of that user and
//! the real instance-host flow (`/app-auth` → code → `/__flowcase/auth` → app cookie). Prints
//! the app cookie (`name=value`) for the load generator.
//!
//! `proxy_setup DATA_DIR HTTPS_PORT UPSTREAM_ADDR USER PASSWORD SLUG`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowcase_admin::Store;
use flowcase_admin::store::{
    DropletType, InstanceStatus, NewDroplet, NewInstance, TargetKind, now_millis,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, port, upstream, user, password, slug] = args.as_slice() else {
        bail!("usage: proxy_setup DATA_DIR HTTPS_PORT UPSTREAM_ADDR USER PASSWORD SLUG");
    };
    let data_dir = PathBuf::from(data_dir);
    let port: u16 = port.parse().context("HTTPS_PORT")?;
    add_instance(&data_dir, upstream, user, slug).await?;

    let host = format!("{slug}.apps.localhost");
    let gateway = SocketAddr::from(([127, 0, 0, 1], port));
    let pem = std::fs::read(data_dir.join("tls/self-signed.crt"))?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .resolve("localhost", gateway)
        .resolve(&host, gateway)
        .build()?;
    let origin = format!("https://localhost:{port}");
    let login = client
        .post(format!("{origin}/api/v1/session"))
        .header("origin", &origin)
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await?;
    if !login.status().is_success() {
        bail!("login of {user}: {}", login.status());
    }

    // The gateway loads instances every 500 ms: wait until it routes the new host.
    let start = format!("https://{host}:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    let cookie = loop {
        if let Some(cookie) = app_cookie(&client, &start).await? {
            break cookie;
        }
        if Instant::now() > deadline {
            bail!("no app cookie for {host} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{cookie}");
    Ok(())
}

async fn add_instance(
    data_dir: &std::path::Path,
    upstream: &str,
    user: &str,
    slug: &str,
) -> anyhow::Result<()> {
    let store = Store::connect(&format!(
        "sqlite://{}",
        data_dir.join("flowcase.db").display()
    ))
    .await?;
    let tenant = store.default_tenant().await?.context("no default tenant")?;
    let owner = store
        .find_user_by_login(user)
        .await?
        .with_context(|| format!("no user {user}"))?;
    let now = now_millis();
    let droplet = store
        .create_droplet(
            &NewDroplet::new(tenant.id, "Bench", DropletType::Http, TargetKind::Container),
            now,
        )
        .await?;
    let instance = store
        .create_instance(
            &NewInstance {
                slug: slug.into(),
                droplet_id: droplet.id,
                user_id: owner.id,
                status: InstanceStatus::Requested,
            },
            now,
        )
        .await?;
    store
        .set_instance_container(instance.id, Some("bench"), Some("bench"), Some(upstream))
        .await?;
    store
        .set_instance_status(instance.id, InstanceStatus::Running, None, now)
        .await?;
    store.close().await;
    Ok(())
}

/// Follows the instance-host login; None while the gateway does not route the host yet.
async fn app_cookie(client: &reqwest::Client, start: &str) -> anyhow::Result<Option<String>> {
    let mut url = reqwest::Url::parse(start)?;
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str()?;
            if c.starts_with("__Host-flowcase_app=") {
                return Ok(c.split(';').next().map(str::to_owned));
            }
        }
        if !resp.status().is_redirection() {
            bail!("the instance-host login ended on {}", resp.status());
        }
        let location = resp
            .headers()
            .get("location")
            .context("redirect without location")?
            .to_str()?;
        url = url.join(location)?;
    }
    bail!("no app cookie after 10 redirects")
}

//! The instance lists and the dashboard with a populated database (issue 7: `GET
//! /api/instances` and `/dashboard` with 1,000 instances and 100 users, target p99 ≤ 10 ms).
//! `bench/api.sh` builds the release gateway and this, and runs this, which on loopback only:
//!
//! - starts the gateway with the e2e kit (SQLite, Docker pointed at a dead socket so the
//!   reconciler can neither reach nor mark gone the rows written here);
//! - fills its database through the admin crate's `Store`: three tenants with two groups each,
//!   ten droplets per tenant granted to its groups, 100 users (the bootstrap administrator, one
//!   measured user and 98 others) and ten running instances each — 1,000 rows, no containers;
//! - logs the administrator and the user in through the API, once each, and for every endpoint,
//!   caller and concurrency sends a bounded number of `GET`s over HTTPS through the front door:
//!   one HTTP/1.1 keep-alive connection per concurrent client, warmed before the measured
//!   requests; every answer must be 200 and is read whole;
//! - prints p50/p90/p99 latency and requests/s per row, against the target.
//!
//! There is no peer in this benchmark: the issue names none (the seed's Flask pages are not
//! something this repository can run). Numbers are printed, never asserted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowcase_admin::store::{
    DropletType, InstanceStatus, NewDroplet, NewGroup, NewInstance, NewUser, Permissions, Store,
    TargetKind, now_millis,
};
use flowcase_e2e::instances::{add_user, database_url};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};

const USER_PASSWORD: &str = "bench horse battery staple";
const USER: &str = "bench-user";
const TENANTS: usize = 3;
const DROPLETS_PER_TENANT: usize = 10;
const USERS: usize = 100;
const INSTANCES_PER_USER: usize = 10;
const MAX_REQUESTS: usize = 100_000;
const MAX_CONCURRENCY: usize = 256;
/// The target of issue 7, in milliseconds.
const TARGET_P99_MS: f64 = 10.0;
/// One request, warm-up included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    requests: usize,
    warmup: usize,
    concurrency: Vec<usize>,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        requests: 1_000,
        warmup: 100,
        concurrency: vec![1, 8, 32],
        max_seconds: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |max: usize| -> anyhow::Result<usize> {
            let v: usize = it.next().context("a value")?.parse()?;
            if v == 0 || v > max {
                bail!("{arg} must be within 1..={max}");
            }
            Ok(v)
        };
        match arg.as_str() {
            "--requests" => args.requests = value(MAX_REQUESTS)?,
            "--warmup" => args.warmup = value(MAX_REQUESTS)?,
            "--max-seconds" => args.max_seconds = value(3_600)? as u64,
            "--concurrency" => {
                let list = it.next().context("a list such as 1,8,32")?;
                args.concurrency = list
                    .split(',')
                    .map(|c| {
                        let c: usize = c.trim().parse()?;
                        if c == 0 || c > MAX_CONCURRENCY {
                            bail!("--concurrency values must be within 1..={MAX_CONCURRENCY}");
                        }
                        Ok(c)
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            _ => bail!(
                "usage: api [--requests N] [--warmup N] [--concurrency 1,8,32] \
                 [--max-seconds N] (unknown {arg})"
            ),
        }
    }
    Ok(args)
}

/// What was written, for the header.
struct Population {
    users: usize,
    instances: usize,
    droplets: usize,
}

/// Tenants, groups, droplets, users and running instance rows, straight through the store.
async fn populate(dir: &GatewayDir, admin: &str) -> anyhow::Result<Population> {
    // The measured user logs in, so it gets a real password through the CLI (one Argon2 hash);
    // the others never log in and have none.
    add_user(dir, USER, USER_PASSWORD);
    let store = Store::connect(&database_url(dir)).await?;
    let now = now_millis();
    let default = store.default_tenant().await?.context("no default tenant")?;
    let mut tenants = vec![default.id];
    for n in 1..TENANTS {
        tenants.push(
            store
                .create_tenant(&format!("Bench {n}"), false, now)
                .await?
                .id,
        );
    }
    let mut groups = Vec::new(); // per tenant: two groups
    let mut droplets = Vec::new(); // per tenant: its droplets
    for (t, &tenant_id) in tenants.iter().enumerate() {
        let mut pair = Vec::new();
        for name in ["staff", "students"] {
            let permissions = Permissions::default();
            let group = store
                .create_group(
                    &NewGroup {
                        tenant_id,
                        name: format!("bench-{name}"),
                        description: format!("{name} of tenant {t}"),
                        permissions,
                    },
                    now,
                )
                .await?;
            pair.push(group.id);
        }
        let mut ids = Vec::new();
        for d in 0..DROPLETS_PER_TENANT {
            let kind = if d % 2 == 0 {
                DropletType::Http
            } else {
                DropletType::Vnc
            };
            let mut new = NewDroplet::new(
                tenant_id,
                format!("Bench droplet {t}-{d}"),
                kind,
                TargetKind::Container,
            );
            new.description = format!("Droplet {d} of tenant {t}, for the API benchmark");
            let droplet = store.create_droplet(&new, now).await?;
            for &group in &pair {
                store.grant_droplet(droplet.id, group).await?;
            }
            ids.push(droplet.id);
        }
        groups.push(pair);
        droplets.push(ids);
    }

    // The administrator and the measured user (both in the default tenant) and 98 others
    // spread over the tenants and groups.
    let mut owners = Vec::new(); // (user id, tenant index)
    for name in [admin, USER] {
        let user = store
            .find_user_by_login(name)
            .await?
            .with_context(|| format!("no user {name}"))?;
        owners.push((user.id, 0));
    }
    store.add_member(owners[1].0, groups[0][1]).await?;
    for n in owners.len()..USERS {
        let t = n % TENANTS;
        let user = store
            .create_user(
                &NewUser {
                    tenant_id: tenants[t],
                    username: format!("bench{n:03}"),
                    email: Some(format!("bench{n:03}@example.test")),
                    password_hash: None,
                    display_name: format!("Bench User {n:03}"),
                    external: false,
                    disabled: false,
                    protected: false,
                },
                now,
            )
            .await?;
        store.add_member(user.id, groups[t][n % 2]).await?;
        owners.push((user.id, t));
    }

    // Ten running instances per user, created over the last 1,000 seconds so the lists' order
    // has something to sort.
    let mut count = 0usize;
    for (u, &(user_id, t)) in owners.iter().enumerate() {
        for k in 0..INSTANCES_PER_USER {
            let at = now - 1_000_000 + (count as i64) * 1_000;
            let slug = format!("bench{u:03}i{k}");
            let instance = store
                .create_instance(
                    &NewInstance {
                        slug: slug.clone(),
                        droplet_id: droplets[t][(u + k) % DROPLETS_PER_TENANT],
                        user_id,
                        status: InstanceStatus::Requested,
                    },
                    at,
                )
                .await?;
            store
                .set_instance_container(
                    instance.id,
                    Some(&format!("c{count:04}")),
                    Some(&format!("flowcase-{slug}")),
                    Some("127.0.0.1:9"),
                )
                .await?;
            store
                .set_instance_status(instance.id, InstanceStatus::Running, None, at)
                .await?;
            count += 1;
        }
    }
    store.close().await;
    Ok(Population {
        users: owners.len(),
        instances: count,
        droplets: TENANTS * DROPLETS_PER_TENANT,
    })
}

/// Running rows left, to show the reconciler did not touch them during the run.
async fn running_rows(dir: &GatewayDir) -> anyhow::Result<i64> {
    let store = Store::connect(&database_url(dir)).await?;
    let (_, total) = store
        .page_instance_rows(
            &flowcase_admin::store::InstanceFilter {
                status: Some(InstanceStatus::Running),
                ..Default::default()
            },
            1,
            0,
        )
        .await?;
    store.close().await;
    Ok(total)
}

/// The session cookie of a login through the API (`name=value`), read from `Set-Cookie`.
async fn login(
    gw: &Gateway,
    data_dir: &Path,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let client = client(gw, data_dir)?;
    let resp = client
        .post(gw.url("localhost", "/api/v1/session"))
        .header("origin", gw.origin())
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await?;
    if resp.status() != 200 {
        bail!("login of {user}: {}", resp.status());
    }
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-flowcase_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .context("no session cookie in the login answer")
}

/// One keep-alive HTTP/1.1 connection's worth of client, trusting the gateway's certificate.
fn client(gw: &Gateway, data_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(data_dir.join("tls/self-signed.crt"))?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", gw.https_addr())
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

struct Measured {
    requests: usize,
    /// Sorted, in milliseconds.
    latencies: Vec<f64>,
    elapsed: Duration,
    /// Bytes of the last answer, to show what was served.
    body_bytes: usize,
}

/// `count` GETs of `url` with `cookie` shared by `clients` (one connection each), after
/// `warmup` unmeasured ones on the same connections.
async fn measure(
    clients: &[reqwest::Client],
    url: &str,
    cookie: &str,
    count: usize,
    warmup: usize,
    max: Duration,
) -> anyhow::Result<Measured> {
    let run = |count: usize, deadline: Instant| {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = clients
            .iter()
            .map(|client| {
                let (client, next) = (client.clone(), next.clone());
                let (url, cookie) = (url.to_owned(), cookie.to_owned());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut bytes = 0;
                    while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline
                    {
                        let start = Instant::now();
                        let resp = client.get(&url).header("cookie", &cookie).send().await?;
                        let status = resp.status();
                        let body = resp.bytes().await?;
                        samples.push(start.elapsed().as_secs_f64() * 1e3);
                        if status != 200 {
                            bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                        }
                        bytes = body.len();
                    }
                    anyhow::Ok((samples, bytes))
                })
            })
            .collect();
        async move {
            let mut all = Vec::with_capacity(count);
            let mut bytes = 0;
            for task in tasks {
                let (samples, b) = task.await??;
                all.extend(samples);
                bytes = bytes.max(b);
            }
            anyhow::Ok((all, bytes))
        }
    };
    run(warmup.max(clients.len()), Instant::now() + max).await?;
    let start = Instant::now();
    let (mut latencies, body_bytes) = run(count, start + max).await?;
    let elapsed = start.elapsed();
    latencies.sort_by(f64::total_cmp);
    Ok(Measured {
        requests: latencies.len(),
        latencies,
        elapsed,
        body_bytes,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut dir = GatewayDir::new();
    let socket = dir.dir.path().join("no-docker.sock");
    std::fs::write(&socket, "")?;
    dir.set(
        "FLOWCASE_DOCKER__HOST",
        &format!("unix://{}", socket.display()),
    );
    // One access-log line per request would measure the terminal; errors still show.
    dir.set("FLOWCASE_LOG__LEVEL", "warn");
    let gw = Gateway::start(&dir).await;
    let data_dir = dir.data_dir();
    let (admin, admin_password) = read_credentials(&data_dir);
    eprintln!("filling the database");
    let filled = Instant::now();
    let population = populate(&dir, &admin).await?;
    eprintln!(
        "{} users, {} droplets, {} instances in {:.1} s",
        population.users,
        population.droplets,
        population.instances,
        filled.elapsed().as_secs_f64()
    );
    let callers = [
        (
            "admin",
            login(&gw, &data_dir, &admin, &admin_password).await?,
        ),
        ("user", login(&gw, &data_dir, USER, USER_PASSWORD).await?),
    ];
    let endpoints: [(&str, &[&str]); 5] = [
        ("/api/instances", &["admin", "user"]),
        ("/api/v1/instances", &["admin", "user"]),
        ("/api/v1/instances?scope=all", &["admin"]),
        ("/api/v1/instances?scope=all&limit=200", &["admin"]),
        ("/dashboard", &["admin", "user"]),
    ];

    let mut rows = Vec::new();
    for (path, who) in endpoints {
        for caller in who {
            let cookie = callers
                .iter()
                .find(|(name, _)| name == caller)
                .map(|(_, c)| c.as_str())
                .context("caller")?;
            for &c in &args.concurrency {
                let clients = (0..c)
                    .map(|_| client(&gw, &data_dir))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                eprintln!("{path} as {caller}, {c} connection(s)");
                let m = measure(
                    &clients,
                    &gw.url("localhost", path),
                    cookie,
                    args.requests,
                    args.warmup,
                    Duration::from_secs(args.max_seconds),
                )
                .await
                .with_context(|| format!("{path} as {caller}"))?;
                rows.push((path, *caller, c, m));
            }
        }
    }
    let running = running_rows(&dir).await?;
    if running != population.instances as i64 {
        eprintln!(
            "warning: {running} of {} instance rows are still running after the run",
            population.instances
        );
    }

    println!(
        "instance lists and dashboard through the front door (HTTPS, HTTP/1.1 keep-alive, \
         loopback): {} users, {} droplets, {} running instances ({running} still running after \
         the run); {} measured requests after {} warm-up per row",
        population.users, population.droplets, population.instances, args.requests, args.warmup
    );
    println!(
        "{:<38} {:<6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}   {:<12} met?",
        "endpoint",
        "caller",
        "conn",
        "requests",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "req/s",
        "bytes",
        "target"
    );
    for (path, caller, c, m) in &rows {
        let p99 = percentile(&m.latencies, 0.99);
        let complete = if m.requests < args.requests {
            " (time cap)"
        } else {
            ""
        };
        println!(
            "{path:<38} {caller:<6} {c:>5} {:>8} {:>8.2} {:>8.2} {p99:>8.2} {:>9.0} {:>8}   {:<12} {}{complete}",
            m.requests,
            percentile(&m.latencies, 0.5),
            percentile(&m.latencies, 0.9),
            m.requests as f64 / m.elapsed.as_secs_f64(),
            m.body_bytes,
            "p99 <= 10 ms",
            if p99 <= TARGET_P99_MS {
                "met"
            } else {
                "MISSED"
            },
        );
    }
    drop(gw);
    Ok(())
}

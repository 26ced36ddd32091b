//! Launch-to-ready and wake-to-ready through the orchestrator, against plain Docker doing the
//! same work on the same image in the same run (`bench/launch.sh` builds and runs this).
//!
//! Each round runs every scenario once, in a new random order, and removes what it made only
//! after the last measurement, so drift of the machine (other builds, page cache) and the
//! engine's clean-up work hit all scenarios alike:
//!
//! - `docker CLI`: `docker create` + `docker start` of the test HTTP image with the same limits
//!   and a fixed loopback port, then the readiness probe;
//! - `engine API` (the floor): the same container spec the orchestrator would use, created,
//!   started and inspected through the same engine client, then the same probe, polled tightly;
//! - `flowcase launch`: `Orchestrator::launch` (admission, audit, network check, create, start,
//!   probe, every transition persisted);
//! - wake: a stopped container started again (`engine API` start + probe, against
//!   `Orchestrator::ensure_running`);
//! - warm pool: `Orchestrator::launch` of a droplet whose pool holds one container made ahead,
//!   started (and created-only, for comparison).
//!
//! Everything stays on loopback; every wait is bounded; containers, the network and the
//! database of the run are removed at the end (and `bench/launch.sh` removes leftovers of an
//! interrupted run before it starts). Timings are printed, never asserted.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowcase_admin::Store;
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::engine::{Engine, Exposure};
use flowcase_admin::orchestrator::ready::{Probe, probe_once};
use flowcase_admin::orchestrator::spec::{self, SpecInput};
use flowcase_admin::orchestrator::{Actor, Options, Orchestrator, SystemClock};
use flowcase_admin::secrets::{Key, Keyring};
use flowcase_admin::store::{Droplet, DropletType, NewDroplet, NewUser, TargetKind, User};
use rand::seq::SliceRandom;

/// Label on everything the benchmark creates, so leftovers can be found.
const BENCH_LABEL: &str = "flowcase-bench";
const PORT: u16 = 8080;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll period of the floors' readiness loop: tight, so the floor is the real floor.
const FLOOR_POLL: Duration = Duration::from_millis(2);
const MAX_ROUNDS: usize = 200;
/// Pause between rounds, for the engine to finish cleaning up after the round's removals.
const SETTLE: Duration = Duration::from_millis(300);

struct Args {
    rounds: usize,
    database: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 10,
        database: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => {
                let n: usize = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds needs a number")?;
                if n == 0 || n > MAX_ROUNDS {
                    bail!("--rounds must be 1 to {MAX_ROUNDS}");
                }
                args.rounds = n;
            }
            "--database" => args.database = Some(it.next().context("--database needs a URL")?),
            "-h" | "--help" => {
                println!(
                    "usage: launch [--rounds N (10)] [--database URL (a temporary SQLite file)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// Removes the run's containers and network whatever happens.
struct Cleanup {
    run: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=flowcase.deployment={}", self.run);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.run])
            .output();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn wait_ready(addr: SocketAddr, probe: &Probe) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match probe_once(addr, probe).await {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() >= deadline => bail!("not ready: {seen}"),
            Err(_) => tokio::time::sleep(FLOOR_POLL).await,
        }
    }
}

struct Bench {
    run: String,
    store: Store,
    engine: Arc<DockerEngine>,
    orch: Arc<Orchestrator>,
    user: User,
    plain: Droplet,
    pooled: Droplet,
    cold_pool: Droplet,
    image: String,
    probe: Probe,
    serial: usize,
}

impl Bench {
    fn spec_input<'a>(&'a self, slug: &'a str) -> SpecInput<'a> {
        SpecInput {
            slug,
            user_id: self.user.id,
            user_name: &self.user.username,
            network: &self.run,
            exposure: Exposure::LoopbackEphemeral,
            password: None,
            deployment: &self.run,
            // The bench's droplets mount no profile.
            installation: "",
        }
    }

    fn next_slug(&mut self) -> String {
        self.serial += 1;
        format!("{}-floor-{}", self.run, self.serial)
    }

    /// `docker create` + `docker start` + probe.
    async fn cli_launch(&mut self) -> anyhow::Result<(Duration, Option<Leftover>)> {
        let name = self.next_slug();
        let port = free_port()?;
        let publish = format!("127.0.0.1:{port}:{PORT}");
        let labels = [
            format!("flowcase.deployment={}", self.run),
            format!("{BENCH_LABEL}=1"),
        ];
        let started = Instant::now();
        let id = docker(&[
            "create",
            "--name",
            &name,
            "--label",
            &labels[0],
            "--label",
            &labels[1],
            "--network",
            &self.run,
            "-p",
            &publish,
            "--cpus",
            "0.25",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--pids-limit",
            "512",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-e",
            "BODY=bench",
            &self.image,
        ])?;
        docker(&["start", &id])?;
        wait_ready(SocketAddr::from(([127, 0, 0, 1], port)), &self.probe).await?;
        Ok((started.elapsed(), Some(Leftover::Container(id))))
    }

    /// The orchestrator's own spec through the engine client: create + start + inspect + probe.
    async fn api_launch(&mut self) -> anyhow::Result<(Duration, String)> {
        let slug = self.next_slug();
        let container = spec::container_spec(&self.plain, &self.spec_input(&slug))?;
        let started = Instant::now();
        let id = self.engine.create(&container).await?;
        let addr = self.api_start(&id).await?;
        wait_ready(addr, &self.probe).await?;
        Ok((started.elapsed(), id))
    }

    async fn api_start(&self, id: &str) -> anyhow::Result<SocketAddr> {
        self.engine.start(id).await?;
        let info = self
            .engine
            .inspect(id)
            .await?
            .context("the container vanished")?;
        let port = info
            .published
            .get(&PORT)
            .context("the port was not published")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], *port)))
    }

    /// A stopped container started again: start + inspect + probe.
    async fn api_wake(&self, id: &str) -> anyhow::Result<Duration> {
        self.engine.stop(id, Duration::ZERO).await?;
        let started = Instant::now();
        let addr = self.api_start(id).await?;
        wait_ready(addr, &self.probe).await?;
        Ok(started.elapsed())
    }

    async fn launch(&self, droplet: &Droplet) -> anyhow::Result<(Duration, i64)> {
        let started = Instant::now();
        let (instance, _) = self.orch.launch(&self.user, droplet).await?;
        Ok((started.elapsed(), instance.id))
    }

    async fn wake(&self, instance_id: i64) -> anyhow::Result<Duration> {
        self.orch.stop(instance_id, &Actor::system()).await?;
        let started = Instant::now();
        self.orch.ensure_running(instance_id).await?;
        Ok(started.elapsed())
    }

    /// Fills the pools (untimed) until the droplet has a ready container.
    async fn fill(&self, droplet: &Droplet) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.orch.fill_pools().await?;
            if self
                .orch
                .pool_levels()
                .await?
                .get(&droplet.id)
                .is_some_and(|&(ready, _)| ready >= 1)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the pool of {} did not fill", droplet.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pool_launch(&self, droplet: &Droplet) -> anyhow::Result<(Duration, Option<Leftover>)> {
        self.fill(droplet).await?;
        let pooled: Vec<String> = self
            .store
            .list_pool_containers()
            .await?
            .into_iter()
            .filter(|p| p.droplet_id == droplet.id)
            .map(|p| p.slug)
            .collect();
        let started = Instant::now();
        let (instance, _) = self.orch.launch(&self.user, droplet).await?;
        let took = started.elapsed();
        // Served by the pool, or this measured an ordinary launch.
        if !pooled.contains(&instance.slug) {
            bail!("the launch of {} did not use its pool", droplet.name);
        }
        Ok((took, Some(Leftover::Instance(instance.id))))
    }
}

/// What a measurement leaves behind, removed once the whole round is measured so that no
/// removal (and the engine's clean-up after it) overlaps a measurement.
enum Leftover {
    Container(String),
    Instance(i64),
}

#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<Duration>>);

impl Samples {
    fn add(&mut self, name: &'static str, d: Duration) {
        self.0.entry(name).or_default().push(d);
    }

    /// (median, p90, min) in milliseconds.
    fn summary(&self, name: &str) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self
            .0
            .get(name)?
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            // Nearest rank.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some((median, at(0.9), v[0]))
    }
}

const CLI: &str = "docker CLI: create + start + ready";
const API: &str = "engine API: create + start + ready";
const LAUNCH: &str = "flowcase launch";
const API_WAKE: &str = "engine API: start + ready (wake)";
const WAKE: &str = "flowcase wake (ensure_running)";
const POOL: &str = "flowcase launch, warm pool (started)";
const COLD_POOL: &str = "flowcase launch, warm pool (created)";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let run = format!("flowcase-bench-{:08x}", rand::random::<u32>());
    let _cleanup = Cleanup { run: run.clone() };
    let image = tokio::task::spawn_blocking(flowcase_test_images::httpd_image)
        .await?
        .map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
    let store = Store::connect(&url).await?;
    let tenant = store.create_tenant(&run, true, 0).await?;
    let user = store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: format!("{run}-user"),
                ..NewUser::default()
            },
            0,
        )
        .await?;
    let droplet = |name: &str, pool: i64, started: bool| {
        let mut new = NewDroplet::new(tenant.id, name, DropletType::Http, TargetKind::Container);
        new.image = Some(image.clone());
        new.ports = vec![PORT];
        new.health_path = Some("/health".into());
        new.cpu_millicores = Some(250);
        new.memory_mb = Some(64);
        new.env = BTreeMap::from([("BODY".into(), "bench".into())]);
        new.labels = BTreeMap::from([(BENCH_LABEL.into(), "1".into())]);
        new.pool_size = pool;
        new.pool_started = started;
        new
    };
    let plain = store.create_droplet(&droplet("plain", 0, false), 0).await?;
    let pooled = store.create_droplet(&droplet("pooled", 1, true), 0).await?;
    let cold_pool = store.create_droplet(&droplet("cold", 1, false), 0).await?;
    let engine =
        Arc::new(DockerEngine::connect("unix:///var/run/docker.sock").map_err(anyhow::Error::msg)?);
    let mut key = [0u8; 32];
    key.iter_mut().for_each(|b| *b = rand::random());
    let keyring = Keyring::from_keys(vec![Key {
        id: "bench".into(),
        bytes: key,
    }])
    .context("keyring")?;
    let options = Options {
        network: run.clone(),
        deployment: run.clone(),
        max_per_user: 10,
        ready_timeout: READY_TIMEOUT,
        stop_grace: Duration::ZERO,
        ..Options::from_config(&flowcase_config::Config::default())
    };
    let orch = Arc::new(Orchestrator::new(
        store.clone(),
        Arc::clone(&engine) as Arc<dyn Engine>,
        keyring,
        Arc::new(SystemClock),
        options,
    ));
    orch.prepare().await?;
    let mut bench = Bench {
        run: run.clone(),
        store: store.clone(),
        engine,
        orch: Arc::clone(&orch),
        user,
        plain: plain.clone(),
        pooled,
        cold_pool,
        image: image.clone(),
        probe: Probe::for_droplet(DropletType::Http, Some("/health")),
        serial: 0,
    };

    // One untimed round first: caches, the network, the database file.
    let (_, warm_id) = bench.api_launch().await?;
    bench.engine.remove(&warm_id).await?;
    let (_, warm) = bench.launch(&plain).await?;
    orch.destroy(warm, &Actor::system()).await?;

    // The containers the wake scenarios stop and start again.
    let (_, wake_container) = bench.api_launch().await?;
    let (_, wake_instance) = bench.launch(&plain).await?;

    let mut samples = Samples::default();
    let mut order = [CLI, API, LAUNCH, API_WAKE, WAKE, POOL, COLD_POOL];
    for round in 0..args.rounds {
        eprint!("\rround {}/{}", round + 1, args.rounds);
        // A new order each round, so no scenario always follows the same one.
        order.shuffle(&mut rand::rng());
        let mut leftovers = Vec::new();
        for scenario in order {
            let (took, leftover) = match scenario {
                CLI => bench.cli_launch().await?,
                API => {
                    let (took, id) = bench.api_launch().await?;
                    (took, Some(Leftover::Container(id)))
                }
                LAUNCH => {
                    let (took, id) = bench.launch(&plain).await?;
                    (took, Some(Leftover::Instance(id)))
                }
                API_WAKE => (bench.api_wake(&wake_container).await?, None),
                WAKE => (bench.wake(wake_instance).await?, None),
                POOL => {
                    let pooled = bench.pooled.clone();
                    bench.pool_launch(&pooled).await?
                }
                _ => {
                    let cold = bench.cold_pool.clone();
                    bench.pool_launch(&cold).await?
                }
            };
            samples.add(scenario, took);
            leftovers.extend(leftover);
        }
        for leftover in leftovers {
            match leftover {
                Leftover::Container(id) => bench.engine.remove(&id).await?,
                Leftover::Instance(id) => orch.destroy(id, &Actor::system()).await?,
            }
        }
        tokio::time::sleep(SETTLE).await;
    }
    eprintln!();

    let server = docker(&["version", "--format", "{{.Server.Version}}"]).unwrap_or_default();
    println!(
        "launch-to-ready, {} rounds, image {image}, dockerd {server}, database {}",
        args.rounds,
        url.split(':').next().unwrap_or("?")
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9}   note",
        "scenario", "median", "p90", "min"
    );
    let floor = samples.summary(API).map(|s| s.0);
    let wake_floor = samples.summary(API_WAKE).map(|s| s.0);
    for name in [CLI, API, LAUNCH, API_WAKE, WAKE, POOL, COLD_POOL] {
        let Some((median, p90, min)) = samples.summary(name) else {
            continue;
        };
        let note = match name {
            API | API_WAKE => "floor".to_owned(),
            LAUNCH => over(median, floor, 50.0),
            WAKE => over(median, wake_floor, 50.0),
            POOL => format!(
                "target <= 150 ms: {}",
                if median <= 150.0 { "met" } else { "missed" }
            ),
            _ => String::new(),
        };
        println!("{name:<40} {median:>6.1} ms {p90:>6.1} ms {min:>6.1} ms   {note}");
    }
    orch.destroy(wake_instance, &Actor::system()).await?;
    // Empty the pools before the droplets go.
    for d in [&bench.pooled, &bench.cold_pool] {
        store.set_droplet_active(d.id, false, 1).await?;
    }
    orch.fill_pools().await?;
    store.close().await;
    Ok(())
}

fn over(median: f64, floor: Option<f64>, target: f64) -> String {
    match floor {
        Some(floor) => {
            let delta = median - floor;
            format!(
                "{delta:+.1} ms over the floor (target <= +{target:.0} ms: {})",
                if delta <= target { "met" } else { "missed" }
            )
        }
        None => String::new(),
    }
}

//! `flowcase droplet …`: fill the catalogue from the shell or a script. `add` takes one droplet
//! as flags, `import` a JSON catalogue (an array of objects keyed like the flags, or the Python
//! Flowcase registry's `droplets.json`; see the README) through the same import as the API's,
//! `list` prints what is there. Flags and catalogue entries go through the same
//! parser (`flowcase_admin::orchestrator::catalogue`), so both refuse the same mistakes, each
//! named by its field (and, for a catalogue, the entry's index).
//!
//! External hosts (`--host`) take their password or SSH key from standard input or a file,
//! sealed with the key file before it is stored; a password given as an argument is refused,
//! since the shell history and `ps` would show it. `list` never prints a secret. The same goes
//! for the registry password of a container droplet (`--registry-username` with
//! `--registry-password-stdin`), sealed per droplet. `pull` pulls a droplet's image on the
//! engine with those credentials and prints the engine's progress.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use flowcase_admin::orchestrator::catalogue::{self, EntryError};
use flowcase_admin::orchestrator::desktop_target::{
    ExternalCredentials, host_port, store_external_credentials,
};
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::metered::Metered;
use flowcase_admin::orchestrator::remote_catalogue;
use flowcase_admin::orchestrator::{
    Actor, Options, Orchestrator, PullEvent, PullLog, RegistryCredentials, SystemClock,
};
use flowcase_admin::secrets::ensure_key_file;
use flowcase_admin::store::{DropletType, Store, Tenant, now_millis};
use flowcase_config::Config;
use serde_json::{Map, Value, json};

#[derive(Debug, Subcommand)]
pub enum DropletCommand {
    /// Add one droplet: a container (--image) or an external host (--host).
    Add(Box<AddArgs>),
    /// List droplets.
    List,
    /// Import a JSON catalogue: valid entries are added, invalid ones are reported (exit 1).
    Import {
        /// The catalogue file (`-` for standard input).
        file: String,
    },
    /// Pull a container droplet's image on the engine (with its registry credentials, if
    /// any), printing progress; exit 1 when the pull fails.
    Pull {
        /// The droplet's name or id.
        droplet: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Display name, unique in the tenant.
    #[arg(long)]
    name: String,
    /// How users reach it: http, vnc, rdp or ssh.
    #[arg(long = "type", value_name = "TYPE")]
    droplet_type: String,
    /// Container image (must be present on the engine, or pulled by an admin).
    #[arg(long)]
    image: Option<String>,
    /// The container port the gateway talks to (with --host: the host's port; default the
    /// protocol's usual one).
    #[arg(long)]
    port: Option<String>,
    /// External host (vnc, rdp, ssh) reached by guacd instead of a container.
    #[arg(long)]
    host: Option<String>,
    /// With --host: the account to log in as.
    #[arg(long)]
    username: Option<String>,
    /// With --host and --type rdp: the account's Windows domain.
    #[arg(long)]
    domain: Option<String>,
    /// With --host: a further guacd parameter KEY=VALUE (repeatable), e.g. security=nla.
    #[arg(long, value_name = "KEY=VALUE")]
    param: Vec<String>,
    /// With --host: read the host's password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// With --host: read the host's password from this file (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,
    /// With --host and --type ssh: read an SSH private key from this file.
    #[arg(long, value_name = "FILE")]
    private_key_file: Option<std::path::PathBuf>,
    /// Refused: a password given on the command line lands in the shell history and in `ps`.
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    password: Option<Option<String>>,
    /// Registry the image comes from (`host[:port]`), when the image reference does not name
    /// it; its credentials are keyed by it.
    #[arg(long, value_name = "HOST")]
    registry: Option<String>,
    /// With --image: the account the image is pulled with (its password from
    /// --registry-password-stdin).
    #[arg(long, value_name = "USER")]
    registry_username: Option<String>,
    /// With --registry-username: read the registry password from standard input (one line).
    #[arg(long)]
    registry_password_stdin: bool,
    /// Refused: a password given on the command line lands in the shell history and in `ps`.
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    registry_password: Option<Option<String>>,
    /// Another container port to expose (repeatable).
    #[arg(long, value_name = "PORT")]
    extra_port: Vec<String>,
    /// CPU limit in cores (0.5, 2).
    #[arg(long)]
    cores: Option<String>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MB")]
    memory: Option<String>,
    /// Process limit.
    #[arg(long)]
    pids_limit: Option<String>,
    /// http: the path that must answer before an instance counts as ready.
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// Where each user's persistent profile volume is mounted.
    #[arg(long, value_name = "PATH")]
    profile_mount: Option<String>,
    /// Profile volume name template; must contain {user_id}.
    #[arg(long, value_name = "TEMPLATE")]
    profile_path: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Docker label KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Group allowed to launch it (repeatable).
    #[arg(long, value_name = "NAME")]
    group: Vec<String>,
    /// Stop idle instances after this long (30m, 2h; 0 = never; default: the configuration's).
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Destroy instances this long after creation (12h; 0 = never; default: the configuration's).
    #[arg(long, value_name = "DURATION")]
    max_lifetime: Option<String>,
    /// What happens to an idle instance: stop (default) or destroy.
    #[arg(long, value_name = "ACTION")]
    idle_action: Option<String>,
    /// Containers kept ready ahead (not with --profile-mount).
    #[arg(long, value_name = "N")]
    pool_size: Option<String>,
    /// Start pool containers ahead, not only create them.
    #[arg(long)]
    pool_started: bool,
    /// Capability given back after all are dropped (repeatable; from Docker's default set).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Read-only root filesystem (with a private /tmp and /run).
    #[arg(long)]
    read_only_root: bool,
    /// Docker network to attach to (must keep containers apart).
    #[arg(long)]
    network: Option<String>,
    /// Desktops: which guacd opens them, `shared` (the configured one, default) or `sidecar`
    /// (a guacd container started and stopped with each instance, on its network).
    #[arg(long, value_name = "MODE")]
    guacd: Option<String>,
    /// With --guacd sidecar: the sidecar's image (default: the configured
    /// `[guacd] sidecar_image`).
    #[arg(long, value_name = "IMAGE")]
    guacd_image: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    icon: Option<String>,
    /// Add it hidden (not launchable until activated).
    #[arg(long)]
    inactive: bool,
}

impl AddArgs {
    /// The flags as a catalogue entry, so they meet the catalogue's checks.
    fn to_entry(&self) -> Value {
        let mut entry = Map::new();
        let mut put = |key: &str, value: Value| {
            entry.insert(key.to_owned(), value);
        };
        put("name", json!(self.name));
        put("type", json!(self.droplet_type));
        let optional = [
            ("image", &self.image),
            ("port", &self.port),
            ("host", &self.host),
            ("username", &self.username),
            ("domain", &self.domain),
            ("cores", &self.cores),
            ("memory", &self.memory),
            ("pids_limit", &self.pids_limit),
            ("health_path", &self.health_path),
            ("profile_mount", &self.profile_mount),
            ("profile_path", &self.profile_path),
            ("idle_timeout", &self.idle_timeout),
            ("max_lifetime", &self.max_lifetime),
            ("idle_action", &self.idle_action),
            ("pool_size", &self.pool_size),
            ("network", &self.network),
            ("guacd", &self.guacd),
            ("guacd_image", &self.guacd_image),
            ("description", &self.description),
            ("icon", &self.icon),
            ("registry", &self.registry),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                put(key, json!(value));
            }
        }
        let lists = [
            ("param", &self.param),
            ("extra_port", &self.extra_port),
            ("env", &self.env),
            ("label", &self.label),
            ("group", &self.group),
            ("cap_add", &self.cap_add),
        ];
        for (key, values) in lists {
            if !values.is_empty() {
                put(key, json!(values));
            }
        }
        if self.pool_started {
            put("pool_started", json!(true));
        }
        if self.read_only_root {
            put("read_only_root", json!(true));
        }
        if self.inactive {
            put("active", json!(false));
        }
        Value::Object(entry)
    }
}

impl AddArgs {
    /// The external host's secrets, from standard input or files: never from an argument, which
    /// the shell history and `ps` would show to others.
    fn credentials(&self) -> anyhow::Result<ExternalCredentials> {
        if self.password.is_some() {
            bail!(
                "--password is refused: a password on the command line lands in the shell history \
                 and in `ps`; use --password-stdin or --password-file FILE"
            );
        }
        let secret_flags =
            self.password_stdin || self.password_file.is_some() || self.private_key_file.is_some();
        if secret_flags && self.host.is_none() {
            bail!("--password-stdin, --password-file and --private-key-file go with --host");
        }
        if self.password_stdin && self.password_file.is_some() {
            bail!("--password-stdin and --password-file exclude each other");
        }
        let password = if self.password_stdin {
            let text =
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?;
            Some(first_line(&text, "standard input")?)
        } else if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            Some(first_line(&text, &file.display().to_string())?)
        } else {
            None
        };
        let private_key = match &self.private_key_file {
            Some(file) => {
                let key = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                if key.trim().is_empty() {
                    bail!("{} is empty", file.display());
                }
                Some(key)
            }
            None => None,
        };
        Ok(ExternalCredentials {
            password,
            private_key,
            passphrase: None,
        })
    }
}

impl AddArgs {
    /// The registry account, its password from standard input: never from an argument.
    fn registry_credentials(&self) -> anyhow::Result<Option<RegistryCredentials>> {
        if self.registry_password.is_some() {
            bail!(
                "--registry-password is refused: a password on the command line lands in the \
                 shell history and in `ps`; use --registry-password-stdin"
            );
        }
        let Some(username) = &self.registry_username else {
            if self.registry_password_stdin {
                bail!("--registry-password-stdin goes with --registry-username");
            }
            return Ok(None);
        };
        if self.image.is_none() {
            bail!("--registry-username goes with --image");
        }
        if !self.registry_password_stdin {
            bail!("--registry-username needs --registry-password-stdin");
        }
        if self.password_stdin {
            bail!("--password-stdin and --registry-password-stdin cannot both read standard input");
        }
        let text =
            std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?;
        Ok(Some(RegistryCredentials {
            username: username.clone(),
            password: first_line(&text, "standard input")?,
        }))
    }
}

/// The first line of a secret's text, without its line ending; empty is an error.
fn first_line(text: &str, source: &str) -> anyhow::Result<String> {
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("no password on {source}");
    }
    Ok(line.to_owned())
}

pub fn run(config: Config, command: DropletCommand) -> anyhow::Result<()> {
    crate::cli::block_on(async move {
        let store = Store::open(&config)
            .await
            .context("cannot open the database")?;
        let result = execute(&config, &store, command).await;
        store.close().await;
        result
    })
}

async fn tenant(store: &Store) -> anyhow::Result<Tenant> {
    store
        .default_tenant()
        .await?
        .context("the database has no default tenant: start `flowcase serve` once first")
}

async fn execute(config: &Config, store: &Store, command: DropletCommand) -> anyhow::Result<()> {
    match command {
        DropletCommand::Add(args) => {
            // Before anything else, so a refused secret is not also run through the parser.
            let credentials = args.credentials()?;
            let registry_credentials = args.registry_credentials()?;
            let definition = catalogue::parse_entry(0, &args.to_entry())
                .map_err(|e| anyhow::anyhow!(field_errors(&e)))?;
            let tenant = tenant(store).await?;
            match catalogue::create(store, tenant.id, &definition, now_millis()).await? {
                Ok(droplet) => {
                    if !credentials.is_empty() {
                        let stored = async {
                            let keyring = ensure_key_file(&config.secret_key_file())?;
                            store_external_credentials(
                                store,
                                &keyring,
                                &droplet,
                                &credentials,
                                now_millis(),
                            )
                            .await
                        }
                        .await;
                        if let Err(e) = stored {
                            // No droplet without the credentials it was given.
                            let _ = store.delete_droplet(droplet.id).await;
                            return Err(e).context("cannot store the host's credentials");
                        }
                    }
                    if let Some(registry) = &registry_credentials {
                        let stored = async {
                            let orchestrator = orchestrator(config, store)?;
                            orchestrator
                                .set_registry_credentials(&cli_actor(), &droplet, Some(registry))
                                .await?;
                            anyhow::Ok(())
                        }
                        .await;
                        if let Err(e) = stored {
                            let _ = store.delete_droplet(droplet.id).await;
                            return Err(e).context("cannot store the registry credentials");
                        }
                    }
                    println!("added droplet {} (id {})", droplet.name, droplet.id);
                    fetch_icon(store, &droplet).await
                }
                Err(errors) => bail!(
                    "{}",
                    field_errors(&EntryError {
                        index: 0,
                        name: None,
                        errors
                    })
                ),
            }
        }
        DropletCommand::List => list(store).await,
        DropletCommand::Import { file } => import(store, &file).await,
        DropletCommand::Pull { droplet } => pull(config, store, &droplet).await,
    }
}

/// Who the audit log names for changes made from the command line.
fn cli_actor() -> Actor {
    Actor {
        user_id: None,
        name: Some("command line".into()),
    }
}

/// An orchestrator over the configured engine, for the commands that need one.
fn orchestrator(config: &Config, store: &Store) -> anyhow::Result<Arc<Orchestrator>> {
    let keyring = ensure_key_file(&config.secret_key_file())?;
    let engine = DockerEngine::connect(&config.docker.host)
        .map_err(|e| anyhow::anyhow!("cannot set up the Docker client: {e}"))?;
    Ok(Arc::new(Orchestrator::new(
        store.clone(),
        Arc::new(Metered(Arc::new(engine))),
        keyring,
        Arc::new(SystemClock),
        Options::from_config(config),
    )))
}

/// `flowcase droplet pull`: one line per change of a layer's state (bytes while downloading
/// and extracting), then `pulled <image>`.
async fn pull(config: &Config, store: &Store, name_or_id: &str) -> anyhow::Result<()> {
    let droplets = store.list_droplets().await?;
    let droplet = droplets
        .iter()
        .find(|d| d.name == name_or_id)
        .or_else(|| {
            let id = name_or_id.parse::<i64>().ok()?;
            droplets.iter().find(|d| d.id == id)
        })
        .with_context(|| format!("no droplet named {name_or_id:?} (nor with that id)"))?;
    let orchestrator = orchestrator(config, store)?;
    let mut events = orchestrator.pull_image(cli_actor(), droplet.id).await?;
    let mut log = PullLog::default();
    while let Some(event) = events.recv().await {
        match event {
            PullEvent::Progress(p) => {
                if let Some(line) = log.line(&p) {
                    println!("{line}");
                }
            }
            PullEvent::Done { image } => {
                println!("pulled {image}");
                return Ok(());
            }
            PullEvent::Failed(e) => bail!("{e}"),
        }
    }
    bail!("the pull ended without saying how")
}

/// One flag per problem, named as typed (`--memory: ...`).
fn field_errors(error: &EntryError) -> String {
    error
        .errors
        .iter()
        .map(|e| format!("--{}: {}", e.field.replace('_', "-"), e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fetches the icon of a droplet saved with an icon URL of another site, as the API does (the
/// gateway serves it; see `flowcase_admin::orchestrator::icons`). A failure is reported and
/// leaves the initial; the droplet stays.
async fn fetch_icon(store: &Store, droplet: &flowcase_admin::store::Droplet) -> anyhow::Result<()> {
    let outcome = flowcase_admin::access::refresh_icon(store, droplet, now_millis()).await?;
    if let Some(flowcase_admin::access::IconFetch {
        error: Some(error), ..
    }) = outcome
    {
        eprintln!(
            "droplet {}: icon not fetched ({error}); pages show its initial",
            droplet.name
        );
    }
    Ok(())
}

/// `flowcase droplet import`: the import of the API's `POST /api/v1/droplets/import`
/// (`remote_catalogue::import`), from a file: each entry checked whole, names already taken
/// skipped, invalid entries reported by index and field (exit 1).
async fn import(store: &Store, file: &str) -> anyhow::Result<()> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let entries =
        remote_catalogue::entries(&text, None).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let tenant = tenant(store).await?;
    let report = remote_catalogue::import(store, tenant.id, entries, false, now_millis()).await?;
    for entry in &report.entries {
        let index = entry.index;
        let name = entry.name.as_deref().unwrap_or("");
        match (entry.status, entry.id) {
            ("imported", Some(id)) => {
                println!("entry {index}: imported {name} (id {id})");
                if let Some(droplet) = store.get_droplet(id).await? {
                    fetch_icon(store, &droplet).await?;
                }
            }
            ("skipped", _) => println!(
                "entry {index}: skipped {name}: {}",
                entry.reason.as_deref().unwrap_or("")
            ),
            _ => {
                let named = entry
                    .name
                    .as_ref()
                    .map(|n| format!(" ({n:?})"))
                    .unwrap_or_default();
                let problems: Vec<String> = entry
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.reason))
                    .collect();
                eprintln!("{file}: entry {index}{named}: {}", problems.join("; "));
            }
        }
    }
    let skipped = match report.skipped {
        0 => String::new(),
        n => format!(", {n} skipped (name taken)"),
    };
    println!(
        "{} droplet(s) imported, {} refused{skipped}",
        report.imported, report.invalid
    );
    if report.invalid > 0 {
        bail!(
            "{} catalogue entr{} refused",
            report.invalid,
            if report.invalid == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

fn duration(secs: Option<i64>) -> String {
    match secs {
        None => "default".into(),
        Some(0) => "never".into(),
        Some(s) => flowcase_config::Duration::from_secs(u64::try_from(s).unwrap_or(0)).to_string(),
    }
}

async fn list(store: &Store) -> anyhow::Result<()> {
    let groups: BTreeMap<i64, String> = store
        .list_groups()
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect();
    println!(
        "{:>4}  {:<20} {:<5} {:<32} {:>5} {:>5} {:>6} {:<8} {:<16} {:<9} {:<8} groups",
        "id",
        "name",
        "type",
        "image / host",
        "port",
        "cores",
        "MiB",
        "idle",
        "pool",
        "state",
        "guacd"
    );
    for d in store.list_droplets().await? {
        let names: Vec<&str> = store
            .droplet_group_ids(d.id)
            .await?
            .iter()
            .filter_map(|id| groups.get(id).map(String::as_str))
            .collect();
        // External hosts: where they are, and the account; their secrets are never printed.
        let (image, port) = match (&d.external_host, d.external_port) {
            (Some(host), Some(port)) => {
                let account = d
                    .external_username
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                (
                    format!("{account}{}", host_port(host, port)),
                    port.to_string(),
                )
            }
            _ => (
                d.image.clone().unwrap_or_else(|| "-".into()),
                d.ports
                    .first()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
            ),
        };
        let cores = d
            .cpu_millicores
            .map_or_else(|| "-".to_owned(), |m| format!("{}", m as f64 / 1000.0));
        let pool = match (d.pool_size, d.pool_started) {
            (0, _) => "-".to_owned(),
            (n, true) => format!("{n} started"),
            (n, false) => format!("{n} created"),
        };
        // Which guacd a desktop's tunnel goes through; a web app has none.
        let guacd = if d.droplet_type == DropletType::Http {
            "-".to_owned()
        } else {
            d.guacd.to_string()
        };
        println!(
            "{:>4}  {:<20} {:<5} {:<32} {:>5} {:>5} {:>6} {:<8} {:<16} {:<9} {:<8} {}",
            d.id,
            d.name,
            d.droplet_type,
            image,
            port,
            cores,
            d.memory_mb
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
            format!("{} {}", duration(d.idle_timeout_secs), d.idle_action),
            pool,
            if d.active { "active" } else { "inactive" },
            guacd,
            names.join(",")
        );
    }
    Ok(())
}

//! Parsing the command line and running each command. Every command loads the configuration
//! the same way (file named by `--config` or `FLOWCASE_CONFIG`, then the environment) and exits
//! non-zero with a message naming the problem.

mod demo;
mod droplet;
mod user;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowcase_config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "flowcase",
    version,
    about = "Flowcase Gateway: desktops and apps in the browser"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short = 'c', env = "FLOWCASE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from the running gateway (zero-downtime upgrade):
        /// start the new binary with --upgrade, then send SIGQUIT to the old process.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration and print the effective settings (secrets redacted).
    CheckConfig(ConfigArg),
    /// Create or upgrade the database schema, then exit.
    Migrate(ConfigArg),
    /// Manage local user accounts.
    User {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Manage the droplet catalogue (add, list, import a JSON catalogue).
    Droplet {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: droplet::DropletCommand,
    },
    /// Fill an empty installation with sample tenants, groups, users, droplets and a workshop
    /// (the users' passwords are printed once). Refuses an installation holding data.
    Demo {
        #[command(flatten)]
        config: ConfigArg,
        /// Add the demo objects to an installation that already holds data (objects with the
        /// demo's names are kept as they are).
        #[arg(long)]
        force: bool,
    },
    /// Copy every row of the configured database into a new, empty PostgreSQL database (the
    /// move from SQLite to PostgreSQL). Stop the gateway first.
    CopyDatabase {
        #[command(flatten)]
        config: ConfigArg,
        /// The target, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`. Prefer the environment
        /// variable: a command line is visible to every user of the machine.
        #[arg(
            long,
            env = "FLOWCASE_COPY_TO",
            value_name = "URL",
            hide_env_values = true
        )]
        to: String,
    },
    /// Print the version.
    Version,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("flowcase {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig(arg) => match load_config(arg.config.as_deref()) {
            Ok(config) => {
                print!("{}", config.to_redacted_toml());
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config, upgrade } => {
            with_config(&config, |c| crate::serve::run(c, upgrade))
        }
        Command::Migrate(arg) => with_config(&arg, |config| {
            block_on(async {
                let store = flowcase_admin::Store::open(&config).await?;
                println!(
                    "database schema is up to date ({})",
                    store.backend().as_str()
                );
                store.close().await;
                Ok(())
            })
        }),
        Command::User { config, command } => with_config(&config, |c| user::run(c, command)),
        Command::Droplet { config, command } => with_config(&config, |c| droplet::run(c, command)),
        Command::Demo { config, force } => with_config(&config, |c| demo::run(c, force)),
        Command::CopyDatabase { config, to } => with_config(&config, |c| copy_database(&c, &to)),
    }
}

fn copy_database(config: &Config, to: &str) -> anyhow::Result<()> {
    if !to.starts_with("postgres://") && !to.starts_with("postgresql://") {
        anyhow::bail!("--to must be a postgres:// URL");
    }
    block_on(async {
        let source = flowcase_admin::Store::open(config).await?;
        let backend = source.backend().as_str();
        let target = flowcase_admin::Store::connect(to)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the target database: {e}"))?;
        let result = source.copy_into(&target).await;
        source.close().await;
        target.close().await;
        let report = result?;
        let total: u64 = report.iter().map(|(_, n)| n).sum();
        for (table, rows) in &report {
            println!("{table:<24} {rows:>8} rows");
        }
        println!(
            "copied {total} rows from {backend} into PostgreSQL; point database.url at it and start the gateway"
        );
        Ok(())
    })
}

fn with_config(arg: &ConfigArg, f: impl FnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    let config = match load_config(arg.config.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match f(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code 2 for configuration errors, so scripts can tell them from runtime failures.
fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    flowcase_config::load(path, std::env::vars()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Commands other than `serve` are short async programs on a runtime of their own.
pub fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

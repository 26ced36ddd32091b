//! Parsing the command line and running each command. Every command loads the configuration
//! the same way (file named by `--config` or `FLOWCASE_CONFIG`, then the environment) and exits
//! non-zero with a message naming the problem.

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
    }
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

//! `flowcase`: the Flowcase Gateway command line. `serve` runs the gateway; the other commands
//! check the configuration and administer the database without starting it.

mod acme_hosts;
mod alloc;
mod app_host;
mod cli;
mod control_plane;
mod health;
mod logging;
mod metrics;
mod proxy;
mod redirect;
mod rewound;
mod routing;
mod serve;
mod snapshot;
mod systemd;
mod tls_front;
mod tunnel;
mod wake;

use std::process::ExitCode;

fn main() -> ExitCode {
    alloc::disable_huge_pages();
    flowcase_admin::accounts::set_after_hash(alloc::release_free_memory);
    cli::run()
}

//! `flowcase serve`: prepares the data directory, database and certificates, then assembles
//! the pingora server: the HTTPS front door, the plain-HTTP redirector, the metrics/health
//! listener, and the control plane as a background service.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use flowcase_certs::{
    AcmeChallengeKind, AcmeManager, AcmeSettings, CertResolver, CertStatus, CertificateService,
    FileSource,
};
use flowcase_config::{AcmeChallenge, Config, TlsMode};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

use crate::app_host::AppHostGate;
use crate::control_plane::ControlPlane;
use crate::health::{HealthApp, HealthState};
use crate::proxy::FrontDoor;
use crate::redirect::Redirector;
use crate::snapshot::Snapshot;

pub fn run(config: Config, upgrade: bool) -> anyhow::Result<()> {
    crate::logging::init(&config.log)?;
    let config = Arc::new(config);
    let data_dir = &config.server.data_dir;
    flowcase_admin::secrets::create_private_dir(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let keyring = flowcase_admin::secrets::ensure_key_file(&config.secret_key_file())?;
    let certs = CertResolver::new();
    let certificate_service = load_certificates(&config, &certs)?;
    prepare_database(&config)?;

    let runtime_dir = crate::control_plane::RuntimeDir::create()?;
    // Where the pid file and the upgrade socket live (see `server_conf`).
    let run_dir = config.server.data_dir.join("run");
    flowcase_admin::secrets::create_private_dir(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    crate::metrics::register(certs.clone());
    register_certificate_report(certs.clone());
    let health = Arc::new(HealthState::new(certs.clone()));
    let snapshot = Snapshot::new();
    let wake = crate::wake::channel();
    let waker = wake.0.clone();
    let activity = crate::control_plane::Activity::default();
    let code_claims = crate::app_host::CodeClaims::default();
    let tunnel_door = crate::tunnel::front::TunnelDoor::default();
    let assertions =
        Arc::new(flowcase_admin::auth::assertion::AssertionSigner::load_or_create(data_dir)?);
    let conf = server_conf(&config);
    let options = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(options), conf);
    server.bootstrap();
    // After an upgrade's handover this process holds the listeners: systemd must follow it
    // before the old process exits (see `crate::systemd`).
    crate::systemd::notify_main_pid();
    let server_conf = server.configuration.clone();

    let mut front_door = crate::tls_front::front_door_service(
        &server_conf,
        FrontDoor::new(
            config.clone(),
            &runtime_dir,
            snapshot.clone(),
            AppHostGate::new(
                &config,
                keyring.clone(),
                snapshot.clone(),
                code_claims.clone(),
            ),
            waker,
            assertions,
            activity.clone(),
        ),
        "front door",
        certs.clone(),
        config.tls.mode == TlsMode::Acme && config.tls.acme.challenge == AcmeChallenge::TlsAlpn01,
        (config.server.clone(), tunnel_door.clone()),
    )?;
    // No read buffer of pingora's under the TLS layer: rustls reads records into a buffer of its
    // own (4 KiB to start), and pingora's HTTP reader has its own above it, so a third, 64 KiB
    // one per connection only held memory — for every idle desktop tunnel too (bench/README.md).
    front_door.add_listener(
        ListenerConfig::tcp(config.server.https_listen.to_string()).l4_buffer(L4BufferSettings {
            read: Some(0),
            write: None,
        }),
    );

    let mut redirector = pingora::services::listening::Service::new(
        "http redirect".into(),
        Redirector::new(config.clone(), certs.clone()),
    );
    redirector.add_tcp(&config.server.http_listen.to_string());

    let mut metrics = pingora::services::listening::Service::new(
        "metrics and health".into(),
        HealthApp::new(health.clone(), metrics_token(&config)?),
    );
    metrics.add_tcp(&config.server.metrics_listen.to_string());

    let mut control = pingora::services::background::background_service(
        "control plane",
        ControlPlane::new(
            config.clone(),
            runtime_dir,
            health,
            snapshot,
            keyring,
            wake,
            activity,
        )
        .with_code_claims(code_claims)
        .with_tunnel_door(tunnel_door),
    );
    control.threads = Some(2);

    let control = server.add_service(control);
    server.add_service(pingora::services::background::background_service(
        "certificates",
        certificate_service,
    ));
    let front_door = server.add_service(front_door);
    front_door.add_dependency(&control);
    server
        .add_service(pingora::services::background::background_service(
            "service manager notification",
            crate::systemd::ReadyNotifier,
        ))
        .add_dependency(&front_door);
    server.add_service(redirector);
    server.add_service(metrics);
    tracing::info!(
        https = %config.server.https_listen,
        http = %config.server.http_listen,
        metrics = %config.server.metrics_listen,
        public = %config.server.public_origin(),
        "flowcase gateway starting"
    );
    server.run(pingora::server::RunArgs::default());
    crate::logging::flush();
    Ok(())
}

fn server_conf(config: &Config) -> ServerConf {
    let run_dir = config.server.data_dir.join("run");
    // One event loop per CPU this process may run on (affinity and cgroup quotas count): more
    // loops than CPUs only add context switches (bench/README.md).
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    ServerConf {
        threads,
        // Measured: thread contention costs more than stealing gains on small machines.
        work_stealing: false,
        pid_file: run_dir.join("flowcase.pid").display().to_string(),
        upgrade_sock: run_dir.join("upgrade.sock").display().to_string(),
        // Long-lived desktop tunnels get a short grace period: clients reconnect on their own.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    }
}

/// Loads the certificate the HTTPS listener starts with, and returns the background service that
/// keeps it fresh (files watcher, ACME orders) and owns SIGHUP.
fn load_certificates(
    config: &Arc<Config>,
    certs: &Arc<CertResolver>,
) -> anyhow::Result<CertificateService> {
    let tls = &config.tls;
    match tls.mode {
        TlsMode::SelfSigned => {
            serve_self_signed(config, certs)?;
            Ok(CertificateService::Fixed)
        }
        TlsMode::Files => {
            let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
                anyhow::bail!(
                    "tls.cert_file and tls.key_file are required when tls.mode = \"files\""
                );
            };
            let source = FileSource::new(cert_file.clone(), key_file.clone(), certs.clone());
            let status = source
                .load()
                .map_err(|e| anyhow::anyhow!("tls.cert_file / tls.key_file: {e}"))?;
            tracing::info!(names = ?status.names, cert_file = %cert_file.display(), "serving the certificate from files");
            Ok(CertificateService::Files {
                source,
                poll_every: tls.reload_interval.get(),
            })
        }
        TlsMode::Acme => {
            // Served until an order succeeds, and to every name without a certificate of its own.
            serve_self_signed(config, certs)?;
            let acme = &tls.acme;
            let settings = AcmeSettings {
                directory_url: acme.directory_url.clone(),
                contact: acme.contact.clone(),
                ca_bundle: acme.ca_bundle.clone(),
                challenge: match acme.challenge {
                    AcmeChallenge::Http01 => AcmeChallengeKind::Http01,
                    AcmeChallenge::TlsAlpn01 => AcmeChallengeKind::TlsAlpn01,
                },
                cache_dir: config.server.data_dir.join("acme"),
                names: vec![config.server.public_host.as_str().to_owned()],
                on_demand: acme.instance_certificates,
            };
            let authority = Arc::new(crate::acme_hosts::InstanceHosts::new(config.clone()));
            let manager = AcmeManager::new(settings, certs.clone(), authority)
                .map_err(|e| anyhow::anyhow!("tls.acme: {e}"))?;
            Ok(CertificateService::Acme(manager))
        }
    }
}

/// The bearer token `/metrics` requires, from `server.metrics_token_file`.
fn metrics_token(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = &config.server.metrics_token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "server.metrics_token_file: cannot read {}: {e}",
            path.display()
        )
    })?;
    let token = token.trim();
    if token.len() < 16 {
        anyhow::bail!(
            "server.metrics_token_file: {} must hold a token of at least 16 characters",
            path.display()
        );
    }
    Ok(Some(token.to_owned()))
}

fn serve_self_signed(config: &Config, certs: &CertResolver) -> anyhow::Result<()> {
    let names = vec![
        config.server.public_host.as_str().to_owned(),
        format!("*.{}", config.server.apps_domain.as_str()),
    ];
    let cert =
        flowcase_certs::ensure_self_signed(&config.server.data_dir, &names, SystemTime::now())?;
    certs.set_default_pem(
        &cert.cert_pem,
        &cert.key_pem,
        CertStatus {
            source: "self-signed",
            names: cert.names,
            not_after: cert.not_after,
        },
    )?;
    Ok(())
}

/// Migrations and the first administrator run before any listener opens, on a runtime of their
/// own: the serving runtimes only exist once pingora starts.
fn prepare_database(config: &Config) -> anyhow::Result<()> {
    crate::cli::block_on(async {
        let store = flowcase_admin::Store::open(config)
            .await
            .context("cannot open the database")?;
        let now = flowcase_admin::now_millis();
        if let Some(admin) =
            flowcase_admin::accounts::bootstrap_admin(&store, &config.server.data_dir, now).await?
        {
            println!(
                "\nFirst start: created the administrator account.\n  username: {}\n  password: {}\n\
                 (saved in {}; this is shown only once)\n",
                admin.username,
                admin.password,
                admin.credentials_file.display()
            );
        }
        store.close().await;
        Ok(())
    })
}

/// Lets the control plane's system report show the certificates this front door serves (the
/// control plane does not depend on the TLS crate; see `flowcase_admin::system`).
fn register_certificate_report(certs: Arc<CertResolver>) {
    flowcase_admin::system::register_certificates(move || {
        certs
            .configured_statuses()
            .into_iter()
            .map(|status| flowcase_admin::system::CertificateStatus {
                source: status.source.to_owned(),
                names: status.names,
                not_after: flowcase_admin::store::unix_millis(status.not_after),
            })
            .collect()
    });
}

//! Image pulls against the real dockerd, from a registry of ours on loopback
//! (`flowcase_test_images::registry`: dockerd treats 127.0.0.0/8 registries as plain HTTP),
//! serving the test suite's own HTTP server image under a repository name unique to the test.
//!
//! A pull reports progress and ends with the image present (and a launch then works); a
//! missing tag is `image_missing` naming the image; a registry with Basic auth refuses without
//! the droplet's credentials and serves with them; the stored credentials are sealed; an
//! unreachable registry is said to be one. Each test untags what it pulled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use flowcase_admin::AdminError;
use flowcase_admin::orchestrator::{Actor, PullEvent, RegistryCredentials};
use flowcase_admin::store::Droplet;
use flowcase_test_images::registry::Registry;
use sqlx::Row;

/// Removes the images a test pulled (and containers made from them), pass or fail. The
/// layers shared with the local test image stay.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        for reference in &self.0 {
            // Containers launched from it go first (the harness's own cleanup runs later).
            let filter = format!("ancestor={reference}");
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
                }
            }
            let _ = Command::new("docker").args(["rmi", reference]).output();
        }
    }
}

async fn registry(auth: Option<(&'static str, &'static str)>, repository: &str) -> Registry {
    let repository = repository.to_owned();
    tokio::task::spawn_blocking(move || {
        let image = flowcase_test_images::httpd_image()?;
        let registry = Registry::start(auth)?;
        registry.push(&repository, "v1", &image)?;
        Ok::<_, String>(registry)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("test registry: {e}"))
}

fn image_present(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .unwrap()
        .status
        .success()
}

/// Every event of a pull of `droplet`'s image, bounded in time.
async fn pull(h: &Harness, droplet: &Droplet) -> Vec<PullEvent> {
    let mut rx = h
        .orch
        .pull_image(Actor::system(), droplet.id)
        .await
        .unwrap();
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
    })
    .await
    .expect("the pull did not end within two minutes");
    events
}

fn failure(events: &[PullEvent]) -> &AdminError {
    match events.last() {
        Some(PullEvent::Failed(e)) => e,
        other => panic!("the pull should have failed; last event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_image_is_present_and_launches() {
    let h = Harness::new(Db::Sqlite).await;
    let repository = format!("flowcase/{}", h.run);
    let reg = registry(None, &repository).await;
    let reference = reg.reference(&repository, "v1");
    let _untag = Untag(vec![reference.clone()]);
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("web", |d| d.image = Some(reference.clone()))
        .await;

    // Launches never pull.
    let refused = h.orch.launch(&alice, &droplet).await.unwrap_err();
    assert!(
        matches!(&refused, AdminError::ImageMissing(i) if i == &reference),
        "{refused:?}"
    );

    let events = pull(&h, &droplet).await;
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PullEvent::Progress(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        progress.iter().any(|p| p.status.contains("Pulling from")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|p| p.layer.is_some()),
        "per-layer progress: {progress:?}"
    );
    assert!(
        matches!(events.last(), Some(PullEvent::Done { image }) if image == &reference),
        "{:?}",
        events.last()
    );
    assert!(image_present(&reference));
    let requests = reg.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&format!("/v2/{repository}/manifests/v1"))),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /v2/") && r.contains("/blobs/sha256:")),
        "the unique layer is downloaded: {requests:?}"
    );
    assert!(
        progress.iter().any(|p| p.status == "Pull complete"),
        "{progress:?}"
    );

    let (_, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (status, body) = http(upstream.addr, "GET", "/", "").await;
    assert_eq!((status, body.as_str()), (200, "hello from web"));

    let audit = h.store.list_audit(100, 0).await.unwrap();
    let entry = audit
        .iter()
        .find(|e| e.action == "droplet.pull")
        .expect("the pull is audited");
    assert_eq!(
        entry.target_id.as_deref(),
        Some(droplet.id.to_string().as_str())
    );
    assert_eq!(entry.details["outcome"], "pulled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tag_is_image_missing_naming_the_image() {
    let h = Harness::new(Db::Sqlite).await;
    let repository = format!("flowcase/{}", h.run);
    let reg = registry(None, &repository).await;
    let reference = reg.reference(&repository, "v9");
    let _untag = Untag(vec![reference.clone()]);
    let droplet = h
        .http_droplet("web", |d| d.image = Some(reference.clone()))
        .await;

    let events = pull(&h, &droplet).await;
    let e = failure(&events);
    assert!(
        matches!(e, AdminError::ImageNotInRegistry(i) if i == &reference),
        "{e:?}"
    );
    assert_eq!(
        flowcase_admin::web::error::classify(e).1,
        "image_missing",
        "same stable code as a launch's missing image"
    );
    assert!(e.to_string().contains(&reference), "{e}");
    assert!(!image_present(&reference));

    // An unknown repository too.
    let other = reg.reference("flowcase/nothing-here", "v1");
    let droplet = h
        .http_droplet("other", |d| d.image = Some(other.clone()))
        .await;
    let events = pull(&h, &droplet).await;
    assert!(
        matches!(failure(&events), AdminError::ImageNotInRegistry(i) if i == &other),
        "{:?}",
        events.last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_auth_serves_only_with_the_droplets_credentials() {
    let h = Harness::new(Db::Sqlite).await;
    let repository = format!("flowcase/{}", h.run);
    let password = "pull-Secret-93f1";
    let reg = registry(Some(("puller", password)), &repository).await;
    let reference = reg.reference(&repository, "v1");
    let _untag = Untag(vec![reference.clone()]);
    let droplet = h
        .http_droplet("web", |d| d.image = Some(reference.clone()))
        .await;

    // No credentials: refused, said clearly.
    let events = pull(&h, &droplet).await;
    let e = failure(&events);
    assert!(
        matches!(e, AdminError::RegistryRefused(i) if i == &reference),
        "{e:?}"
    );
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(!image_present(&reference));

    // Wrong ones: refused, and the password is in no message.
    let wrong = RegistryCredentials {
        username: "puller".into(),
        password: "not-the-password".into(),
    };
    h.orch
        .set_registry_credentials(&Actor::system(), &droplet, Some(&wrong))
        .await
        .unwrap();
    let events = pull(&h, &droplet).await;
    let e = failure(&events);
    assert!(matches!(e, AdminError::RegistryRefused(_)), "{e:?}");
    assert!(!e.to_string().contains("not-the-password"));
    assert!(reg.requests().iter().any(|r| r.ends_with("auth=bad")));

    // The right ones: pulled.
    let right = RegistryCredentials {
        username: "puller".into(),
        password: password.into(),
    };
    h.orch
        .set_registry_credentials(&Actor::system(), &droplet, Some(&right))
        .await
        .unwrap();
    let events = pull(&h, &droplet).await;
    assert!(
        matches!(events.last(), Some(PullEvent::Done { .. })),
        "{:?}",
        events.last()
    );
    assert!(image_present(&reference));
    assert!(reg.requests().iter().any(|r| r.ends_with("auth=good")));

    // Stored sealed: neither the password nor the username is in the database in clear.
    let url = h.url.clone();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT sealed FROM droplet_registry_credentials WHERE droplet_id = ?")
        .bind(droplet.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get("sealed");
    let text = String::from_utf8_lossy(&sealed);
    assert!(
        !text.contains(password) && !text.contains("puller"),
        "{text}"
    );
    let audit: Vec<String> = sqlx::query("SELECT details_json FROM audit_log")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("details_json"))
        .collect();
    assert!(
        !audit
            .iter()
            .any(|d| d.contains(password) || d.contains("not-the-password"))
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_said_to_be_one() {
    let h = Harness::new(Db::Sqlite).await;
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reference = format!("127.0.0.1:{port}/flowcase/{}:v1", h.run);
    let droplet = h
        .http_droplet("web", |d| d.image = Some(reference.clone()))
        .await;
    let events = pull(&h, &droplet).await;
    let e = failure(&events);
    assert!(
        matches!(e, AdminError::RegistryUnreachable(r) if r.starts_with(&reference)),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_are_replaced_and_removed_on_postgresql_sealed() {
    let h = Harness::new(Db::Postgres).await;
    let droplet = h
        .http_droplet("web", |d| d.image = Some("127.0.0.1:9/x/y:1".into()))
        .await;
    for password in ["first-pw-0a1b", "second-pw-2c3d"] {
        let credentials = RegistryCredentials {
            username: "puller".into(),
            password: password.into(),
        };
        h.orch
            .set_registry_credentials(&Actor::system(), &droplet, Some(&credentials))
            .await
            .unwrap();
        let sealed = h
            .store
            .droplet_registry_credentials(droplet.id)
            .await
            .unwrap()
            .expect("stored");
        assert!(!String::from_utf8_lossy(&sealed).contains(password));
        let opened = flowcase_admin::orchestrator::images::open_registry_credentials(
            &keyring(),
            &droplet,
            &sealed,
        )
        .unwrap();
        assert_eq!(opened, credentials);
    }
    h.orch
        .set_registry_credentials(&Actor::system(), &droplet, None)
        .await
        .unwrap();
    assert_eq!(
        h.store
            .droplet_registry_credentials(droplet.id)
            .await
            .unwrap(),
        None
    );
    // Deleting the droplet takes its credentials along.
    h.orch
        .set_registry_credentials(
            &Actor::system(),
            &droplet,
            Some(&RegistryCredentials {
                username: "u".into(),
                password: "p".into(),
            }),
        )
        .await
        .unwrap();
    h.store.delete_droplet(droplet.id).await.unwrap();
    assert_eq!(
        h.store
            .droplet_registry_credentials(droplet.id)
            .await
            .unwrap(),
        None
    );
}

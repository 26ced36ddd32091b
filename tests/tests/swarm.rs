//! The swarm backend through the real binary: a gateway configured with `docker.backend =
//! "swarm"` wakes a stopped instance (a Swarm service scaled to zero) on a request and proxies
//! to it, on the local dockerd as a single-node swarm. The gateway runs on the host, so it
//! reaches the task through the node's `docker_gwbridge` (docs/swarm.md); reaching instances
//! over their overlay network from a gateway container is tested in the orchestrator suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flowcase_admin::orchestrator::{Actor, Options};
use flowcase_admin::store::{InstanceStatus, Store};
use flowcase_config::UpstreamMode;
use flowcase_e2e::instances::{add_user, database_url, httpd_droplet, login};
use flowcase_e2e::orchestrator::{orchestrator_options, swarm_orchestrator};
use flowcase_e2e::{Gateway, GatewayDir};

const PASSWORD: &str = "a long enough passphrase";

/// Removes the deployment's services, networks and volumes when the test ends, pass or fail.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        flowcase_e2e::swarm::remove_services(&self.0);
        let label = format!("label=flowcase.deployment={}", self.0);
        for kind in ["network", "volume"] {
            let out = std::process::Command::new("docker")
                .args([kind, "ls", "-q", "--filter", &label])
                .output()
                .unwrap();
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args([kind, "rm", id])
                    .output();
            }
        }
    }
}

#[tokio::test]
async fn a_gateway_on_the_swarm_backend_wakes_and_proxies_a_service() {
    flowcase_e2e::swarm::ensure_swarm();
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_DOCKER__BACKEND", "swarm")
        .set("FLOWCASE_DOCKER__UPSTREAM_MODE", "container-network");
    let _cleanup = Cleanup(dir.deployment().to_owned());
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    // The gateway says what it runs on (once its engine answered).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body: serde_json::Value = reqwest::get(gw.metrics_url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["checks"]["docker"]["ok"] == true {
            let detail = body["checks"]["docker"]["detail"].as_str().unwrap();
            assert!(detail.contains("Docker Swarm of 1 ready node"), "{detail}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the swarm never reported reachable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An orchestrator of our own over the gateway's database launches and stops the instance.
    let store = Store::connect(&database_url(&dir)).await.unwrap();
    let orchestrator = swarm_orchestrator(
        &dir,
        &store,
        Options {
            upstream_mode: UpstreamMode::ContainerNetwork,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(1),
            remove_orphans: false,
            ..orchestrator_options(&dir)
        },
    );
    orchestrator.prepare().await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let alice = store.find_user_by_login("alice").await.unwrap().unwrap();
    let mut droplet = httpd_droplet(tenant.id, "Notes").await;
    droplet.env = [("BODY".to_owned(), "hello from the swarm".to_owned())].into();
    let droplet = store.create_droplet(&droplet, 0).await.unwrap();
    let (instance, _) = orchestrator.launch(&alice, &droplet).await.unwrap();
    orchestrator
        .stop(instance.id, &Actor::system())
        .await
        .unwrap();
    let service = format!("flowcase-{}", instance.slug);
    let replicas = std::process::Command::new("docker")
        .args([
            "service",
            "inspect",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
            &service,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&replicas.stdout).trim(), "0");
    let host = format!("{}.apps.localhost", instance.slug);
    tokio::time::sleep(Duration::from_millis(700)).await;

    let browser = gw.client(&dir.data_dir(), &["localhost", &host]);
    login(&gw, &browser, "alice", PASSWORD).await;
    let cookie = flowcase_e2e::instances::app_cookie(&gw, &browser, &host).await;

    // A script's request wakes it: the gateway's own swarm engine scales the service up.
    let resp = browser
        .get(gw.url(&host, "/"))
        .header("cookie", cookie.clone())
        .header("accept", "*/*")
        .header("user-agent", "curl/8")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "hello from the swarm");
    let row = store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Running);
    assert_eq!(
        row.container_id.as_deref().map(str::len),
        Some(25),
        "the row holds the service id"
    );

    orchestrator
        .destroy(instance.id, &Actor::system())
        .await
        .unwrap();
    let gone = std::process::Command::new("docker")
        .args(["service", "inspect", &service])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the service is removed");
    store.close().await;
}

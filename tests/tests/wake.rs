//! Wake on demand through the real binary and a real dockerd: a request for a stopped instance
//! starts it; a browser gets a "Starting …" page that reloads itself, a script waits and gets
//! the answer; an uptime monitor never wakes anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use flowcase_admin::orchestrator::{Actor, Options};
use flowcase_admin::store::{InstanceStatus, Store};
use flowcase_config::UpstreamMode;
use flowcase_e2e::instances::{add_user, database_url, httpd_droplet, login};
use flowcase_e2e::orchestrator::{docker_orchestrator, orchestrator_options};
use flowcase_e2e::{Gateway, GatewayDir};

const PASSWORD: &str = "a long enough passphrase";

#[tokio::test]
async fn stopped_instances_wake_for_browsers_and_scripts_but_not_for_monitors() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    // An orchestrator of our own over the gateway's database and deployment launches and stops
    // the instance (the dashboard will do this through the API).
    let store = Store::connect(&database_url(&dir)).await.unwrap();
    let orchestrator = docker_orchestrator(
        &dir,
        &store,
        Options {
            network: "flowcase-e2e".into(),
            upstream_mode: UpstreamMode::PublishedLoopback,
            max_per_user: 3,
            max_total: 50,
            ready_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(1),
            remove_orphans: false,
            ..orchestrator_options(&dir)
        },
    );
    orchestrator.prepare().await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let alice = store.find_user_by_login("alice").await.unwrap().unwrap();
    let mut droplet = httpd_droplet(tenant.id, "Notes").await;
    droplet.env = [("BODY".to_owned(), "hello from notes".to_owned())].into();
    let droplet = store.create_droplet(&droplet, 0).await.unwrap();
    let (instance, _) = orchestrator.launch(&alice, &droplet).await.unwrap();
    orchestrator
        .stop(instance.id, &Actor::system())
        .await
        .unwrap();
    let host = format!("{}.apps.localhost", instance.slug);
    tokio::time::sleep(Duration::from_millis(700)).await;

    let browser = gw.client(&dir.data_dir(), &["localhost", &host]);
    login(&gw, &browser, "alice", PASSWORD).await;
    let cookie = flowcase_e2e::instances::app_cookie(&gw, &browser, &host).await;
    let get = |accept: &'static str, agent: &'static str| {
        browser
            .get(gw.url(&host, "/"))
            .header("cookie", cookie.clone())
            .header("accept", accept)
            .header("user-agent", agent)
            .send()
    };
    let status = |store: Store, id: i64| async move {
        store.get_instance(id).await.unwrap().unwrap().status
    };

    // An uptime monitor finds it asleep and leaves it so.
    let resp = get("text/html", "UptimeRobot/2.0").await.unwrap();
    assert_eq!(resp.status(), 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(store.clone(), instance.id).await,
        InstanceStatus::Stopped
    );

    // A script waits for the wake and gets the instance's answer.
    let resp = get("*/*", "curl/8").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "hello from notes");

    // A browser gets the starting page, which reloads itself until the instance answers.
    orchestrator
        .stop(instance.id, &Actor::system())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = get("text/html,application/xhtml+xml", "Mozilla/5.0")
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("Starting Notes…") && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = get("text/html", "Mozilla/5.0").await.unwrap();
        if resp.status() == 200 {
            assert_eq!(resp.text().await.unwrap().trim(), "hello from notes");
            break;
        }
        assert!(Instant::now() < deadline, "the instance never woke");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    orchestrator
        .destroy(instance.id, &Actor::system())
        .await
        .unwrap();
    store.close().await;
}

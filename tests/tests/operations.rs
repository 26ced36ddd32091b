//! Operating the gateway: a zero-downtime binary upgrade (`serve --upgrade`, then SIGQUIT to
//! the old process) loses no request in flight, and SIGTERM stops it gracefully.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flowcase_e2e::{Gateway, GatewayDir};

#[tokio::test]
async fn an_upgrade_hands_the_listeners_over_without_losing_a_request() {
    let dir = GatewayDir::new();
    let old = Gateway::start(&dir).await;
    // A new connection per request: requests land on the old process, then on the new one.
    let client = old
        .client_builder(&dir.data_dir(), &["localhost"])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = old.url("localhost", "/");
    let (ok, failed, running) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(true)),
    );
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, ok, failed, running) = (
            client.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            running.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for _ in 0..10_000 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                match client.get(&url).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("status {}", resp.status()));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{e:?}"));
                    }
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the old process served");

    let new = Gateway::spawn_args(&dir, &["serve", "--upgrade"]);
    // The new process waits on the upgrade socket for the listeners.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    old.signal("QUIT");
    let _old = old.exits_cleanly(Duration::from_secs(20)).await;
    let at_switch = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    running.store(false, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.unwrap());
    }
    let after = ok.load(Ordering::Relaxed);
    assert!(
        after > at_switch,
        "the new process serves after the old one left\n{}",
        new.stderr()
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests lost: {errors:?}\nnew:\n{}",
        new.stderr()
    );
    new.wait_ready().await;
}

#[tokio::test]
async fn sigterm_stops_the_gateway_gracefully() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    gw.signal("TERM");
    gw.exits_cleanly(Duration::from_secs(20)).await;
    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", dir.metrics_port))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens after the stop");
}

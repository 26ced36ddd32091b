//! Operating the gateway: a zero-downtime binary upgrade (`serve --upgrade`, then SIGQUIT to
//! the old process) loses no request in flight, and SIGTERM stops it gracefully.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flowcase_e2e::load::Load;
use flowcase_e2e::{Gateway, GatewayDir};

#[tokio::test]
async fn an_upgrade_hands_the_listeners_over_without_losing_a_request() {
    let dir = GatewayDir::new();
    let old = Gateway::start(&dir).await;
    // A new connection per request: requests land on the old process, then on the new one.
    let load = Load::start(&old, &dir, 4);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = load.served();
    assert!(before > 0, "the old process served");

    let new = Gateway::spawn_args(&dir, &["serve", "--upgrade"]);
    // The new process waits on the upgrade socket for the listeners.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    old.signal("QUIT");
    let _old = old.exits_cleanly(Duration::from_secs(20)).await;
    let at_switch = load.served();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (after, errors) = load.stop().await;
    assert!(
        after > at_switch,
        "the new process serves after the old one left\n{}",
        new.stderr()
    );
    assert!(
        errors.is_empty(),
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

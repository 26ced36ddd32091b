//! Group instance limits through the admin API of the real binary: a tenant administrator sets
//! `instance_limit` on a group (`PATCH /api/v1/groups/{id}`), and a member of that group gets
//! `quota_exceeded` on the launch past it. Launches go through an orchestrator of our own over
//! the gateway's database (as in `wake.rs`; the dashboard will launch through the API), with an
//! external host droplet so no container is needed: quotas count external instances alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_admin::orchestrator::Options;
use flowcase_admin::store::{DropletType, NewDroplet, Store, TargetKind};
use flowcase_admin::web::error::classify;
use flowcase_e2e::api::{Api, code};
use flowcase_e2e::instances::database_url;
use flowcase_e2e::orchestrator::{docker_orchestrator, orchestrator_options};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";

#[tokio::test]
async fn a_group_limited_to_one_instance_refuses_the_second_launch() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;

    let (status, group) = admin
        .call(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "Interns"})),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["instance_limit"], Value::Null, "no limit by default");
    let group_id = group["id"].as_i64().unwrap();
    let (status, user) = admin
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "ivy", "password": PASSWORD, "group_ids": [group_id]})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let path = format!("/api/v1/groups/{group_id}");

    // Out of range and wrongly typed limits are refused, naming the field.
    let (status, body) = admin
        .call(Method::PATCH, &path, Some(json!({"instance_limit": -1})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
    );
    assert_eq!(body["error"]["field"], "instance_limit");
    // A member without edit_groups cannot set it.
    let ivy = Api::login(&gw, &dir, "ivy", PASSWORD).await;
    let (status, _) = ivy
        .call(Method::PATCH, &path, Some(json!({"instance_limit": 50})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = admin
        .call(Method::PATCH, &path, Some(json!({"instance_limit": 1})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance_limit"], 1);
    let (_, shown) = admin.call(Method::GET, &path, None).await;
    assert_eq!(shown["instance_limit"], 1, "{shown}");
    // Changing something else keeps the limit.
    let (_, body) = admin
        .call(Method::PATCH, &path, Some(json!({"description": "summer"})))
        .await;
    assert_eq!(body["instance_limit"], 1, "{body}");

    // Launches by a member: the first passes, the second is over the group's limit.
    let store = Store::connect(&database_url(&dir)).await.unwrap();
    let orchestrator = docker_orchestrator(
        &dir,
        &store,
        Options {
            max_per_user: 10,
            ..orchestrator_options(&dir)
        },
    );
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let mut host = NewDroplet::new(tenant.id, "Lab", DropletType::Ssh, TargetKind::External);
    host.external_host = Some("127.0.0.1".into());
    host.external_port = Some(22);
    let droplet = store.create_droplet(&host, 0).await.unwrap();
    let ivy_user = store.find_user_by_login("ivy").await.unwrap().unwrap();
    orchestrator.launch(&ivy_user, &droplet).await.unwrap();
    let refused = orchestrator.launch(&ivy_user, &droplet).await.unwrap_err();
    assert_eq!(classify(&refused).1, "quota_exceeded", "{refused}");
    assert!(refused.to_string().contains("Interns"), "{refused}");

    // Lifted (null): the next launch passes.
    let (status, body) = admin
        .call(Method::PATCH, &path, Some(json!({"instance_limit": null})))
        .await;
    assert_eq!(
        (status, &body["instance_limit"]),
        (StatusCode::OK, &Value::Null)
    );
    orchestrator.launch(&ivy_user, &droplet).await.unwrap();
    store.close().await;
}

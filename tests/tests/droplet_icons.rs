//! Droplet icons of other sites, served by the gateway (`/droplets/{id}/icon`) through the real
//! binary: an administrator saves droplets whose icons live on a loopback "other site"; the
//! control plane fetches them once, keeps a PNG and an SVG, refuses an oversize file and an
//! HTML page (the save succeeds all the same and says why), and serves the kept ones to
//! whoever may see the droplet, cacheably, with a policy that leaves an SVG no script. The
//! dashboard side (the image shown, initials otherwise) is in `dashboard_browser.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::api::{Api, code};
use flowcase_e2e::icon_server::{IconServer, SVG, png};
use flowcase_e2e::instances::add_user;
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough passphrase";

async fn group_id(admin: &Api, name: &str) -> i64 {
    let groups = admin.get_ok("/api/v1/groups?limit=200").await;
    groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}: {groups}"))["id"]
        .as_i64()
        .unwrap()
}

fn droplet(name: &str, icon: &str, group: i64) -> Value {
    json!({
        "name": name, "droplet_type": "http", "image": "example/app:1", "ports": [8080],
        "icon_url": icon, "group_ids": [group],
    })
}

#[tokio::test]
async fn icons_of_other_sites_are_fetched_once_and_served_to_whoever_may_see_the_droplet() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let site = IconServer::start().await;
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;
    add_user(&dir, "alice", PASSWORD);
    add_user(&dir, "bob", PASSWORD);
    // Every new user is in "User": the droplets go to a group of alice's only.
    let artists = admin
        .send_ok(
            Method::POST,
            "/api/v1/groups",
            json!({"name": "Artists"}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let users = group_id(&admin, "User").await;
    let alice_id = admin.get_ok("/api/v1/users?q=alice").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    admin
        .send_ok(
            Method::PUT,
            &format!("/api/v1/users/{alice_id}/groups"),
            json!({"group_ids": [users, artists]}),
            200,
        )
        .await;

    // Saved with icons of another site: fetched when saved, reported in the answer.
    let png_url = site.url("/icon.png");
    let pictured = admin
        .send_ok(
            Method::POST,
            "/api/v1/droplets",
            droplet("Pictured", &png_url, artists),
            201,
        )
        .await;
    assert_eq!(
        pictured["icon_fetch"],
        json!({"fetched": true}),
        "{pictured}"
    );
    let id = pictured["id"].as_i64().unwrap();
    let src = pictured["icon_src"].as_str().unwrap().to_owned();
    assert!(src.starts_with(&format!("/droplets/{id}/icon?v=")), "{src}");
    assert_eq!(pictured["icon_url"], png_url.as_str());
    let fetches = site.requests();
    assert_eq!(fetches, 1);

    let svg = admin
        .send_ok(
            Method::POST,
            "/api/v1/droplets",
            droplet("Vector", &site.url("/icon.svg"), artists),
            201,
        )
        .await;
    assert_eq!(svg["icon_fetch"]["fetched"], true, "{svg}");
    for (name, path, why) in [
        ("Oversize", "/big.png", "larger than 256 KiB"),
        ("Webpage", "/page.html", "not an image"),
    ] {
        let saved = admin
            .send_ok(
                Method::POST,
                "/api/v1/droplets",
                droplet(name, &site.url(path), artists),
                201,
            )
            .await;
        assert_eq!(saved["icon_fetch"]["fetched"], false, "{saved}");
        let error = saved["icon_fetch"]["error"].as_str().unwrap();
        assert!(error.contains(why), "{name}: {error}");
        assert_eq!(saved["icon_src"], Value::Null, "{saved}");
        let (status, _) = admin
            .call(
                Method::GET,
                &format!("/droplets/{}/icon", saved["id"]),
                None,
            )
            .await;
        assert_eq!(status, 404, "{name}");
    }

    // A save that keeps the URL does not fetch again.
    let renamed = admin
        .send_ok(
            Method::PATCH,
            &format!("/api/v1/droplets/{id}"),
            json!({"description": "now with a description"}),
            200,
        )
        .await;
    assert_eq!(renamed["icon_src"], src.as_str());
    assert_eq!(
        site.requests(),
        fetches + 3,
        "one fetch per new icon URL only"
    );

    // Served from this site: the bytes, cacheable, with an ETag and a policy of its own.
    let answer = admin.get_raw(&src, &[]).await;
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox"),
        "{headers:?}"
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(answer.bytes().await.unwrap().to_vec(), png());
    let again = admin.get_raw(&src, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);

    let vector = admin.get_raw(svg["icon_src"].as_str().unwrap(), &[]).await;
    assert_eq!(vector.status(), 200);
    assert_eq!(vector.headers()["content-type"], "image/svg+xml");
    let policy = vector.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("sandbox"),
        "{policy}"
    );
    assert_eq!(vector.text().await.unwrap(), SVG);

    // Who may load it: whoever may see the droplet.
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    assert_eq!(
        alice.get_raw(&src, &[]).await.status(),
        200,
        "granted to a group of alice's"
    );
    let key = alice.create_key("icons").await;
    let script = Api::with_key(&gw, &dir, &key);
    assert_eq!(
        script.get_raw(&src, &[]).await.status(),
        200,
        "alice's API key"
    );
    let bob = Api::login(&gw, &dir, "bob", PASSWORD).await;
    let (status, body) = bob.call(Method::GET, &src, None).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (404, "not_found"),
        "not granted to bob"
    );
    let (status, body) = Api::anonymous(&gw, &dir)
        .call(Method::GET, &src, None)
        .await;
    assert_eq!(status, 401, "anonymous: {body}");

    // Clearing the icon forgets it: the page shows the initial again.
    let cleared = admin
        .send_ok(
            Method::PATCH,
            &format!("/api/v1/droplets/{id}"),
            json!({"icon_url": null}),
            200,
        )
        .await;
    assert_eq!(cleared["icon_src"], Value::Null);
    assert_eq!(admin.get_raw(&src, &[]).await.status(), 404);
}

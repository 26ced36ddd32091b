//! `flowcase droplet add|list|import` through the real binary: flags and catalogue entries are
//! validated field by field, mistakes are named (entry index and field for a catalogue), valid
//! entries are imported next to refused ones, and what was stored is what was asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_admin::Store;
use flowcase_admin::store::droplets::IdleAction;
use flowcase_e2e::{GatewayDir, Untag};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn droplet_commands_fill_and_show_the_catalogue() {
    let dir = GatewayDir::new();
    assert!(dir.cli(&["migrate"]).status.success());
    let add_web = [
        "droplet",
        "add",
        "--name",
        "Web",
        "--type",
        "http",
        "--image",
        "example/web:1",
        "--port",
        "8080",
        "--cores",
        "0.5",
        "--memory",
        "128",
        "--health-path",
        "/health",
        "--env",
        "GREETING=hello world",
        "--env",
        "MODE=a=b",
        "--group",
        "User",
        "--idle-timeout",
        "30m",
        "--idle-action",
        "destroy",
        "--pool-size",
        "2",
        "--pool-started",
    ];
    // The catalogue lives in the default tenant that the first start creates.
    let early = dir.cli(&add_web);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        stderr(&early).contains("flowcase serve"),
        "{}",
        stderr(&early)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut gw = flowcase_e2e::Gateway::start(&dir).await;
        gw.stop();
    });

    let out = dir.cli(&add_web);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added droplet Web"),
        "{}",
        stdout(&out)
    );

    // Every bad flag is named, nothing is stored.
    let bad = dir.cli(&[
        "droplet",
        "add",
        "--name",
        "Bad",
        "--type",
        "telnet",
        "--image",
        "x",
        "--port",
        "0",
        "--memory",
        "lots",
        "--env",
        "NOEQUALS",
        "--cap-add",
        "SYS_ADMIN",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    for flag in ["--type", "--port", "--memory", "--env", "--cap-add"] {
        assert!(
            err.contains(&format!("{flag}: ")),
            "{flag} not named: {err}"
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &["--pool-size", "1", "--profile-mount", "/home/user"],
            "--pool-size: a warm pool cannot hold per-user profiles",
        ),
        (
            &[
                "--profile-mount",
                "/home/user",
                "--profile-path",
                "/p/{user_name}",
            ],
            "{user_id}",
        ),
        (&["--group", "Nobody"], "--group: no group named \"Nobody\""),
        (&["--idle-timeout", "soon"], "--idle-timeout: "),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "droplet", "add", "--name", "Odd", "--type", "vnc", "--image", "x", "--port", "5900",
        ];
        args.extend_from_slice(extra);
        let out = dir.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(
            stderr(&out).contains(expected),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
    let dup = dir.cli(&add_web);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    // A catalogue: good entries are imported, bad ones named by index and field.
    let catalogue = dir.dir.path().join("catalogue.json");
    std::fs::write(
        &catalogue,
        r#"[
          {"name": "Desktop", "type": "vnc", "image": "example/desk:2", "port": 5900,
           "memory": 1024, "profile_mount": "/home/user", "profile_path": "home-{user_id}",
           "group": ["User", "Admin"], "max_lifetime": "12h", "read_only_root": true},
          {"name": "Broken", "type": "http", "image": "x", "port": 80, "memory": "lots",
           "colour": "red"},
          {"name": "Lost", "type": "ssh", "image": "x", "port": 22, "group": ["Ghosts"]},
          {"name": "Shell", "type": "ssh", "image": "example/ssh:1", "port": "22",
           "cores": "2", "idle_timeout": 0, "label": {"team": "ops"}}
        ]"#,
    )
    .unwrap();
    let out = dir.cli(&["droplet", "import", catalogue.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused entries fail the command"
    );
    let (shown, err) = (stdout(&out), stderr(&out));
    assert!(
        shown.contains("2 droplet(s) imported, 2 refused"),
        "{shown}"
    );
    assert!(err.contains("entry 1 (\"Broken\"): "), "{err}");
    assert!(err.contains("memory: must be a whole number"), "{err}");
    assert!(err.contains("colour: unknown field"), "{err}");
    assert!(
        err.contains("entry 2 (\"Lost\"): group: no group named \"Ghosts\""),
        "{err}"
    );
    assert!(
        !err.contains("entry 0") && !err.contains("entry 3"),
        "{err}"
    );

    // Imported again: the names taken are skipped, not refused (the API's import does the same).
    let again = dir.cli(&["droplet", "import", catalogue.to_str().unwrap()]);
    let shown = stdout(&again);
    assert!(
        shown.contains("entry 0: skipped Desktop: a droplet named \"Desktop\" already exists"),
        "{shown}"
    );
    assert!(
        shown.contains("0 droplet(s) imported, 2 refused, 2 skipped (name taken)"),
        "{shown}"
    );

    let not_a_catalogue = dir.dir.path().join("object.json");
    std::fs::write(&not_a_catalogue, r#"{"items": []}"#).unwrap();
    let out = dir.cli(&["droplet", "import", not_a_catalogue.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("JSON array"), "{}", stderr(&out));

    let list = stdout(&dir.cli(&["droplet", "list"]));
    let row = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{list}"))
            .to_owned()
    };
    let web = row("Web");
    for part in [
        "http",
        "example/web:1",
        "8080",
        "0.5",
        "128",
        "30m destroy",
        "2 started",
        "User",
    ] {
        assert!(web.contains(part), "{part} missing: {web}");
    }
    assert!(row("Desktop").contains("Admin,User") || row("Desktop").contains("User,Admin"));
    assert!(row("Shell").contains("never"), "{}", row("Shell"));
    for absent in ["Broken", "Lost", "Bad", "Odd"] {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(absent)),
            "{absent} was stored:\n{list}"
        );
    }

    // What was stored is what was asked.
    rt.block_on(async {
        let url = format!("sqlite://{}/flowcase.db", dir.data_dir().display());
        let store = Store::connect(&url).await.unwrap();
        let droplets = store.list_droplets().await.unwrap();
        let web = droplets.iter().find(|d| d.name == "Web").unwrap();
        assert_eq!(web.cpu_millicores, Some(500));
        assert_eq!(web.env["GREETING"], "hello world");
        assert_eq!(web.env["MODE"], "a=b");
        assert_eq!(web.idle_timeout_secs, Some(1800));
        assert_eq!(web.idle_action, IdleAction::Destroy);
        assert_eq!((web.pool_size, web.pool_started), (2, true));
        assert_eq!(web.health_path.as_deref(), Some("/health"));
        let desk = droplets.iter().find(|d| d.name == "Desktop").unwrap();
        assert_eq!(desk.max_lifetime_secs, Some(12 * 3600));
        assert_eq!(desk.profile_path.as_deref(), Some("home-{user_id}"));
        assert!(desk.read_only_root);
        let shell = droplets.iter().find(|d| d.name == "Shell").unwrap();
        assert_eq!(shell.idle_timeout_secs, Some(0));
        assert_eq!(shell.labels["team"], "ops");
        assert_eq!(shell.ports, vec![22]);
        store.close().await;
    });
}

#[test]
fn external_hosts_take_their_secret_from_stdin_or_a_file_never_from_an_argument() {
    const STDIN_SECRET: &str = "Tr0ub4dor-and-3";
    const FILE_SECRET: &str = "W1ndows-Passw0rd";
    const ARG_SECRET: &str = "hunter2-on-the-command-line";
    let dir = GatewayDir::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut gw = flowcase_e2e::Gateway::start(&dir).await;
        gw.stop();
    });
    let vnc = [
        "droplet",
        "add",
        "--name",
        "Lab",
        "--type",
        "vnc",
        "--host",
        "127.0.0.1",
        "--port",
        "5901",
    ];

    // A password as an argument is refused, whatever its spelling, and never echoed.
    for flag in [
        vec!["--password", ARG_SECRET],
        vec![&format!("--password={ARG_SECRET}")[..]],
    ] {
        let args: Vec<&str> = vnc.iter().copied().chain(flag.iter().copied()).collect();
        let out = dir.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--password-stdin"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains(ARG_SECRET) && !stdout(&out).contains(ARG_SECRET));
    }
    let out = dir.cli(&["droplet", "list"]);
    assert!(!stdout(&out).contains("Lab"), "nothing was added");
    // Secrets go with --host only.
    let out = dir.cli_with_stdin(
        &[
            "droplet",
            "add",
            "--name",
            "C",
            "--type",
            "vnc",
            "--image",
            "i",
            "--port",
            "5900",
            "--password-stdin",
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--host"), "{}", stderr(&out));

    let out = dir.cli_with_stdin(
        &[&vnc[..], &["--password-stdin"][..]].concat(),
        &format!("{STDIN_SECRET}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let secret_file = dir.data_dir().join("rdp.secret");
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).unwrap();
    let out = dir.cli(&[
        "droplet",
        "add",
        "--name",
        "Windows",
        "--type",
        "rdp",
        "--host",
        "rdp.example.test",
        "--username",
        "bob",
        "--domain",
        "CORP",
        "--param",
        "security=nla",
        "--password-file",
        secret_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The list shows where the hosts are, never their secrets.
    let listed = stdout(&dir.cli(&["droplet", "list"]));
    assert!(listed.contains("127.0.0.1:5901"), "{listed}");
    assert!(listed.contains("bob@rdp.example.test:3389"), "{listed}");
    assert!(
        !listed.contains(STDIN_SECRET) && !listed.contains(FILE_SECRET),
        "{listed}"
    );

    // Stored sealed under the gateway's key file: the raw column holds no clear text, and the
    // key file opens it.
    rt.block_on(async {
        let url = format!("sqlite://{}", dir.data_dir().join("flowcase.db").display());
        let store = Store::connect(&url).await.unwrap();
        let keyring =
            flowcase_admin::secrets::ensure_key_file(&dir.data_dir().join("secret.key")).unwrap();
        for (name, secret) in [("Lab", STDIN_SECRET), ("Windows", FILE_SECRET)] {
            let droplet = store
                .list_droplets()
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.name == name)
                .unwrap();
            let raw = droplet.external_credentials.clone().unwrap();
            assert!(!String::from_utf8_lossy(&raw).contains(secret));
            let opened = flowcase_admin::orchestrator::desktop_target::open_external_credentials(
                &keyring, &droplet,
            )
            .unwrap();
            assert_eq!(opened.password.as_deref(), Some(secret));
        }
        let windows = store
            .list_droplets()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.name == "Windows")
            .unwrap();
        assert_eq!(windows.external_domain.as_deref(), Some("CORP"));
        assert_eq!(windows.external_params["security"], "nla");
        assert_eq!(windows.external_port, Some(3389));
        store.close().await;
    });
}

#[test]
fn droplet_pull_prints_progress_with_the_registry_credentials_given_on_stdin() {
    const PASSWORD: &str = "Registry-pw-71c2";
    let dir = GatewayDir::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut gw = flowcase_e2e::Gateway::start(&dir).await;
        gw.stop();
    });
    // Unique per test run: parallel tests share one dockerd.
    let repository = format!("flowcase/cli-{}", dir.deployment());
    let image = flowcase_test_images::httpd_image().unwrap();
    let registry =
        flowcase_test_images::registry::Registry::start(Some(("puller", PASSWORD))).unwrap();
    registry.push(&repository, "v1", &image).unwrap();
    let reference = registry.reference(&repository, "v1");
    let missing = registry.reference(&repository, "v9");
    let _untag = Untag(vec![reference.clone()]);
    let add = |name: &str, image: &str| {
        vec![
            "droplet".to_owned(),
            "add".into(),
            "--name".into(),
            name.into(),
            "--type".into(),
            "http".into(),
            "--image".into(),
            image.into(),
            "--port".into(),
            "8080".into(),
        ]
    };

    // A registry password as an argument is refused and not echoed.
    let mut refused = add("Web", &reference);
    refused.extend(["--registry-username".into(), "puller".into()]);
    refused.push(format!("--registry-password={PASSWORD}"));
    let out = dir.cli(&args(&refused));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--registry-password-stdin"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(PASSWORD));

    // Without credentials, the pull is refused, said as such.
    let out = dir.cli(&args(&add("Anonymous", &reference)));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dir.cli(&["droplet", "pull", "Anonymous"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("refused") && stderr(&out).contains(&reference),
        "{}",
        stderr(&out)
    );

    // With them (from stdin), progress then success, and the image is there.
    let mut with = add("Web", &reference);
    with.extend([
        "--registry-username".into(),
        "puller".into(),
        "--registry-password-stdin".into(),
    ]);
    let out = dir.cli_with_stdin(&args(&with), &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dir.cli(&["droplet", "pull", "Web"]);
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}\n{}", stderr(&out));
    eprintln!("{printed}");
    assert!(printed.contains("Pulling from"), "{printed}");
    assert!(printed.contains(": Pull complete"), "{printed}");
    assert!(
        printed.trim_end().ends_with(&format!("pulled {reference}")),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD) && !stderr(&out).contains(PASSWORD));
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", &reference])
        .output()
        .unwrap();
    assert!(inspect.status.success());

    // A tag the registry does not have: image_missing's words, naming the image.
    let mut add_missing = add("Missing", &missing);
    add_missing.extend([
        "--registry-username".into(),
        "puller".into(),
        "--registry-password-stdin".into(),
    ]);
    let out = dir.cli_with_stdin(&args(&add_missing), &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dir.cli(&["droplet", "pull", "Missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("the registry has no image {missing}")),
        "{}",
        stderr(&out)
    );

    // The password is nowhere in the database file in clear.
    let db = std::fs::read(dir.data_dir().join("flowcase.db")).unwrap();
    let wal = std::fs::read(dir.data_dir().join("flowcase.db-wal")).unwrap_or_default();
    let needle = PASSWORD.as_bytes();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
}

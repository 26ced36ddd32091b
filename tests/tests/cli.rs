//! The command line as operators use it: `check-config` on good and bad input, `version`,
//! `migrate`, and `user` management.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::GatewayDir;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_config_accepts_the_example_and_prints_effective_settings_without_secrets() {
    let mut dir = GatewayDir::new();
    dir.set(
        "FLOWCASE_DATABASE__URL",
        "postgres://flowcase:s3cr3t-pw@127.0.0.1/flowcase",
    );
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/flowcase.example.toml"
    );
    let out = dir.cli(&["check-config", "--config", example]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains(&format!("https_listen = \"127.0.0.1:{}\"", dir.https_port)),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://flowcase:***@127.0.0.1/flowcase"),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t-pw") && !stderr(&out).contains("s3cr3t-pw"));
}

#[test]
fn check_config_rejects_each_class_of_bad_input_naming_file_line_and_key() {
    let dir = GatewayDir::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "[server]\nlisten_addr = \"x\"\n",
            &["line 2", "server.listen_addr", "unknown key"],
        ),
        (
            "wrong type",
            "[database]\nmax_connections = \"ten\"\n",
            &["line 2", "database.max_connections", "u32"],
        ),
        (
            "bad address",
            "[server]\nhttps_listen = \"localhost:http\"\n",
            &["line 2", "server.https_listen", "socket address"],
        ),
        (
            "bad enum",
            "[tls]\nmode = \"magic\"\n",
            &["line 2", "tls.mode", "self-signed"],
        ),
        ("syntax", "[server\n", &["line 1"]),
        (
            "cross-key",
            "[tls]\nmode = \"files\"\n",
            &["tls.cert_file", "required"],
        ),
    ];
    for (class, text, expected) in cases {
        let path = dir.dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = dir.cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{class}: exit code");
        let err = stderr(&out);
        assert!(
            err.contains(path.to_str().unwrap()),
            "{class}: file not named: {err}"
        );
        for needle in *expected {
            assert!(
                err.contains(needle),
                "{class}: `{needle}` missing from: {err}"
            );
        }
        assert!(
            !dir.data_dir().exists(),
            "{class}: a bad config must not touch data"
        );
    }

    let out = dir.cli(&["check-config", "--config", "/nonexistent/flowcase.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/flowcase.toml"),
        "{}",
        stderr(&out)
    );

    let mut env_dir = GatewayDir::new();
    env_dir.set("FLOWCASE_SERVER__HTTPS_LISTEN", "nowhere");
    let out = env_dir.cli(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("FLOWCASE_SERVER__HTTPS_LISTEN") && err.contains("server.https_listen"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_bad_config_without_touching_data() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_SERVER__NO_SUCH_KEY", "1");
    let out = dir.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("server.no_such_key"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.data_dir().exists());
}

#[test]
fn version_prints_the_version() {
    let out = GatewayDir::new().cli(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("flowcase {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let dir = GatewayDir::new();
    for _ in 0..2 {
        let out = dir.cli(&["migrate"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("sqlite"), "{}", stdout(&out));
    }
    assert!(dir.data_dir().join("flowcase.db").exists());
}

#[test]
fn user_commands_manage_local_accounts() {
    let dir = GatewayDir::new();
    assert!(dir.cli(&["migrate"]).status.success());
    // `user add` needs the default tenant that the first start creates.
    let early = dir.cli(&["user", "add", "alice"]);
    assert!(!early.status.success(), "{}", stdout(&early));
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

    let out = dir.cli(&["user", "add", "Alice", "--email", "alice@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let generated = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("a generated password is printed")
        .to_owned();
    assert!(generated.len() >= 20);

    let dup = dir.cli(&["user", "add", "alice"]);
    assert_eq!(
        dup.status.code(),
        Some(1),
        "usernames are unique regardless of case"
    );

    let out = dir.cli_with_stdin(
        &["user", "add", "bob", "--admin", "--password-stdin"],
        "correct horse battery\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("correct horse"),
        "a given password is not echoed"
    );

    let list = stdout(&dir.cli(&["user", "list"]));
    let row = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{list}"))
            .to_owned()
    };
    assert!(row("admin").contains("Admin"), "{list}");
    assert!(
        row("alice").contains("alice@example.com") && row("alice").contains("User"),
        "{list}"
    );
    assert!(row("bob").contains("Admin"), "{list}");

    let out = dir.cli_with_stdin(
        &["user", "passwd", "ALICE", "--password-stdin"],
        "a new long passphrase\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dir.cli(&["user", "disable", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(row_state(&stdout(&dir.cli(&["user", "list"])), "alice") == "disabled");
    assert!(dir.cli(&["user", "enable", "alice"]).status.success());
    assert!(row_state(&stdout(&dir.cli(&["user", "list"])), "alice") == "active");

    let missing = dir.cli(&["user", "disable", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no user `nobody`"),
        "{}",
        stderr(&missing)
    );

    // The hashes really changed and verify.
    rt.block_on(async {
        use argon2::PasswordVerifier;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", dir.data_dir().join("flowcase.db").display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        for (user, password) in [
            ("alice", "a new long passphrase"),
            ("bob", "correct horse battery"),
        ] {
            let (hash,): (String,) =
                sqlx::query_as("SELECT password_hash FROM users WHERE username = $1")
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let parsed = argon2::PasswordHash::new(&hash).unwrap();
            assert!(
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                "{user}"
            );
        }
        let _ = generated;
    });
}

fn row_state(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_default()
        .to_owned()
}

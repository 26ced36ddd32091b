//! The config file format as users meet it: the documented example, environment overrides, and
//! an error naming the file, line and key for every class of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use flowcase_config::{Config, ConfigError, Origin, TlsMode, load};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flowcase.example.toml")
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("flowcase.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    load(Some(&write(&dir, text)), no_env())
}

fn invalid(result: Result<Config, ConfigError>) -> (Origin, String, String) {
    match result {
        Err(ConfigError::Invalid {
            origin,
            key,
            reason,
        }) => (origin, key, reason),
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

fn line(origin: &Origin) -> Option<usize> {
    match origin {
        Origin::File { line, .. } => *line,
        _ => None,
    }
}

#[test]
fn the_example_file_documents_exactly_the_defaults() {
    let from_example = load(Some(&example()), no_env()).unwrap();
    assert_eq!(from_example, Config::default());
    assert_eq!(load(None, no_env()).unwrap(), Config::default());
}

#[test]
fn every_key_of_the_model_appears_in_the_example() {
    let text = std::fs::read_to_string(example()).unwrap();
    let rendered: toml::Table = toml::from_str(&Config::default().to_redacted_toml()).unwrap();
    for (section, keys) in &rendered {
        assert!(text.contains(&format!("[{section}]")), "section {section}");
        for (key, value) in keys.as_table().unwrap() {
            if text.contains(&format!("[[{section}.{key}]]")) {
                continue;
            }
            if let Some(nested) = value.as_table() {
                for nested_key in nested.keys() {
                    assert!(
                        text.contains(&format!("\n{nested_key} = ")),
                        "{section}.{key}.{nested_key}"
                    );
                }
            } else {
                assert!(
                    text.contains(&format!("\n{key} = ")),
                    "{section}.{key} undocumented"
                );
            }
        }
    }
    for optional in [
        "cert_file",
        "key_file",
        "ca_bundle",
        "key_file",
        "[[auth.oidc]]",
        "client_secret",
    ] {
        assert!(text.contains(optional), "{optional} undocumented");
    }
}

#[test]
fn env_overrides_win_over_the_file_and_parse_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[server]\nhttps_listen = \"127.0.0.1:9443\"\n");
    let env = vec![
        (
            "FLOWCASE_SERVER__HTTPS_LISTEN".to_owned(),
            "127.0.0.1:18443".to_owned(),
        ),
        (
            "FLOWCASE_DATABASE__URL".to_owned(),
            "postgres://u:p@127.0.0.1/db".to_owned(),
        ),
        (
            "FLOWCASE_DATABASE__MAX_CONNECTIONS".to_owned(),
            "4".to_owned(),
        ),
        (
            "FLOWCASE_TLS__ACME__CONTACT".to_owned(),
            "[\"ops@example.com\"]".to_owned(),
        ),
        ("FLOWCASE_DOCKER__NETWORK".to_owned(), "1234".to_owned()),
        (
            "FLOWCASE_TEST_SOMETHING".to_owned(),
            "ignored: no section separator".to_owned(),
        ),
        ("PATH".to_owned(), "/usr/bin".to_owned()),
    ];
    let config = load(Some(&path), env).unwrap();
    assert_eq!(config.server.https_listen.port(), 18443);
    assert_eq!(config.database_url(), "postgres://u:p@127.0.0.1/db");
    assert_eq!(config.database.max_connections, 4);
    assert_eq!(config.tls.acme.contact, vec!["ops@example.com".to_owned()]);
    // A number where a string is expected is taken as the string.
    assert_eq!(config.docker.network, "1234");
}

#[test]
fn bad_env_values_name_the_variable() {
    let cases = [
        (
            "FLOWCASE_SERVER__HTTPS_LISTEN",
            "not-an-address",
            "server.https_listen",
            "socket address",
        ),
        ("FLOWCASE_SERVER__NOPE", "1", "server.nope", "unknown key"),
        ("FLOWCASE_TLS__MODE", "magic", "tls.mode", "unknown variant"),
        ("FLOWCASE_DOCKER__HOST", "ftp://x", "docker.host", "unix://"),
    ];
    for (var, value, key, reason) in cases {
        let (origin, got_key, got_reason) = invalid(load(None, vec![(var.into(), value.into())]));
        assert_eq!(origin, Origin::Env { var: var.into() }, "{var}");
        assert_eq!(got_key, key, "{var}");
        assert!(got_reason.contains(reason), "{var}: {got_reason}");
    }
}

#[test]
fn unknown_keys_are_rejected_with_file_line_and_key() {
    let (origin, key, reason) = invalid(load_text(
        "[server]\npublic_host = \"a.example\"\nlisten = \"x\"\n",
    ));
    assert_eq!(key, "server.listen");
    assert!(reason.contains("unknown key"), "{reason}");
    assert_eq!(line(&origin), Some(3));
    let (_, key, _) = invalid(load_text("[nosuchsection]\nx = 1\n"));
    assert_eq!(key, "nosuchsection");
}

#[test]
fn wrong_types_and_bad_values_name_the_key_and_what_is_expected() {
    let cases = [
        (
            "[database]\nmax_connections = \"ten\"\n",
            "database.max_connections",
            2,
            "expected u32",
        ),
        (
            "[server]\n\nhttps_listen = \"localhost:99999\"\n",
            "server.https_listen",
            3,
            "socket address",
        ),
        (
            "[server]\npublic_host = \"bad host!\"\n",
            "server.public_host",
            2,
            "not a host name",
        ),
        (
            "[auth]\nsession_lifetime = \"forever\"\n",
            "auth.session_lifetime",
            2,
            "duration",
        ),
        (
            "[tls]\nmode = \"letsencrypt\"\n",
            "tls.mode",
            2,
            "unknown variant",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.1\", \"nope\"]\n",
            "server.trusted_proxies[1]",
            2,
            "IP address",
        ),
    ];
    for (text, key, at_line, expected) in cases {
        let (origin, got_key, reason) = invalid(load_text(text));
        assert_eq!(got_key, key, "{text}");
        assert_eq!(line(&origin), Some(at_line), "{text}");
        assert!(reason.contains(expected), "{text}: {reason}");
    }
}

#[test]
fn syntax_errors_give_the_line() {
    let (origin, _, reason) = invalid(load_text("[server]\npublic_host = \"unterminated\n"));
    assert_eq!(line(&origin), Some(2));
    assert!(!reason.is_empty());
}

#[test]
fn cross_key_problems_name_the_key_and_its_line() {
    let (origin, key, reason) = invalid(load_text(
        "[server]\npublic_host = \"gw.example.com\"\napps_domain = \"gw.example.com\"\n",
    ));
    assert_eq!(key, "server.apps_domain");
    assert_eq!(line(&origin), Some(3));
    assert!(reason.contains("must differ"), "{reason}");

    let (_, key, reason) = invalid(load_text("[tls]\nmode = \"files\"\n"));
    assert_eq!(key, "tls.cert_file");
    assert!(reason.contains("required"), "{reason}");

    let (_, key, reason) = invalid(load_text(
        "[tls]\nmode = \"files\"\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
    ));
    assert_eq!(key, "tls.cert_file");
    assert!(reason.contains("does not exist"), "{reason}");

    let (_, key, _) = invalid(load_text("[server]\nhttp_listen = \"127.0.0.1:8443\"\n"));
    assert_eq!(key, "server.https_listen");

    let (_, key, reason) = invalid(load_text("[docker]\nbackend = \"swarm\"\n"));
    assert_eq!(key, "docker.upstream_mode");
    assert!(reason.contains("container-network"), "{reason}");
}

#[test]
fn the_swarm_backend_is_chosen_in_config() {
    let config = load_text(
        "[docker]\nbackend = \"swarm\"\nupstream_mode = \"container-network\"\n\
         [docker.swarm]\nimage_reference = \"name\"\n",
    )
    .unwrap();
    assert_eq!(config.docker.backend, flowcase_config::Backend::Swarm);
    assert_eq!(
        config.docker.swarm.image_reference,
        flowcase_config::SwarmImageReference::Name
    );
    let (_, key, reason) = invalid(load_text("[docker]\nbackend = \"kubernetes\"\n"));
    assert_eq!(key, "docker.backend");
    assert!(reason.contains("unknown variant"), "{reason}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let err = load(Some(Path::new("/nonexistent/flowcase.toml")), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/flowcase.toml"),
        "{err}"
    );
}

#[test]
fn redacted_output_hides_secrets() {
    let text = r#"
[database]
url = "postgres://flowcase:topsecret@127.0.0.1/flowcase"
[[auth.oidc]]
id = "corp"
display_name = "Corp"
issuer_url = "https://sso.example.com"
client_id = "flowcase"
client_secret = "oidc-secret-value"
"#;
    let config = load_text(text).unwrap();
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("topsecret"), "{shown}");
    assert!(!shown.contains("oidc-secret-value"), "{shown}");
    assert!(
        shown.contains("postgres://flowcase:***@127.0.0.1/flowcase"),
        "{shown}"
    );
    assert_eq!(
        config.auth.oidc[0].client_secret.expose(),
        "oidc-secret-value"
    );
    assert_eq!(config.tls.mode, TlsMode::SelfSigned);
}

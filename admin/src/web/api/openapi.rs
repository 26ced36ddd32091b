//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the JSON API, hand-written in
//! `openapi.json` beside this file and compiled into the binary.
//!
//! It is public (no session or key needed): it describes what `docs/api.md` already tells
//! anyone, holds no secret and no data of the installation, and tools (code generators,
//! API explorers) must be able to fetch it before they hold a credential. The tests below hold
//! it to the router: its (method, path) pairs are exactly [`super::ENDPOINTS`], every `$ref`
//! resolves and every path parameter is declared; `tests/tests/openapi.rs` checks through the
//! real binary that each documented operation is routed and secured as documented, validates
//! the document against the OpenAPI 3.1 schema, and validates real answers of every family
//! against the response schemas.
//!
//! Editing the document: answers name every field, so response objects carry
//! `"unevaluatedProperties": false` (a field the server sends but the document does not name
//! fails the answer test). A schema that another extends with `allOf` is split in two: the open
//! `<Name>Fields` that extensions build on, and the closed `<Name>` that answers use.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // The same binary always serves the same document.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DOCUMENT,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::web::api::ENDPOINTS;

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is not valid JSON")
    }

    /// (METHOD, path) of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("no `paths` object");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            let item = item.as_object().expect("a path item is an object");
            for key in item.keys() {
                if METHODS.contains(&key.as_str()) {
                    out.insert((key.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn documents_exactly_the_routed_endpoints() {
        let routed: BTreeSet<(String, String)> = ENDPOINTS
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(
            routed.len(),
            ENDPOINTS.len(),
            "ENDPOINTS lists a route twice"
        );
        let documented = documented(&document());
        let undocumented: Vec<String> = routed
            .difference(&documented)
            .map(|(m, p)| format!("  {m} {p}"))
            .collect();
        let unrouted: Vec<String> = documented
            .difference(&routed)
            .map(|(m, p)| format!("  {m} {p}"))
            .collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "openapi.json and the router (api/mod.rs) differ\n\
             routed but not documented:\n{}\n\
             documented but not routed:\n{}",
            undocumented.join("\n"),
            unrouted.join("\n"),
        );
    }

    #[test]
    fn is_openapi_3_1_with_the_basics() {
        let doc = document();
        let version = doc["openapi"].as_str().unwrap_or("");
        assert!(version.starts_with("3.1."), "openapi: {version:?}");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        assert_eq!(
            doc["info"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION")),
            "info.version is the crate's version"
        );
        let schemes = &doc["components"]["securitySchemes"];
        for scheme in ["session", "csrf", "apiKey"] {
            assert!(schemes[scheme].is_object(), "no security scheme {scheme}");
        }
        let error = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"];
        for field in ["code", "message", "field"] {
            assert!(error[field].is_object(), "Error has no {field}");
        }
    }

    /// Every `$ref` in `value`, with the JSON pointer of where it is.
    fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "$ref"
                        && let Some(target) = child.as_str()
                    {
                        out.push((at.clone(), target));
                    } else {
                        refs(child, format!("{at}/{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    refs(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(!found.is_empty());
        let broken: Vec<String> = found
            .iter()
            .filter(|(_, target)| {
                let Some(pointer) = target.strip_prefix('#') else {
                    return true; // only local references: the document stands alone
                };
                doc.pointer(pointer).is_none()
            })
            .map(|(at, target)| format!("  {at}: {target}"))
            .collect();
        assert!(broken.is_empty(), "unresolved $ref:\n{}", broken.join("\n"));
    }

    /// Follows a `$ref` to a component (parameters may be shared).
    fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => doc.pointer(pointer).unwrap_or(&Value::Null),
            None => value,
        }
    }

    #[test]
    fn every_operation_declares_its_path_parameters_and_the_basics() {
        let doc = document();
        let mut problems = Vec::new();
        let mut operation_ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let shared = item["parameters"].as_array().cloned().unwrap_or_default();
            for (method, op) in item.as_object().unwrap() {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let name = format!("{} {path}", method.to_ascii_uppercase());
                let mut declared = BTreeSet::new();
                let own = op["parameters"].as_array().cloned().unwrap_or_default();
                for param in shared.iter().chain(own.iter()) {
                    let param = resolve(&doc, param);
                    if param["in"] == "path" {
                        if param["required"] != true {
                            problems.push(format!("{name}: path parameter not required"));
                        }
                        declared.insert(param["name"].as_str().unwrap_or("").to_owned());
                    }
                }
                let templated: BTreeSet<String> =
                    templated.iter().map(|s| (*s).to_owned()).collect();
                if declared != templated {
                    problems.push(format!(
                        "{name}: path parameters {templated:?}, declared {declared:?}"
                    ));
                }
                if !op["summary"].is_string() {
                    problems.push(format!("{name}: no summary"));
                }
                if op["tags"].as_array().is_none_or(Vec::is_empty) {
                    problems.push(format!("{name}: no tag"));
                }
                match op["operationId"].as_str() {
                    Some(id) if operation_ids.insert(id.to_owned()) => {}
                    Some(id) => problems.push(format!("{name}: operationId {id} used twice")),
                    None => problems.push(format!("{name}: no operationId")),
                }
                let responses = op["responses"].as_object();
                if responses.is_none_or(|r| !r.keys().any(|k| k.starts_with('2'))) {
                    problems.push(format!("{name}: no success response"));
                }
                // The public document is the only operation without an error answer.
                if path != "/api/v1/openapi.json"
                    && responses.is_none_or(|r| !r.keys().any(|k| k.starts_with('4')))
                {
                    problems.push(format!("{name}: no error response"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The permission flags the document lists are the store's.
    #[test]
    fn permissions_schema_lists_every_flag() {
        let doc = document();
        let props = doc["components"]["schemas"]["Permissions"]["properties"]
            .as_object()
            .expect("a Permissions schema");
        let documented: BTreeSet<&str> = props.keys().map(String::as_str).collect();
        let flags: BTreeSet<&str> = crate::store::Permissions::COLUMNS.iter().copied().collect();
        assert_eq!(documented, flags);
    }
}

//! Placement constraints carried by droplet labels, for cluster backends.
//!
//! Owns the label convention: a droplet label whose key is `flowcase.placement` or starts with
//! `flowcase.placement.` holds ONE Swarm placement constraint, e.g.
//! `flowcase.placement.gpu = "node.labels.gpu==true"` or
//! `flowcase.placement = "node.role!=manager"`. Several labels give several constraints, all of
//! which must hold. These are the only `flowcase.` labels a droplet may carry; the catalogue and
//! the container spec both validate them here, so a droplet with a malformed constraint is
//! refused when it is written, not when a task cannot be scheduled. The plain Docker backend
//! ignores them (one engine, nowhere else to place a container).

use std::collections::BTreeMap;

/// Key (or key prefix, followed by a dot) of placement labels.
pub const LABEL_PLACEMENT: &str = "flowcase.placement";

/// Whether a label key is a placement label.
pub fn is_placement_label(key: &str) -> bool {
    key == LABEL_PLACEMENT
        || key
            .strip_prefix(LABEL_PLACEMENT)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|name| !name.is_empty() && name.chars().all(label_char))
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Checks one constraint and returns it normalised (no spaces around the operator). Accepted:
/// `<attribute> == <value>` or `<attribute> != <value>`, where the attribute is `node.id`,
/// `node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch`, `node.labels.<name>`
/// or `engine.labels.<name>`, and the value is made of letters, digits and `-_.:/`.
pub fn constraint(text: &str) -> Result<String, String> {
    let (attribute, operator, value) = if let Some((a, v)) = text.split_once("==") {
        (a, "==", v)
    } else if let Some((a, v)) = text.split_once("!=") {
        (a, "!=", v)
    } else {
        return Err(format!("{text:?} has no == or != operator"));
    };
    let (attribute, value) = (attribute.trim(), value.trim());
    let known = matches!(
        attribute,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || ["node.labels.", "engine.labels."].iter().any(|prefix| {
        attribute
            .strip_prefix(prefix)
            .is_some_and(|name| !name.is_empty() && name.chars().all(label_char))
    });
    if !known {
        return Err(format!(
            "{attribute:?} is not a placement attribute (node.id, node.hostname, node.role, \
             node.platform.os, node.platform.arch, node.labels.<name>, engine.labels.<name>)"
        ));
    }
    if value.is_empty()
        || !value
            .chars()
            .all(|c| label_char(c) || matches!(c, ':' | '/'))
    {
        return Err(format!(
            "{value:?} is not a constraint value (letters, digits and -_.:/)"
        ));
    }
    if attribute == "node.role" && !matches!(value, "manager" | "worker") {
        return Err(format!("node.role is manager or worker, not {value:?}"));
    }
    Ok(format!("{attribute}{operator}{value}"))
}

/// The constraints of a label set (placement labels only, in key order); the first malformed
/// one is an error naming its label.
pub fn constraints(labels: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    labels
        .iter()
        .filter(|(key, _)| is_placement_label(key))
        .map(|(key, value)| constraint(value).map_err(|e| format!("label {key}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn placement_labels_are_recognised_by_key() {
        assert!(is_placement_label("flowcase.placement"));
        assert!(is_placement_label("flowcase.placement.gpu"));
        assert!(!is_placement_label("flowcase.placementx"));
        assert!(!is_placement_label("flowcase.placement."));
        assert!(!is_placement_label("flowcase.instance"));
        assert!(!is_placement_label("team"));
    }

    #[test]
    fn constraints_are_validated_and_normalised() {
        assert_eq!(
            constraint(" node.labels.gpu == true ").unwrap(),
            "node.labels.gpu==true"
        );
        assert_eq!(
            constraint("node.role!=manager").unwrap(),
            "node.role!=manager"
        );
        assert_eq!(
            constraint("node.platform.arch==x86_64").unwrap(),
            "node.platform.arch==x86_64"
        );
        assert!(constraint("node.labels.gpu").is_err(), "no operator");
        assert!(constraint("node.cpu==4").is_err(), "unknown attribute");
        assert!(constraint("node.labels.==x").is_err(), "no label name");
        assert!(constraint("node.hostname==").is_err(), "no value");
        assert!(constraint("node.hostname==a b").is_err(), "space in value");
        assert!(constraint("node.role==boss").is_err());
        let labels = BTreeMap::from([
            ("team".to_owned(), "blue".to_owned()),
            (
                "flowcase.placement.gpu".to_owned(),
                "node.labels.gpu==true".to_owned(),
            ),
            (
                "flowcase.placement".to_owned(),
                "node.role==worker".to_owned(),
            ),
        ]);
        assert_eq!(
            constraints(&labels).unwrap(),
            ["node.role==worker", "node.labels.gpu==true"]
        );
        let bad = BTreeMap::from([("flowcase.placement.x".to_owned(), "gpu".to_owned())]);
        assert!(
            constraints(&bad)
                .unwrap_err()
                .contains("flowcase.placement.x")
        );
    }
}

//! Shape checks for the text an administrator types into the admin API: display, group and
//! tenant names, descriptions, permission flag names. Usernames and e-mail addresses are checked
//! by [`crate::accounts::validate`], the one definition shared with registration, the command
//! line and identity providers.
//!
//! Each check looks at the whole value (there is no pattern that could match a mere substring),
//! trims surrounding whitespace, and fails with [`AdminError::InvalidInput`] naming the request
//! field. Refusing control characters keeps values printable in logs and listings; markup
//! characters are allowed in free text because every output escapes them.

use std::collections::BTreeMap;

use crate::error::{AdminError, Result};
use crate::store::Permissions;

pub const DISPLAY_NAME_MAX: usize = 100;
pub const GROUP_NAME_MAX: usize = 64;
pub const TENANT_NAME_MAX: usize = 100;
pub const DESCRIPTION_MAX: usize = 500;
pub const WORKSHOP_NAME_MAX: usize = 100;

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::InvalidInput {
        field,
        reason: reason.into(),
    }
}

/// A one-line name of 1 to `max` characters without control characters.
fn line(field: &'static str, raw: &str, max: usize) -> Result<String> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(invalid(field, format!("use 1 to {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(text.to_owned())
}

/// The name shown for a user; empty falls back to `fallback` (the username).
pub fn display_name(raw: &str, fallback: &str) -> Result<String> {
    if raw.trim().is_empty() {
        return Ok(fallback.to_owned());
    }
    line("display_name", raw, DISPLAY_NAME_MAX)
}

/// A group name, unique within its tenant.
pub fn group_name(raw: &str) -> Result<String> {
    line("name", raw, GROUP_NAME_MAX)
}

/// A tenant name, unique overall.
pub fn tenant_name(raw: &str) -> Result<String> {
    line("name", raw, TENANT_NAME_MAX)
}

/// A workshop name, unique within its tenant.
pub fn workshop_name(raw: &str) -> Result<String> {
    line("name", raw, WORKSHOP_NAME_MAX)
}

/// A point in time given as unix milliseconds (`1767225600000`) or as RFC 3339 text
/// (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00+01:00`), as unix milliseconds.
pub fn instant(field: &'static str, raw: &str) -> Result<i64> {
    let text = raw.trim();
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            invalid(
                field,
                "give unix milliseconds or an RFC 3339 time such as 2026-01-01T00:00:00Z",
            )
        })?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| invalid(field, "this time is out of range"))
}

/// Free text of up to 500 characters; line breaks and tabs are the only control characters
/// allowed.
pub fn description(raw: &str) -> Result<String> {
    let text = raw.trim();
    if text.chars().count() > DESCRIPTION_MAX {
        return Err(invalid(
            "description",
            format!("use at most {DESCRIPTION_MAX} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(invalid("description", "control characters are not allowed"));
    }
    Ok(text.to_owned())
}

/// `base` with the named flags set as given. Unknown names are refused rather than ignored, so
/// a typo never silently leaves a right as it was.
pub fn permissions(base: Permissions, changes: &BTreeMap<String, bool>) -> Result<Permissions> {
    let mut result = base;
    for (name, &value) in changes {
        if !result.set(name, value) {
            let shown: String = name.chars().take(40).collect();
            return Err(invalid(
                "permissions",
                format!(
                    "unknown permission {shown:?}; known ones are {}",
                    Permissions::COLUMNS.join(", ")
                ),
            ));
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: std::fmt::Debug>(result: Result<T>) -> &'static str {
        match result {
            Err(AdminError::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(
            group_name("  Support team ").ok().as_deref(),
            Some("Support team")
        );
        assert_eq!(group_name("Équipe <b>").ok().as_deref(), Some("Équipe <b>"));
        assert_eq!(field_of(group_name("")), "name");
        assert_eq!(field_of(group_name("a\u{7}b")), "name");
        assert_eq!(field_of(group_name(&"g".repeat(65))), "name");
        assert_eq!(field_of(tenant_name("  ")), "name");
        assert_eq!(display_name("", "alice").ok().as_deref(), Some("alice"));
        assert_eq!(field_of(display_name("a\u{0}b", "alice")), "display_name");
        assert_eq!(
            description("two\nlines").ok().as_deref(),
            Some("two\nlines")
        );
        assert_eq!(description("").ok().as_deref(), Some(""));
        assert_eq!(field_of(description("bell\u{7}")), "description");
        assert_eq!(field_of(description(&"d".repeat(501))), "description");
    }

    #[test]
    fn instants_in_millis_or_rfc3339() {
        assert_eq!(
            instant("since", "1767225600000").ok(),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            instant("since", "2026-01-01T00:00:00Z").ok(),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            instant("since", "2026-01-01T01:00:00.5+01:00").ok(),
            Some(1_767_225_600_500)
        );
        assert_eq!(field_of(instant("until", "yesterday")), "until");
        assert_eq!(field_of(instant("until", "2026-01-01")), "until");
        assert_eq!(field_of(workshop_name(" ")), "name");
    }

    #[test]
    fn permission_maps() {
        let changes = BTreeMap::from([("view_users".to_owned(), true)]);
        let p = permissions(Permissions::default(), &changes).ok();
        assert_eq!(p.map(|p| p.granted()), Some(vec!["view_users"]));
        let off = BTreeMap::from([("edit_tenants".to_owned(), false)]);
        let p = permissions(Permissions::all(), &off).ok();
        assert_eq!(p.map(|p| p.edit_tenants), Some(false));
        let typo = BTreeMap::from([("is_admin".to_owned(), true)]);
        assert_eq!(
            field_of(permissions(Permissions::default(), &typo)),
            "permissions"
        );
    }
}

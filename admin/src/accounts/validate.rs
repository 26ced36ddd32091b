//! The shape of account fields, checked the same way wherever an account is created or edited
//! (registration, the admin API, the command line, identity providers).

use crate::error::AdminError;

/// 3 to 64 characters: lower-case letters, digits, `.`, `_`, `-`, starting with a letter or
/// digit. Anchored on both ends by construction (every character is checked).
pub fn username(raw: &str) -> Result<String, AdminError> {
    let name = raw.trim().to_lowercase();
    let ok = (3..=64).contains(&name.chars().count())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(AdminError::InvalidInput {
            field: "username",
            reason: "use 3 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit".into(),
        })
    }
}

/// A plausible e-mail address (one `@`, a dot in the domain, no spaces); empty means none.
pub fn email(raw: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(email) = raw.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            // Every domain label non-empty and made of letters, digits or hyphens: this also
            // refuses `a@b..c`, a trailing dot and a second `@`.
            !local.is_empty()
                && domain.split('.').count() >= 2
                && domain.split('.').all(|label| {
                    !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                })
        });
    if valid {
        Ok(Some(email.to_lowercase()))
    } else {
        Err(AdminError::InvalidInput {
            field: "email",
            reason: "this is not an e-mail address".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username(" Alice.B-2 ").ok().as_deref(), Some("alice.b-2"));
        for bad in [
            "ab",
            "-alice",
            "al ice",
            "alice<script>",
            "ålice",
            &"a".repeat(65),
        ] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            email(Some("A@Example.com")).ok().flatten().as_deref(),
            Some("a@example.com")
        );
        assert_eq!(email(Some("  ")).ok().flatten(), None);
        for bad in [
            "a", "a@b", "a@@b.c", "a b@c.d", "@b.c", "a@.b", "a@b..c", "a@b.c.", "a@b_c.d",
        ] {
            assert!(email(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! What a new password must be: long enough, not the username, not a well-known password.

/// Shorter passwords are refused.
pub const MIN_LENGTH: usize = 10;
/// Longer ones are refused too: hashing megabytes would be a denial-of-service lever.
pub const MAX_LENGTH: usize = 512;

/// Passwords that lead every leaked-password list (compared case-insensitively), plus the
/// product's own name.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789a",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "abcdefghij",
    "administrator",
    "azertyuiop",
    "baseball123",
    "changeme123",
    "default123",
    "dragon1234",
    "flowcase123",
    "flowcasegateway",
    "football123",
    "iloveyou12",
    "letmein123",
    "monkey1234",
    "passw0rd123",
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "princess123",
    "qwerty1234",
    "qwerty123456",
    "qwertyuiop",
    "starwars123",
    "sunshine123",
    "superman123",
    "trustno1234",
    "welcome123",
    "0987654321",
    "1111111111",
    "0000000000",
    "aaaaaaaaaa",
    "zaq12wsxcde",
];

/// Why a password is refused, in words for the user; None when it is acceptable.
pub fn check(password: &str, username: &str) -> Option<&'static str> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Some("the password must have at least 10 characters");
    }
    if length > MAX_LENGTH {
        return Some("the password must have at most 512 characters");
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return Some("the password must not be the username");
    }
    if COMMON.contains(&lower.as_str()) {
        return Some("this password is too common");
    }
    if password
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 4
    {
        return Some("the password needs more different characters");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check("short", "u").is_some());
        assert!(check("PassWord123", "u").is_some());
        assert!(check("alice-in-chains", "Alice-In-Chains").is_some());
        assert!(check("aaaaaaaaaaaaaa", "u").is_some());
        assert_eq!(check("correct horse battery", "alice"), None);
    }
}

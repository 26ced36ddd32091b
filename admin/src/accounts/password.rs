//! Password hashing, verification and generation.
//!
//! Owns the one password-hashing configuration of the product, so every stored hash is made the
//! same way and a dependency upgrade cannot change the cost parameters behind our back.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use rand::Rng;

use crate::error::{AdminError, Result};

/// Argon2 memory cost in KiB (19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Argon2 number of passes.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Argon2 degree of parallelism.
pub const ARGON2_PARALLELISM: u32 = 1;

/// Length of generated passwords.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// Letters and digits that cannot be misread for one another (no `0 O 1 I l`), so a password
/// copied by hand from a terminal still works: 57 symbols, about 140 bits for 24 characters.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// The hasher: Argon2id, version 0x13, m = 19 456 KiB, t = 2, p = 1, 32-byte output, with a
/// fresh 16-byte random salt per hash. These are OWASP's minimum recommendation for Argon2id and
/// the argon2 crate's defaults, pinned explicitly here. Verification reads the parameters from
/// the stored PHC string, so raising them later keeps old hashes valid.
fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .map_err(|e| AdminError::PasswordHash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// What runs after each hash or verification, once Argon2's 19 MiB block is freed: set by the
/// binary, which knows its allocator (the gateway's returns the block to the operating system
/// at once; a lazy allocator would otherwise keep it resident while the process sits idle).
static AFTER_HASH: OnceLock<fn()> = OnceLock::new();

/// Sets what runs after every password hash and verification (see [`AFTER_HASH`]). Only the
/// first call counts.
pub fn set_after_hash(release: fn()) {
    let _ = AFTER_HASH.set(release);
}

fn after_hash() {
    if let Some(release) = AFTER_HASH.get() {
        release();
    }
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password(password: &str) -> Result<String> {
    let hash = hasher()?
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AdminError::PasswordHash(e.to_string()));
    after_hash();
    hash
}

/// Whether `password` matches the PHC string `hash`. The comparison is constant-time (argon2
/// compares outputs with `subtle`). A malformed or unsupported hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let matches = match hasher() {
        Ok(argon2) => argon2.verify_password(password.as_bytes(), hash).is_ok(),
        Err(_) => false,
    };
    after_hash();
    matches
}

/// A new random password of [`GENERATED_PASSWORD_LEN`] unambiguous characters, drawn from the
/// thread-local CSPRNG (ChaCha, seeded and periodically reseeded from the operating system).
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_PASSWORD_LEN)
        .map(|_| char::from(PASSWORD_ALPHABET[rng.random_range(0..PASSWORD_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_the_documented_parameters_and_verifies() {
        let hash = hash_password("correct horse").unwrap_or_default();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("", &hash));
    }

    #[test]
    fn same_password_gets_a_different_salt_each_time() {
        let a = hash_password("pw").unwrap_or_default();
        let b = hash_password("pw").unwrap_or_default();
        assert!(!a.is_empty());
        assert_ne!(a, b);
    }

    #[test]
    fn generated_passwords_are_long_unambiguous_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.chars().count(), GENERATED_PASSWORD_LEN);
        assert!(a.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
        assert!(!a.contains(['0', 'O', '1', 'I', 'l']));
        assert_ne!(a, b);
    }
}

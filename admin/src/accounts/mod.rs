//! Account basics: password hashing and the first-start administrator.
//!
//! [`password`] owns how passwords are hashed, verified and generated; [`bootstrap`] owns the
//! one-time creation of the administrator account on an empty database; [`registration`] owns
//! self-service sign-up and invitations; [`validate`] the shape of usernames and e-mails.

pub mod bootstrap;
pub mod password;
pub mod registration;
pub mod validate;

pub use bootstrap::{BootstrapOutcome, bootstrap_admin};
pub use password::{generate_password, hash_password, set_after_hash, verify_password};

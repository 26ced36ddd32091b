//! The crate's error type.
//!
//! One enum for the whole control plane, so storage, accounts and (later) the HTTP layer agree on
//! what "not found" or "conflict" means. Database errors are classified here, in one place, so
//! that a unique violation is a [`AdminError::Conflict`] on SQLite and on PostgreSQL alike.

use std::path::PathBuf;

use sqlx::error::ErrorKind;

/// Result alias used throughout the crate.
pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The row the caller named does not exist (the payload names its kind, e.g. `"user"`).
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A unique constraint refused the write (a username, a group name, a slug is taken).
    #[error("already exists: {0}")]
    Conflict(String),

    /// The change would harm a protected entity (the first administrator, a built-in group) or
    /// lock the caller out of their own account or rights.
    #[error("{0}")]
    Protected(String),

    /// A foreign key refused the write: the referenced row does not exist, or a row that
    /// others still depend on (e.g. a droplet with instances) cannot be deleted.
    #[error("reference violation: {0}")]
    Reference(String),

    /// Any other database failure (connection, syntax, decoding).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// The database URL's scheme is neither SQLite nor PostgreSQL. Holds only the scheme, so a
    /// password in the URL never reaches a log.
    #[error("unsupported database URL scheme {0:?} (expected sqlite: or postgres://)")]
    UnsupportedDatabaseUrl(String),

    /// A stored value could not be interpreted (unknown enum text, malformed JSON, ...).
    #[error("invalid stored data: {0}")]
    InvalidData(String),

    /// Argon2 refused its parameters or input.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),

    /// The secret key file exists but cannot be used.
    #[error("secret key file {}: {reason}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Login refused. Deliberately says nothing about which part was wrong.
    #[error("invalid username or password")]
    InvalidCredentials,

    /// Too many failed attempts; the client may retry after this many seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    Throttled {
        /// Seconds until the next attempt is considered.
        retry_after_secs: u64,
    },

    /// The request needs a logged-in user (or an API key) and has none.
    #[error("authentication required")]
    Unauthenticated,

    /// The user is known but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),

    /// A state-changing request failed the CSRF or origin check.
    #[error("CSRF check failed: {0}")]
    Csrf(&'static str),

    /// A request field has a value the operation refuses.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field, as named in the request.
        field: &'static str,
        /// Why, in words for the user.
        reason: String,
    },

    /// A login through an external identity provider failed; the text is safe to show.
    #[error("external sign-in failed: {0}")]
    ExternalLogin(String),

    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The user (or everybody together) already holds as many instances as allowed.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),

    /// The engine has no CPU or memory left for another running instance.
    #[error("capacity exhausted: {0}")]
    CapacityExhausted(String),

    /// The droplet's image is not on the engine (no pull is attempted on launch).
    #[error("image {0} is not present on the container engine; an administrator must pull it")]
    ImageMissing(String),

    /// A pull found no such image (repository or tag) in its registry. Same stable code as
    /// [`Self::ImageMissing`] (`image_missing`), worded for the pull.
    #[error("the registry has no image {0}: check the repository name and tag")]
    ImageNotInRegistry(String),

    /// A pull's registry refused access to the image (credentials missing or wrong).
    #[error(
        "the registry refused access to image {0}: set the droplet's registry username and \
         password"
    )]
    RegistryRefused(String),

    /// A pull's registry cannot be reached (the image, then why).
    #[error("the registry cannot be reached to pull {0}")]
    RegistryUnreachable(String),

    /// The container engine failed or is unreachable.
    #[error("container engine: {0}")]
    Engine(String),

    /// The instance's container did not become ready (timed out, or exited while booting).
    #[error("instance not ready: {0}")]
    NotReady(String),
}

impl AdminError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Classifies driver errors by their portable [`ErrorKind`], which sqlx derives from the
/// SQLSTATE on PostgreSQL and from the extended result code on SQLite; matching on message
/// text or codes here would need one branch per backend.
impl From<sqlx::Error> for AdminError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => Self::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => Self::Reference(db.message().to_owned()),
                _ => Self::Database(err),
            },
            _ => Self::Database(err),
        }
    }
}

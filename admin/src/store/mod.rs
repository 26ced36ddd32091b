//! The control plane's only data-access layer.
//!
//! [`Store`] wraps an sqlx `Any` pool so every query is written once, in SQL that SQLite and
//! PostgreSQL both accept, with `$n` placeholders (SQLite reads `$1` as the numbered parameter 1).
//! The schema lives in two migration folders, `migrations/sqlite` and `migrations/postgres`,
//! which must describe the same tables; the URL scheme picks one and it runs at connect time.
//!
//! Each submodule owns one family of tables and the typed functions over it; [`codec`] owns the
//! value representations they share (0/1 flags, millisecond timestamps, JSON text, enum text).
//!
//! Conventions: `get_*`/`find_*` return `Ok(None)` for a missing row; updates and deletes of a
//! missing row return [`AdminError::NotFound`]; unique violations are [`AdminError::Conflict`]
//! and foreign-key refusals [`AdminError::Reference`] on both backends.

pub mod api_keys;
pub mod audit;
pub mod codec;
pub mod copy;
pub mod droplet_icons;
pub mod droplets;
pub mod gauges;
pub mod groups;
pub mod identities;
pub mod installation;
pub mod instance_views;
pub mod instances;
pub mod invites;
pub mod overview;
pub mod sessions;
pub mod single_use;
pub mod tenants;
pub mod users;
pub mod workshops;

use std::str::FromStr;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::error::{AdminError, Result};

pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{AuditEntry, AuditFilter, NewAuditEntry};
pub use codec::{now_millis, unix_millis};
pub use droplets::{Droplet, DropletType, GuacdMode, NewDroplet, TargetKind};
pub use gauges::GaugeCounts;
pub use groups::{Clipboard, Group, NewGroup, Permissions};
pub use instance_views::{InstanceFilter, InstanceRow};
pub use instances::{
    AdmissionLimits, Allocation, Instance, InstanceStatus, NewInstance, Refusal, StartClaim,
};
pub use invites::{Invite, NewInvite};
pub use overview::Counts;
pub use sessions::{NewSession, Session};
pub use tenants::Tenant;
pub use users::{NewUser, User, UserFields};
pub use workshops::{
    NewWorkshop, Participant, Seat, Workshop, WorkshopFields, WorkshopLink, WorkshopStatus,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long (milliseconds) a SQLite connection waits for another writer before giving up.
/// Pool size when the caller does not say (tests, tools).
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A SQLite file (the default for single-host installs).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL's scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other => Err(AdminError::UnsupportedDatabaseUrl(other.to_owned())),
        }
    }

    /// Lower-case name, as shown in the readiness report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// Handle to the database. Cloning is cheap (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite://path/to/file.db`, `sqlite::memory:` or
    /// `postgres://user:pass@host/db`) and applies any pending migrations.
    ///
    /// For SQLite the file and its parent directory are created if missing, and every connection
    /// runs with WAL journaling, foreign keys enforced and a busy timeout. Migrations are safe to
    /// run from several processes at once on PostgreSQL (sqlx takes an advisory lock).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects as the configuration says (`[database]`): its URL and pool size.
    pub async fn open(config: &flowcase_config::Config) -> Result<Self> {
        Self::connect_with(&config.database_url(), config.database.max_connections).await
    }

    async fn connect_with(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => connect_sqlite(url, max_connections).await?,
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .connect(url)
                    .await?
            }
        };
        backend.migrator().run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The backend behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Round-trips a trivial query, for the readiness probe.
    pub async fn ping(&self) -> Result<()> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    /// Closes every pooled connection; later calls fail. Lets tests and shutdown release files
    /// and server connections deterministically.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that intends to write. On SQLite it is `BEGIN IMMEDIATE`, which takes
    /// the write lock up front (waiting out the busy timeout); a plain `BEGIN` that reads first and
    /// writes later fails at once with `SQLITE_BUSY` when another writer got in between.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }
}

async fn connect_sqlite(url: &str, max_connections: u32) -> Result<AnyPool> {
    // Parsing with the SQLite driver's own rules gives the same file name it will open.
    let options = SqliteConnectOptions::from_str(url)?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if let Some(parent) = options.get_filename().parent()
        && !in_memory
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| AdminError::io(parent, e))?;
    }
    // The Any driver builds SQLite options from the URL alone, so "create if missing" has to be
    // spelled there; an explicit `mode=` from the operator wins.
    let url = if in_memory || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };

    // The remaining settings cannot be spelled in an Any URL either, so every new connection
    // applies them. foreign_keys and busy_timeout are per connection; journal_mode=WAL persists
    // in the file and is a no-op once set.
    let mut pool_options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute(SQLITE_BUSY_TIMEOUT).await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                Ok(())
            })
        });
    if in_memory {
        // Each new connection to `:memory:` would be a different, empty database: keep exactly
        // one connection alive for the pool's whole life.
        pool_options = pool_options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    Ok(pool_options.connect(&url).await?)
}

/// Turns "no row changed" into [`AdminError::NotFound`] for updates and deletes by id.
pub(crate) fn expect_one(result: AnyQueryResult, what: &'static str) -> Result<()> {
    if result.rows_affected() == 0 {
        Err(AdminError::NotFound(what))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(
            Backend::from_url("sqlite://data/flowcase.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u:p@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u:p@h/db").ok(),
            Some(Backend::Postgres)
        );
        // Only the scheme is kept: the password must not end up in an error message.
        assert!(matches!(
            Backend::from_url("mysql://root:secret@h/db"),
            Err(AdminError::UnsupportedDatabaseUrl(scheme)) if scheme == "mysql"
        ));
    }
}

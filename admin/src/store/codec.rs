//! Conversions between Rust values and the portable column types of the schema.
//!
//! Owns the few representation choices that the `Any` driver forces on us, so that every table
//! module encodes them the same way:
//! - booleans are integer columns holding 0/1 (`Any` cannot decode a SQLite `BOOLEAN` column,
//!   nor a PostgreSQL `BOOLEAN` as an integer, so no single Rust type reads both natively);
//! - timestamps are `i64` unix milliseconds, supplied by the caller so expiry logic is testable;
//! - structured values (ports, environment, audit details) are JSON text;
//! - enums are stored as their stable lower-case text form (declared with `text_enum!` below);
//! - there are no floating-point columns: sqlx 0.9.0's `Any` driver declares a NULL `f64`
//!   parameter as `float4` on PostgreSQL (sqlx issue #4284), which poisons the statement cached
//!   on that connection for the next non-NULL value. Quantities are integers in a small unit.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{AdminError, Result};

/// Encodes a boolean for a 0/1 flag column.
pub(crate) fn flag(value: bool) -> i16 {
    i16::from(value)
}

/// Reads a 0/1 flag column. Decoding goes through `i64` because that is the one integer type the
/// `Any` driver reads from SQLite `INTEGER` and PostgreSQL `SMALLINT` (and aggregates of them).
pub(crate) fn get_flag(row: &AnyRow, column: &str) -> Result<bool> {
    let value: i64 = row.try_get(column)?;
    Ok(value != 0)
}

/// Serializes a value into a JSON text column.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| AdminError::InvalidData(format!("JSON encoding: {e}")))
}

/// Reads a JSON text column.
pub(crate) fn get_json<T: DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| AdminError::InvalidData(format!("column {column}: malformed JSON: {e}")))
}

/// Reads an enum stored as text.
pub(crate) fn get_enum<T: FromStr<Err = AdminError>>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    text.parse()
}

/// Reads a nullable integer column that must fit a TCP port.
pub(crate) fn get_port(row: &AnyRow, column: &str) -> Result<Option<u16>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| {
            u16::try_from(v)
                .map_err(|_| AdminError::InvalidData(format!("column {column}: {v} is not a port")))
        })
        .transpose()
}

/// Converts a wall-clock time to the unix milliseconds stored in every timestamp column.
/// Times before 1970 clamp to 0 and times past year 292 million clamp to `i64::MAX`.
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current time in unix milliseconds, for callers at the edge (request handlers, startup);
/// everything below them takes `now` as a parameter.
pub fn now_millis() -> i64 {
    unix_millis(SystemTime::now())
}

/// Declares an enum whose variants are stored as fixed lower-case text. The text forms are part
/// of the schema (CHECK constraints name them) and of the JSON API, so they must never change.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable text form stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::AdminError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::error::AdminError::InvalidData(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        other
                    ))),
                }
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_millis_clamps_and_converts() {
        assert_eq!(unix_millis(UNIX_EPOCH), 0);
        assert_eq!(
            unix_millis(UNIX_EPOCH + Duration::from_millis(1_234)),
            1_234
        );
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn flags_encode_as_zero_and_one() {
        assert_eq!(flag(false), 0);
        assert_eq!(flag(true), 1);
    }
}

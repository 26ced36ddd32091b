//! Copies every row of one database into another, empty PostgreSQL database: the move from
//! SQLite (the default) to PostgreSQL (production, several gateways) without losing anything.
//!
//! Both stores run the same migrations at connect time, so they have the same tables. The
//! table list, column types and foreign keys are read from the PostgreSQL target's catalogue, so
//! a new migration needs no change here. Parents are copied before children, all in one
//! transaction on the target (a failure leaves it empty), ids keep their values and identity
//! sequences are moved past them so new rows do not collide.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Result, Store};
use crate::error::AdminError;

/// Rows copied, per table, in the order they were copied.
pub type CopyReport = Vec<(String, u64)>;

/// How a column's values are carried across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Real,
    Text,
    Bytes,
}

struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
}

impl Store {
    /// Copies all rows of `self` into `target`, which must be PostgreSQL and hold no rows yet.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        if target.backend != Backend::Postgres {
            return Err(AdminError::InvalidInput {
                field: "target",
                reason: "the target must be a PostgreSQL database".into(),
            });
        }
        let tables = target_tables(target).await?;
        for table in &tables {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {}",
                table.name
            )))
            .fetch_one(&target.pool)
            .await?;
            if rows > 0 {
                return Err(AdminError::Conflict(format!(
                    "the target database is not empty (table {} has {rows} rows); \
                     copy into a new database",
                    table.name
                )));
            }
        }
        let mut tx = target.pool.begin().await?;
        let mut report = Vec::new();
        for table in &tables {
            let names: Vec<&str> = table.columns.iter().map(|(n, _)| n.as_str()).collect();
            // By id where there is one: a row referring to another row of its table (an
            // invitation's creator, say) then finds it already copied.
            let order = if names.contains(&"id") {
                " ORDER BY id"
            } else {
                ""
            };
            let select = format!("SELECT {} FROM {}{order}", names.join(", "), table.name);
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let insert = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                names.join(", "),
                placeholders.join(", ")
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(select))
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.as_str()));
                for (i, (column, kind)) in table.columns.iter().enumerate() {
                    query = bind(query, row, i, *kind).map_err(|e| {
                        AdminError::InvalidData(format!("{}.{column}: {e}", table.name))
                    })?;
                }
                query.execute(&mut *tx).await?;
            }
            let integer_id = table
                .columns
                .iter()
                .any(|(n, k)| n == "id" && *k == Kind::Integer);
            if integer_id && !rows.is_empty() {
                let reset = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'), MAX(id)) FROM {0} \
                     WHERE pg_get_serial_sequence('{0}', 'id') IS NOT NULL",
                    table.name
                );
                sqlx::query(sqlx::AssertSqlSafe(reset))
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            report.push((table.name.clone(), rows.len() as u64));
        }
        tx.commit().await?;
        Ok(report)
    }
}

fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    row: &AnyRow,
    i: usize,
    kind: Kind,
) -> std::result::Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>, sqlx::Error> {
    Ok(match kind {
        Kind::Integer => query.bind(row.try_get::<Option<i64>, _>(i)?),
        Kind::Real => query.bind(row.try_get::<Option<f64>, _>(i)?),
        Kind::Text => query.bind(row.try_get::<Option<String>, _>(i)?),
        Kind::Bytes => query.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
    })
}

/// The target's tables (without sqlx's migration table), parents before children.
async fn target_tables(target: &Store) -> Result<Vec<Table>> {
    let columns = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut by_table: BTreeMap<String, Vec<(String, Kind)>> = BTreeMap::new();
    for row in &columns {
        let (table, column, data_type): (String, String, String) =
            (row.try_get("t")?, row.try_get("c")?, row.try_get("d")?);
        let kind = match data_type.as_str() {
            "bigint" | "integer" | "smallint" => Kind::Integer,
            "double precision" | "real" => Kind::Real,
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(AdminError::InvalidData(format!(
                    "{table}.{column}: column type {other} cannot be copied"
                )));
            }
        };
        by_table.entry(table).or_default().push((column, kind));
    }
    let edges = sqlx::query(
        "SELECT tc.table_name::text AS child, ccu.table_name::text AS parent \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.constraint_column_usage ccu \
           ON tc.constraint_name = ccu.constraint_name AND tc.table_schema = ccu.table_schema \
         WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &edges {
        let (child, parent): (String, String) = (row.try_get("child")?, row.try_get("parent")?);
        if child != parent {
            parents.entry(child).or_default().insert(parent);
        }
    }
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < by_table.len() {
        let ready: Vec<String> = by_table
            .keys()
            .filter(|t| !done.contains(*t))
            .filter(|t| {
                parents
                    .get(*t)
                    .is_none_or(|ps| ps.iter().all(|p| done.contains(p)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(AdminError::InvalidData(
                "the tables' foreign keys form a cycle; cannot order the copy".into(),
            ));
        }
        for name in ready {
            done.insert(name.clone());
            let columns = by_table.get(&name).cloned().unwrap_or_default();
            ordered.push(Table { name, columns });
        }
    }
    Ok(ordered)
}

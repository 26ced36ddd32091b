//! Instances as lists show them: each row joined with its droplet's name and type and its
//! owner's name and tenant, filtered and paged in SQL (the API's instance lists and its event
//! stream). Owns no table; `instances.rs` owns the rows.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use super::codec::get_enum;
use super::droplets::DropletType;
use super::instances::{Instance, InstanceStatus};
use crate::error::Result;

/// An instance with what a list shows about its droplet and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub instance: Instance,
    pub droplet_name: String,
    pub droplet_type: DropletType,
    pub username: String,
    /// The owner's tenant: the tenant the instance belongs to.
    pub tenant_id: i64,
}

/// Which instances a list returns. Every field narrows; `gone` rows (kept for history) are
/// left out unless `status` asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// The owner's tenant.
    pub tenant_id: Option<i64>,
    pub user_id: Option<i64>,
    pub droplet_id: Option<i64>,
    pub status: Option<InstanceStatus>,
    /// Part of the droplet's name or the owner's username, case-insensitive (ASCII).
    pub text: Option<String>,
}

enum Bind {
    Int(i64),
    Text(String),
}

/// `%text%` for `LIKE … ESCAPE '\'`, with the pattern characters of `text` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_ascii_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl InstanceFilter {
    /// The `WHERE` clause and its parameters, numbered from `$1`.
    fn clause(&self) -> (String, Vec<Bind>) {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        let next = |bind: Bind, binds: &mut Vec<Bind>| {
            binds.push(bind);
            binds.len()
        };
        if let Some(tenant) = self.tenant_id {
            let n = next(Bind::Int(tenant), &mut binds);
            conditions.push(format!("u.tenant_id = ${n}"));
        }
        if let Some(user) = self.user_id {
            let n = next(Bind::Int(user), &mut binds);
            conditions.push(format!("i.user_id = ${n}"));
        }
        if let Some(droplet) = self.droplet_id {
            let n = next(Bind::Int(droplet), &mut binds);
            conditions.push(format!("i.droplet_id = ${n}"));
        }
        match self.status {
            Some(status) => {
                let n = next(Bind::Text(status.as_str().to_owned()), &mut binds);
                conditions.push(format!("i.status = ${n}"));
            }
            None => conditions.push("i.status <> 'gone'".to_owned()),
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            let n = next(Bind::Text(contains_pattern(text)), &mut binds);
            conditions.push(format!(
                "(LOWER(d.name) LIKE ${n} ESCAPE '\\' OR LOWER(u.username) LIKE ${n} ESCAPE '\\')"
            ));
        }
        (format!(" WHERE {}", conditions.join(" AND ")), binds)
    }
}

const SELECT: &str = "SELECT i.id, i.slug, i.droplet_id, i.user_id, i.status, i.error_reason, \
     i.container_id, i.container_name, i.upstream, i.created_at, i.started_at, i.stopped_at, \
     i.last_activity_at, i.credentials, i.guacd, d.name AS droplet_name, \
     d.droplet_type AS droplet_type, u.username AS username, u.tenant_id AS owner_tenant_id";
const FROM: &str =
    " FROM instances i JOIN droplets d ON d.id = i.droplet_id JOIN users u ON u.id = i.user_id";

impl InstanceRow {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            instance: Instance::from_row(row)?,
            droplet_name: row.try_get("droplet_name")?,
            droplet_type: get_enum(row, "droplet_type")?,
            username: row.try_get("username")?,
            tenant_id: row.try_get("owner_tenant_id")?,
        })
    }
}

impl Store {
    /// One page of the instances matching `filter`, newest first, and how many match in all.
    pub async fn page_instance_rows(
        &self,
        filter: &InstanceFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<InstanceRow>, i64)> {
        let items = self.list_instance_rows(filter, limit, offset).await?;
        let (clause, binds) = filter.clause();
        let count_sql = format!("SELECT COUNT(*){FROM}{clause}");
        let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql));
        for bind in binds {
            count = match bind {
                Bind::Int(v) => count.bind(v),
                Bind::Text(v) => count.bind(v),
            };
        }
        let total = count.fetch_one(&self.pool).await?;
        Ok((items, total))
    }

    /// [`Self::page_instance_rows`] without the count, for readers that poll.
    pub async fn list_instance_rows(
        &self,
        filter: &InstanceFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<InstanceRow>> {
        let (clause, binds) = filter.clause();
        let n = binds.len();
        let sql = format!(
            "{SELECT}{FROM}{clause} ORDER BY i.created_at DESC, i.id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
            };
        }
        let rows = query.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        rows.iter().map(InstanceRow::from_row).collect()
    }

    /// One instance with its droplet and owner, `gone` ones included.
    pub async fn instance_row(&self, id: i64) -> Result<Option<InstanceRow>> {
        let sql = format!("{SELECT}{FROM} WHERE i.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(InstanceRow::from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_taken_literally() {
        assert_eq!(contains_pattern("Ab%c_d\\"), "%ab\\%c\\_d\\\\%");
    }

    #[test]
    fn filters_number_their_parameters_in_order() {
        let filter = InstanceFilter {
            tenant_id: Some(1),
            droplet_id: Some(3),
            status: Some(InstanceStatus::Running),
            text: Some("x".into()),
            ..InstanceFilter::default()
        };
        let (clause, binds) = filter.clause();
        assert_eq!(binds.len(), 4);
        assert!(clause.contains("u.tenant_id = $1"), "{clause}");
        assert!(clause.contains("i.droplet_id = $2"), "{clause}");
        assert!(clause.contains("i.status = $3"), "{clause}");
        assert!(clause.contains("LIKE $4"), "{clause}");
        let (clause, _) = InstanceFilter::default().clause();
        assert_eq!(clause, " WHERE i.status <> 'gone'");
    }
}

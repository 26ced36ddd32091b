//! A fresh PostgreSQL database per test on the server named by `FLOWCASE_TEST_POSTGRES_URL`
//! (scripts/test starts one and sets it), dropped when the guard goes.

use sqlx::Connection;

pub const URL_VAR: &str = "FLOWCASE_TEST_POSTGRES_URL";

pub struct TestDatabase {
    pub url: String,
    server_url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let server_url = std::env::var(URL_VAR).unwrap_or_else(|_| {
            panic!("{URL_VAR} is not set: run scripts/test, or point it at a PostgreSQL server (postgres://user:pass@127.0.0.1:5432/postgres) whose user may CREATE DATABASE")
        });
        let name = format!("flowcase_e2e_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&server_url).await.unwrap();
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .unwrap();
        conn.close().await.unwrap();
        let (base, _) = server_url.rsplit_once('/').unwrap();
        TestDatabase {
            url: format!("{base}/{name}"),
            server_url,
            name,
        }
    }

    /// Drops the database (best effort; a crashed test leaves one behind, named flowcase_e2e_*).
    pub async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server_url).await {
            let _ = sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )),
            )
            .await;
        }
    }
}

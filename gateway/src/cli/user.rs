//! `flowcase user …`: local account administration from the shell, for the first steps and for
//! recovering a locked-out administrator. Each command is a thin call into the admin crate.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;
use flowcase_admin::accounts::{self, registration, validate};
use flowcase_admin::auth::policy;
use flowcase_admin::store::{NewUser, Store, User, now_millis};
use flowcase_config::Config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local account.
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Put the account in the Admin group.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (generated unless --password-stdin) and end the user's sessions.
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Create an invitation code for `/register` (with `auth.registration = "invite"`).
    Invite {
        /// How many accounts the code may create.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// How long the code stays valid (e.g. 7d, 12h).
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Group the new accounts join (default: User).
        #[arg(long, default_value = registration::DEFAULT_GROUP)]
        group: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Refuse the user's logins and end their sessions.
    Disable { username: String },
    /// Allow the user's logins again.
    Enable { username: String },
}

pub fn run(config: Config, command: UserCommand) -> anyhow::Result<()> {
    crate::cli::block_on(async move {
        let store = Store::open(&config)
            .await
            .context("cannot open the database")?;
        let result = execute(&store, command).await;
        store.close().await;
        result
    })
}

async fn execute(store: &Store, command: UserCommand) -> anyhow::Result<()> {
    let now = now_millis();
    match command {
        UserCommand::Add {
            username,
            email,
            display_name,
            admin,
            password_stdin,
        } => {
            let username = validate::username(&username)?;
            let email = validate::email(email.as_deref())?;
            let (password, generated) = password(password_stdin, &username)?;
            let tenant = store
                .default_tenant()
                .await?
                .context("the database has no default tenant: start `flowcase serve` once first")?;
            let user = store
                .create_user(
                    &NewUser {
                        tenant_id: tenant.id,
                        display_name: display_name.unwrap_or_else(|| username.clone()),
                        username,
                        email,
                        password_hash: Some(accounts::hash_password(&password)?),
                        ..NewUser::default()
                    },
                    now,
                )
                .await?;
            let group = if admin { "Admin" } else { "User" };
            if let Some(group) = store.find_group_by_name(tenant.id, group).await? {
                store.add_member(user.id, group.id).await?;
            }
            println!("created user {} (id {})", user.username, user.id);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let user = find(store, &username).await?;
            let (password, generated) = password(password_stdin, &user.username)?;
            store
                .set_password_hash(user.id, Some(&accounts::hash_password(&password)?), now)
                .await?;
            let (sessions, keys) = store.end_user_access(user.id, now).await?;
            println!(
                "password of {} changed; {sessions} session(s) ended, {keys} API key(s) revoked",
                user.username
            );
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            println!(
                "{:>5}  {:<24} {:<32} {:<9} groups",
                "id", "username", "email", "state"
            );
            for user in store.list_users().await? {
                let groups: Vec<String> = store
                    .groups_of_user(user.id)
                    .await?
                    .into_iter()
                    .map(|g| g.name)
                    .collect();
                println!(
                    "{:>5}  {:<24} {:<32} {:<9} {}",
                    user.id,
                    user.username,
                    user.email.as_deref().unwrap_or("-"),
                    if user.disabled { "disabled" } else { "active" },
                    groups.join(",")
                );
            }
        }
        UserCommand::Invite {
            uses,
            expires,
            group,
            note,
        } => {
            if uses < 1 {
                bail!("--uses must be at least 1");
            }
            let lifetime =
                flowcase_config::Duration::parse(&expires).map_err(anyhow::Error::msg)?;
            let tenant = store
                .default_tenant()
                .await?
                .context("the database has no default tenant: start `flowcase serve` once first")?;
            let group = store
                .find_group_by_name(tenant.id, &group)
                .await?
                .with_context(|| format!("no group `{group}`"))?;
            let lifetime_ms = i64::try_from(lifetime.get().as_millis()).unwrap_or(i64::MAX);
            let (code, invite) = registration::create_invite(
                store,
                flowcase_admin::store::NewInvite {
                    tenant_id: tenant.id,
                    group_id: Some(group.id),
                    note,
                    max_uses: uses,
                    expires_at: Some(now.saturating_add(lifetime_ms)),
                    ..Default::default()
                },
                now,
            )
            .await?;
            println!(
                "invitation {} for group {} ({} use(s), valid {expires})",
                invite.id, group.name, uses
            );
            println!("code: {code}");
        }
        UserCommand::Disable { username } => {
            let user = find(store, &username).await?;
            store.set_user_disabled(user.id, true, now).await?;
            let ended = store.revoke_user_sessions(user.id, now).await?;
            println!("disabled {}; {ended} session(s) ended", user.username);
        }
        UserCommand::Enable { username } => {
            let user = find(store, &username).await?;
            store.set_user_disabled(user.id, false, now).await?;
            println!("enabled {}", user.username);
        }
    }
    Ok(())
}

async fn find(store: &Store, login: &str) -> anyhow::Result<User> {
    store
        .find_user_by_login(login)
        .await?
        .with_context(|| format!("no user `{login}`"))
}

/// The password to set and whether it was generated (and so must be shown). A given password
/// meets the same policy as one chosen on the web.
fn password(from_stdin: bool, username: &str) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((accounts::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    if let Some(reason) = policy::check(&password, username) {
        bail!("{reason}");
    }
    Ok((password, false))
}

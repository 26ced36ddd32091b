//! Self-service account creation at `/register`, in the mode `auth.registration` names: closed
//! (nobody), invite (with a valid invitation code) or open (anybody). New accounts join the
//! invitation's tenant and group, or in open mode the default tenant's "User" group.

use flowcase_config::Registration;

use super::validate;
use crate::auth::policy;
use crate::auth::tokens;
use crate::error::{AdminError, Result};
use crate::store::groups::{find_group_by_name, insert_member};
use crate::store::invites::redeem_invite;
use crate::store::tenants::find_default_tenant;
use crate::store::users::insert_user;
use crate::store::{NewUser, Store, User};

/// The group open registration puts people in; created with the first administrator.
pub const DEFAULT_GROUP: &str = super::bootstrap::USER_GROUP_NAME;

#[derive(Debug, Clone, Default)]
pub struct RegistrationForm {
    pub username: String,
    pub email: Option<String>,
    pub password: String,
    pub invite_code: Option<String>,
}

/// Creates the account after checking every field and the password policy.
pub async fn register(
    store: &Store,
    mode: Registration,
    form: &RegistrationForm,
    now: i64,
) -> Result<User> {
    if mode == Registration::Closed {
        return Err(AdminError::Forbidden("registration is closed"));
    }
    let username = validate::username(&form.username)?;
    let email = validate::email(form.email.as_deref())?;
    if let Some(reason) = policy::check(&form.password, &username) {
        return Err(AdminError::InvalidInput {
            field: "password",
            reason: reason.into(),
        });
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || super::hash_password(&password))
        .await
        .map_err(|e| AdminError::PasswordHash(e.to_string()))??;

    let mut tx = store.begin_write().await?;
    let (tenant_id, group_id) = match mode {
        Registration::Invite => {
            let code = form
                .invite_code
                .as_deref()
                .map(str::trim)
                .unwrap_or_default();
            let invite = if code.is_empty() {
                None
            } else {
                redeem_invite(&mut *tx, &tokens::digest(code), now).await?
            };
            let invite = invite.ok_or_else(|| AdminError::InvalidInput {
                field: "invite_code",
                reason: "this invitation code is not valid (wrong, used up, expired or revoked)"
                    .into(),
            })?;
            (invite.tenant_id, invite.group_id)
        }
        _ => {
            let tenant = find_default_tenant(&mut *tx)
                .await?
                .ok_or(AdminError::NotFound("default tenant"))?;
            let group = find_group_by_name(&mut *tx, tenant.id, DEFAULT_GROUP).await?;
            (tenant.id, group.map(|g| g.id))
        }
    };
    let user = insert_user(
        &mut *tx,
        &NewUser {
            tenant_id,
            display_name: username.clone(),
            username,
            email,
            password_hash: Some(hash),
            ..NewUser::default()
        },
        now,
    )
    .await
    .map_err(|e| match e {
        // Say which field, without saying whose account it is.
        AdminError::Conflict(_) => AdminError::InvalidInput {
            field: "username",
            reason: "this username or e-mail address is already taken".into(),
        },
        other => other,
    })?;
    if let Some(group_id) = group_id {
        insert_member(&mut *tx, user.id, group_id).await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// A new invitation code for `tenant_id` (shown once; only its digest is stored).
pub async fn create_invite(
    store: &Store,
    invite: crate::store::NewInvite,
    now: i64,
) -> Result<(String, crate::store::Invite)> {
    let code = tokens::new_secret();
    let stored = store
        .create_invite(
            &crate::store::NewInvite {
                code_hash: tokens::digest(&code),
                ..invite
            },
            now,
        )
        .await?;
    Ok((code, stored))
}

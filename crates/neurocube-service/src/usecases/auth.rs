//! Access-control use cases: who am I, users, tokens, and a dataset's
//! permissions. The route's [`crate::Access`] has already been checked;
//! what depends on the record (whose token it is) is checked here.

use std::time::Duration;

use neurocube_core::DatasetName;
use serde::Serialize;

use crate::Services;
use crate::auth::{AuthMode, NewToken, Permissions, TokenRecord, UserRecord};
use crate::context::{Principal, RequestContext};
use crate::error::{Result, ServiceError};

/// What `GET /v1/auth/whoami` answers.
#[derive(Clone, Debug, Serialize)]
pub struct WhoAmI {
    /// The user, or `None` without a (valid) token.
    pub user: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// A server admin.
    pub admin: bool,
    /// `open` or `tokens`.
    pub mode: AuthMode,
}

fn is_admin(ctx: &RequestContext) -> bool {
    match &ctx.principal {
        Principal::System => true,
        Principal::User(id) => id.admin,
        Principal::Anonymous => false,
    }
}

fn user_of(ctx: &RequestContext) -> Option<&str> {
    match &ctx.principal {
        Principal::User(id) => Some(id.user.as_str()),
        Principal::System | Principal::Anonymous => None,
    }
}

impl Services {
    /// Who the request acts for.
    #[must_use]
    pub fn whoami(&self, ctx: &RequestContext) -> WhoAmI {
        let (user, groups, admin) = match &ctx.principal {
            Principal::User(id) => (Some(id.user.clone()), id.groups.clone(), id.admin),
            Principal::System => (Some("system".into()), Vec::new(), true),
            Principal::Anonymous => (None, Vec::new(), false),
        };
        WhoAmI {
            user,
            groups,
            admin,
            mode: self.auth.mode(),
        }
    }

    /// Every user.
    pub async fn list_users(&self, _ctx: &RequestContext) -> Result<Vec<UserRecord>> {
        self.auth.users().await
    }

    /// Create or change a user.
    pub async fn put_user(
        &self,
        _ctx: &RequestContext,
        name: &str,
        groups: Vec<String>,
        admin: bool,
    ) -> Result<UserRecord> {
        self.auth.put_user(name, groups, admin).await
    }

    /// Delete a user and revoke its tokens.
    pub async fn delete_user(&self, _ctx: &RequestContext, name: &str) -> Result<()> {
        if self.auth.delete_user(name).await? {
            Ok(())
        } else {
            Err(ServiceError::UnknownUser {
                name: name.to_string(),
            })
        }
    }

    /// Tokens: a user's own; an admin's, anyone's (`user`) or all.
    pub async fn list_tokens(
        &self,
        ctx: &RequestContext,
        user: Option<&str>,
    ) -> Result<Vec<TokenRecord>> {
        let who = self.token_owner(ctx, user, "list the tokens of")?;
        self.auth.tokens(who.as_deref()).await
    }

    /// A new token for `user` (default: the caller). Users make their own;
    /// admins make anyone's. The secret is in the answer and nowhere else.
    pub async fn create_token(
        &self,
        ctx: &RequestContext,
        user: Option<&str>,
        description: &str,
        expires_in: Option<Duration>,
    ) -> Result<NewToken> {
        let asked = user.or(user_of(ctx));
        let who = self
            .token_owner(ctx, asked, "make tokens for")?
            .ok_or_else(|| ServiceError::field("user", "name the user the token is for"))?;
        self.auth.create_token(&who, description, expires_in).await
    }

    /// Revoke a token by id: one's own, or (admins) anyone's.
    pub async fn revoke_token(&self, ctx: &RequestContext, id: &str) -> Result<TokenRecord> {
        let unknown = || ServiceError::UnknownToken { id: id.to_string() };
        let t = self.auth.token(id).await?.ok_or_else(unknown)?;
        if self.auth.mode() == AuthMode::Tokens
            && !is_admin(ctx)
            && user_of(ctx) != Some(t.user.as_str())
        {
            // Someone else's token is as good as unknown.
            return Err(unknown());
        }
        self.auth.revoke_token(id).await?.ok_or_else(unknown)
    }

    /// Whose tokens a request may handle: `asked` if it is the caller (or
    /// the caller is an admin, or the server is open), the caller if none
    /// asked; `None` means all (admins listing).
    fn token_owner(
        &self,
        ctx: &RequestContext,
        asked: Option<&str>,
        action: &str,
    ) -> Result<Option<String>> {
        let open = self.auth.mode() == AuthMode::Open;
        match (asked, user_of(ctx)) {
            (Some(a), Some(me)) if a == me => Ok(Some(a.to_string())),
            (Some(a), _) if open || is_admin(ctx) => Ok(Some(a.to_string())),
            (Some(a), _) => Err(ServiceError::Forbidden {
                principal: ctx.principal.to_string(),
                action: format!("{action} user '{a}' (server admins only)"),
            }),
            (None, Some(me)) if !is_admin(ctx) => Ok(Some(me.to_string())),
            (None, _) => Ok(None),
        }
    }

    /// A dataset's permissions (none stored: private, server admins only).
    pub async fn permissions(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
    ) -> Result<Permissions> {
        self.catalog.dataset(ds).await?;
        Ok(self
            .auth
            .permissions(ds.as_str())
            .await?
            .map(|p| (*p).clone())
            .unwrap_or_default())
    }

    /// Replace a dataset's permissions.
    pub async fn set_permissions(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        p: Permissions,
    ) -> Result<Permissions> {
        self.catalog.dataset(ds).await?;
        self.auth.set_permissions(ds, p.clone()).await?;
        Ok(p)
    }
}

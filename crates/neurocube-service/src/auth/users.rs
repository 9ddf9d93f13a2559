//! Users and tokens, as stored in the meta table (see the module above).

use std::time::Duration;

use futures::TryStreamExt;
use neurocube_store::{Scan, SortRange, Table};

use super::{Auth, NewToken, TOKENS, TokenRecord, USERS, UserRecord, check_name, hash, now};
use crate::error::{Result, ServiceError};

impl Auth {
    // ---- users ----

    /// Every user.
    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        self.all(USERS, "user").await
    }

    /// One user.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.get(USERS, name, "user").await
    }

    /// Create or change a user (its groups and admin flag).
    pub async fn put_user(
        &self,
        name: &str,
        groups: Vec<String>,
        admin: bool,
    ) -> Result<UserRecord> {
        check_name("user", name)?;
        for (i, g) in groups.iter().enumerate() {
            check_name(&format!("groups[{i}]"), g)?;
        }
        let created = self.user(name).await?.map_or_else(now, |u| u.created);
        let u = UserRecord {
            name: name.to_string(),
            groups,
            admin,
            created,
        };
        self.put(USERS, name, &u).await?;
        self.tokens.invalidate_all();
        Ok(u)
    }

    /// Delete a user and revoke its tokens. Returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let existed = self.user(name).await?.is_some();
        for (h, t) in self.token_rows().await? {
            if t.user == name {
                self.delete(TOKENS, &h).await?;
            }
        }
        self.delete(USERS, name).await?;
        self.tokens.invalidate_all();
        Ok(existed)
    }

    // ---- tokens ----

    async fn token_rows(&self) -> Result<Vec<(String, TokenRecord)>> {
        Scan::partition(
            self.store.clone(),
            Table::Meta,
            TOKENS.to_vec(),
            SortRange::all(),
        )
        .rows()
        .map_err(ServiceError::from)
        .and_then(|(k, v)| async move {
            let h = String::from_utf8_lossy(&k.sort).into_owned();
            let t = serde_json::from_slice(&v)
                .map_err(|e| ServiceError::corrupt_json("token", &h, &e))?;
            Ok((h, t))
        })
        .try_collect()
        .await
    }

    /// Tokens (of one user, or all), without their secrets.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let mut v: Vec<TokenRecord> = self
            .token_rows()
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| user.is_none_or(|u| t.user == u))
            .collect();
        v.sort_by(|a, b| (&a.user, &a.created, &a.id).cmp(&(&b.user, &b.created, &b.id)));
        Ok(v)
    }

    /// Make a token for an existing user.
    pub async fn create_token(
        &self,
        user: &str,
        description: &str,
        expires_in: Option<Duration>,
    ) -> Result<NewToken> {
        if self.user(user).await?.is_none() {
            return Err(ServiceError::UnknownUser {
                name: user.to_string(),
            });
        }
        if description.len() > 256 {
            return Err(ServiceError::field("description", "at most 256 bytes"));
        }
        let a = uuid::Uuid::new_v4().simple().to_string();
        let b = uuid::Uuid::new_v4().simple().to_string();
        let token = format!("nct_{a}{b}");
        let h = hash(&token);
        let expires = expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| chrono::Utc::now().checked_add_signed(d))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let record = TokenRecord {
            id: h[..16].to_string(),
            user: user.to_string(),
            description: description.to_string(),
            created: now(),
            expires,
        };
        self.put(TOKENS, &h, &record).await?;
        self.tokens.invalidate(&h);
        Ok(NewToken { token, record })
    }

    /// A token's record by id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        Ok(self
            .token_rows()
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .find(|t| t.id == id))
    }

    /// Revoke a token by id; it stops working at once on this server.
    /// Returns the revoked record, if there was one.
    pub async fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let found = self
            .token_rows()
            .await?
            .into_iter()
            .find(|(_, t)| t.id == id);
        if let Some((h, t)) = found {
            self.delete(TOKENS, &h).await?;
            self.tokens.invalidate(&h);
            return Ok(Some(t));
        }
        Ok(None)
    }
}

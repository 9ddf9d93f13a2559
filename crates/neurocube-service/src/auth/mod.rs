//! Identity and access control: tokens (stored hashed), users and their
//! groups, each dataset's permissions, and the one policy check every
//! request passes ([`Auth::check`]).
//!
//! `auth.mode = "open"` (the default, and the demo's) allows everything, as
//! before; a valid token still names its user in records. `"tokens"`:
//! - a token arrives as `Authorization: Bearer`, a cookie or `?token=`
//!   (resolved by [`Auth::authenticate`]); a token that is unknown, revoked
//!   or expired is refused with 401 on every route;
//! - a dataset is public (anyone reads it) or private; users and groups hold
//!   the roles read < write < admin on it; a private dataset is invisible
//!   (404, as if it did not exist) to whoever cannot read it;
//! - server admins may do everything; any signed-in user may create
//!   datasets (becoming their admin) and list jobs.
//!
//! | meta partition | sort | value |
//! |---|---|---|
//! | `auth/users` | user name | [`UserRecord`] |
//! | `auth/tokens` | SHA-256 of the token (hex) | [`TokenRecord`] |
//! | `auth/acl` | dataset name | [`Permissions`] |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use neurocube_core::DatasetName;
use neurocube_store::{Key, Scan, SortRange, Store, Table};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::context::{Access, Principal, RequestContext};
use crate::error::{Result, ServiceError};

pub mod rate;
mod users;

const USERS: &[u8] = b"auth/users";
const TOKENS: &[u8] = b"auth/tokens";
const ACL: &[u8] = b"auth/acl";

/// Most grants one dataset may carry.
pub const MAX_GRANTS: usize = 1000;

/// Who must present a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everything is allowed to everyone (one machine, a demo, a trusted network).
    #[default]
    Open,
    /// Tokens, users, groups and per-dataset permissions.
    Tokens,
}

/// Who may read `/metrics` in token mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone (a Prometheus scraper without a token).
    #[default]
    Public,
    /// Any signed-in user.
    Authenticated,
    /// Server admins only.
    Admin,
}

/// Settings of access control.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Open or tokens.
    pub mode: AuthMode,
    /// Who may read the metrics.
    pub metrics: MetricsAccess,
    /// Requests per client and second (users by name, anonymous clients by address).
    pub rate: rate::RateConfig,
}

/// A role on a dataset; each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read data and metadata.
    Read,
    /// Also write data (cutouts, rows, downsampling, versions).
    Write,
    /// Also change metadata, channels, tables and permissions, and delete.
    Admin,
}

impl Role {
    fn verb(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write to",
            Role::Admin => "administer",
        }
    }

    fn gerund(self) -> &'static str {
        match self {
            Role::Read => "reading",
            Role::Write => "writing to",
            Role::Admin => "administering",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A role given to one user or one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The user (exactly one of `user` and `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The role.
    pub role: Role,
}

/// Who may do what with one dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Readable by anyone, even without a token.
    #[serde(default)]
    pub public: bool,
    /// Roles of users and groups.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl Permissions {
    /// Check every grant names one valid user or group.
    pub fn validate(&self) -> Result<()> {
        if self.grants.len() > MAX_GRANTS {
            return Err(ServiceError::field(
                "grants",
                format!("{} grants; at most {MAX_GRANTS}", self.grants.len()),
            ));
        }
        for (i, g) in self.grants.iter().enumerate() {
            match (&g.user, &g.group) {
                (Some(n), None) | (None, Some(n)) => check_name(&format!("grants[{i}]"), n)?,
                _ => {
                    return Err(ServiceError::field(
                        format!("grants[{i}]"),
                        format!("grants[{i}] must name exactly one of \"user\" and \"group\""),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The highest role `id` holds here, through its name or a group.
    #[must_use]
    pub fn role_of(&self, id: &Identity) -> Option<Role> {
        self.grants
            .iter()
            .filter(|g| {
                g.user.as_deref() == Some(id.user.as_str())
                    || g.group.as_ref().is_some_and(|gr| id.groups.contains(gr))
            })
            .map(|g| g.role)
            .max()
    }
}

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Name (letters, digits, `_ . @ -`).
    pub name: String,
    /// Groups it belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// A server admin: may do everything.
    #[serde(default)]
    pub admin: bool,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// A token as stored (never the token itself: its SHA-256 is the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (the first 16 hex digits of the hash), to list and revoke it by.
    pub id: String,
    /// Its user.
    pub user: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A signed-in user, as requests carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// A server admin.
    pub admin: bool,
}

/// A token just made: the secret is shown once, here, and never again.
#[derive(Clone, Debug, Serialize)]
pub struct NewToken {
    /// The secret to send as `Authorization: Bearer ...`.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub record: TokenRecord,
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::field(
            field,
            format!("{field}: '{name}' must be 1 to 64 letters, digits, '_', '.', '@' or '-'"),
        ))
    }
}

/// Check a user or group name.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    check_name(field, name)
}

fn short_cache<V: Clone + Send + Sync + 'static>() -> moka::sync::Cache<String, V> {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(5))
        .build()
}

fn hash(token: &str) -> String {
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Identity and access control over the store's meta table.
pub struct Auth {
    store: Arc<dyn Store>,
    config: AuthConfig,
    /// Token hash → its identity, or `None` for a token that is not valid.
    tokens: moka::sync::Cache<String, Option<Arc<Identity>>>,
    /// Dataset → its permissions (`None`: none stored).
    acl: moka::sync::Cache<String, Option<Arc<Permissions>>>,
    /// Requests per client and second.
    pub rate: rate::RateLimiter,
}

impl Auth {
    /// Access control over a store. Caches live 5 s, like the catalog's,
    /// so other server instances see a revocation within that time (this
    /// one at once).
    #[must_use]
    pub fn new(store: Arc<dyn Store>, config: AuthConfig) -> Self {
        Self {
            store,
            rate: rate::RateLimiter::new(config.rate),
            config,
            tokens: short_cache(),
            acl: short_cache(),
        }
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        partition: &[u8],
        sort: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        let key = Key::new(partition.to_vec(), sort.as_bytes().to_vec());
        let v = self.store.get_many(Table::Meta, &[key]).await?;
        match v.into_iter().next().flatten() {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ServiceError::corrupt_json(what, sort, &e)),
        }
    }

    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        partition: &[u8],
        what: &'static str,
    ) -> Result<Vec<T>> {
        Scan::partition(
            self.store.clone(),
            Table::Meta,
            partition.to_vec(),
            SortRange::all(),
        )
        .rows()
        .map_err(ServiceError::from)
        .and_then(|(k, v)| async move {
            serde_json::from_slice(&v)
                .map_err(|e| ServiceError::corrupt_json(what, String::from_utf8_lossy(&k.sort), &e))
        })
        .try_collect()
        .await
    }

    async fn put<T: Serialize>(&self, partition: &[u8], sort: &str, v: &T) -> Result<()> {
        let key = Key::new(partition.to_vec(), sort.as_bytes().to_vec());
        self.store
            .put_many(Table::Meta, vec![(key, json(v))])
            .await?;
        Ok(())
    }

    async fn delete(&self, partition: &[u8], sort: &str) -> Result<()> {
        let key = Key::new(partition.to_vec(), sort.as_bytes().to_vec());
        self.store.delete_many(Table::Meta, &[key]).await?;
        Ok(())
    }

    // ---- who is asking ----

    /// The principal a request's token names. Without a token: anonymous.
    /// In token mode a token that is not valid is refused (401); in open
    /// mode it is ignored.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal> {
        let Some(token) = token else {
            return Ok(Principal::Anonymous);
        };
        let h = hash(token);
        let id = match self.tokens.get(&h) {
            Some(hit) => hit,
            None => {
                let id = self.lookup(&h).await?;
                self.tokens.insert(h, id.clone());
                id
            }
        };
        match (id, self.config.mode) {
            (Some(id), _) => Ok(Principal::User(id)),
            (None, AuthMode::Open) => Ok(Principal::Anonymous),
            (None, AuthMode::Tokens) => Err(ServiceError::Unauthenticated {
                reason: "the token is not valid (unknown, revoked or expired); \
                         ask an admin for a new one (neurocube token create)"
                    .into(),
            }),
        }
    }

    async fn lookup(&self, hash: &str) -> Result<Option<Arc<Identity>>> {
        let Some(t) = self.get::<TokenRecord>(TOKENS, hash, "token").await? else {
            return Ok(None);
        };
        if let Some(exp) = &t.expires
            && chrono::DateTime::parse_from_rfc3339(exp).is_ok_and(|e| e <= chrono::Utc::now())
        {
            return Ok(None);
        }
        let Some(u) = self.get::<UserRecord>(USERS, &t.user, "user").await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Identity {
            user: u.name,
            groups: u.groups,
            admin: u.admin,
        })))
    }

    // ---- the policy ----

    /// A dataset's stored permissions (cached).
    pub async fn permissions(&self, ds: &str) -> Result<Option<Arc<Permissions>>> {
        if let Some(hit) = self.acl.get(ds) {
            return Ok(hit);
        }
        let p = self
            .get::<Permissions>(ACL, ds, "permissions")
            .await?
            .map(Arc::new);
        self.acl.insert(ds.to_string(), p.clone());
        Ok(p)
    }

    /// Whether `ctx` may read dataset `ds` (to filter lists).
    pub async fn can_read(&self, ctx: &RequestContext, ds: &str) -> Result<bool> {
        match DatasetName::parse(ds) {
            Ok(name) => match self.check(ctx, &Access::Read(name)).await {
                Ok(()) => Ok(true),
                Err(ServiceError::UnknownDataset { .. }) => Ok(false),
                Err(e) => Err(e),
            },
            Err(_) => Ok(false),
        }
    }

    /// Allow `ctx` to do `access`, or say why not: 401 without a needed
    /// token, 404 for a private dataset it cannot read, 403 for a role it
    /// lacks.
    pub async fn check(&self, ctx: &RequestContext, access: &Access) -> Result<()> {
        if self.config.mode == AuthMode::Open {
            return Ok(());
        }
        let id = match &ctx.principal {
            Principal::System => return Ok(()),
            Principal::User(id) if id.admin => return Ok(()),
            Principal::User(id) => Some(id.as_ref()),
            Principal::Anonymous => None,
        };
        let signed_in = |what: &str| match id {
            Some(_) => Ok(()),
            None => Err(needs_token(what)),
        };
        match access {
            Access::Public => Ok(()),
            Access::Metrics => match self.config.metrics {
                MetricsAccess::Public => Ok(()),
                MetricsAccess::Authenticated => signed_in("reading the metrics"),
                MetricsAccess::Admin => {
                    signed_in("reading the metrics")?;
                    Err(forbidden(
                        &ctx.principal,
                        "read the metrics (server admins only)",
                    ))
                }
            },
            Access::ServerRead | Access::ServerWrite => signed_in("this request"),
            Access::ServerAdmin => {
                signed_in("this request")?;
                Err(forbidden(&ctx.principal, "do this (server admins only)"))
            }
            Access::Read(ds) => self.check_dataset(ctx, id, ds, Role::Read).await,
            Access::Write(ds) => self.check_dataset(ctx, id, ds, Role::Write).await,
            Access::Admin(ds) => self.check_dataset(ctx, id, ds, Role::Admin).await,
        }
    }

    async fn check_dataset(
        &self,
        ctx: &RequestContext,
        id: Option<&Identity>,
        ds: &DatasetName,
        need: Role,
    ) -> Result<()> {
        let perms = self.permissions(ds.as_str()).await?;
        let role = match (&perms, id) {
            (Some(p), Some(id)) => p.role_of(id),
            _ => None,
        };
        let public = perms.as_ref().is_some_and(|p| p.public);
        if role.is_none() && !public {
            // Invisible: the same answer as for a dataset that does not exist.
            return Err(ServiceError::UnknownDataset {
                name: ds.to_string(),
            });
        }
        if role.is_some_and(|r| r >= need) || need == Role::Read {
            return Ok(());
        }
        match id {
            None => Err(needs_token(&format!("{} dataset '{ds}'", need.gerund()))),
            Some(_) => Err(forbidden(
                &ctx.principal,
                &format!(
                    "{} dataset '{ds}': that needs the {} role, which an admin of the dataset grants with PUT /v1/datasets/{ds}/permissions",
                    need.verb(),
                    need.name()
                ),
            )),
        }
    }

    // ---- permissions ----

    /// Replace a dataset's permissions.
    pub async fn set_permissions(&self, ds: &DatasetName, p: Permissions) -> Result<()> {
        p.validate()?;
        self.put(ACL, ds.as_str(), &p).await?;
        self.acl.invalidate(ds.as_str());
        Ok(())
    }

    /// A new dataset's permissions: private, its creator its admin (in
    /// token mode; nothing is stored for anonymous or system creators).
    pub async fn dataset_created(&self, ctx: &RequestContext, ds: &DatasetName) -> Result<()> {
        if let Principal::User(id) = &ctx.principal {
            let p = Permissions {
                public: false,
                grants: vec![Grant {
                    user: Some(id.user.clone()),
                    group: None,
                    role: Role::Admin,
                }],
            };
            self.set_permissions(ds, p).await?;
        }
        Ok(())
    }

    /// Forget a deleted dataset's permissions (a dataset created again
    /// under its name starts afresh).
    pub async fn dataset_deleted(&self, ds: &DatasetName) -> Result<()> {
        self.delete(ACL, ds.as_str()).await?;
        self.acl.invalidate(ds.as_str());
        Ok(())
    }
}

fn needs_token(what: &str) -> ServiceError {
    ServiceError::Unauthenticated {
        reason: format!(
            "{what} needs a token: send 'Authorization: Bearer <token>' (or the cookie \
             neurocube_token, or ?token=); an admin makes one with neurocube token create"
        ),
    }
}

fn forbidden(p: &Principal, action: &str) -> ServiceError {
    ServiceError::Forbidden {
        principal: p.to_string(),
        action: action.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
            admin: false,
        }
    }

    #[test]
    fn the_highest_role_through_name_or_group_wins() {
        let p = Permissions {
            public: false,
            grants: vec![
                Grant {
                    user: Some("ann".into()),
                    group: None,
                    role: Role::Read,
                },
                Grant {
                    user: None,
                    group: Some("lab".into()),
                    role: Role::Write,
                },
            ],
        };
        assert_eq!(p.role_of(&id("ann", &[])), Some(Role::Read));
        assert_eq!(p.role_of(&id("ann", &["lab"])), Some(Role::Write));
        assert_eq!(p.role_of(&id("bob", &["lab"])), Some(Role::Write));
        assert_eq!(p.role_of(&id("bob", &["other"])), None);
    }

    #[test]
    fn a_grant_names_one_user_or_one_group() {
        let both = Permissions {
            public: true,
            grants: vec![Grant {
                user: Some("a".into()),
                group: Some("b".into()),
                role: Role::Read,
            }],
        };
        let e = both.validate().unwrap_err().to_string();
        assert!(e.contains("grants[0]") && e.contains("exactly one"), "{e}");
        let bad = Permissions {
            public: true,
            grants: vec![Grant {
                user: Some("a b".into()),
                group: None,
                role: Role::Read,
            }],
        };
        assert!(bad.validate().unwrap_err().to_string().contains("'a b'"));
    }

    #[test]
    fn tokens_are_stored_by_hash() {
        let h = hash("nct_secret");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("secret"));
        assert_eq!(h, hash("nct_secret"));
    }
}

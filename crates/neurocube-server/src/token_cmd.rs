//! `neurocube token create|list|revoke`: tokens and users, written to the
//! store directly (so the first admin's token exists before any server
//! answers). The embedded store opens in one process at a time: stop the
//! server first, or use `POST /v1/auth/tokens` on a running one.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use neurocube_service::auth::{Auth, AuthConfig};

use crate::app::open_store;
use crate::config::Settings;

/// Arguments of `neurocube token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub cmd: TokenCmd,
    /// A settings file layered over config/default.toml.
    #[arg(long, env = "NEUROCUBE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Store URI: `embedded` or `cassandra://host1,host2/keyspace`.
    #[arg(long, global = true)]
    pub store: Option<String>,
}

/// `neurocube token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a token for a user (creating the user if new) and print it: it
    /// is shown this once and stored only as its hash.
    Create {
        /// The user.
        #[arg(long)]
        user: String,
        /// Make the user a server admin (may do everything).
        #[arg(long)]
        admin: bool,
        /// Add the user to this group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Stop the token working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (ids, users, descriptions; never the secrets).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (from `list`).
        id: String,
    },
}

/// Run `neurocube token`.
pub async fn run(a: TokenArgs) -> Result<(), String> {
    let mut s = Settings::load(a.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(d) = &a.data_dir {
        s.store.data_dir.clone_from(d);
    }
    if let Some(u) = &a.store {
        s.store.uri.clone_from(u);
    }
    let store = open_store(&s.store).await.map_err(|e| {
        format!(
            "{e} (a running server holds the embedded store: stop it, or use POST /v1/auth/tokens)"
        )
    })?;
    let auth = Auth::new(store.clone(), AuthConfig::default());
    let err = |e: neurocube_service::ServiceError| e.to_string();
    match a.cmd {
        TokenCmd::Create {
            user,
            admin,
            groups,
            description,
            expires_in_days,
        } => {
            let existing = auth.user(&user).await.map_err(err)?;
            let u = match existing {
                Some(u) if !admin && groups.is_empty() => u,
                Some(u) => {
                    let mut all = u.groups.clone();
                    all.extend(groups.into_iter().filter(|g| !u.groups.contains(g)));
                    auth.put_user(&user, all, u.admin || admin)
                        .await
                        .map_err(err)?
                }
                None => auth.put_user(&user, groups, admin).await.map_err(err)?,
            };
            let expires = expires_in_days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
            let t = auth
                .create_token(&user, &description, expires)
                .await
                .map_err(err)?;
            store.flush().await.map_err(|e| e.to_string())?;
            eprintln!(
                "token {} for user '{}'{}{}; it is shown this once, keep it secret:",
                t.record.id,
                u.name,
                if u.admin { " (server admin)" } else { "" },
                t.record
                    .expires
                    .as_ref()
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default()
            );
            println!("{}", t.token);
        }
        TokenCmd::List { user } => {
            let tokens = auth.tokens(user.as_deref()).await.map_err(err)?;
            println!(
                "{:<16}  {:<20}  {:<20}  {:<20}  description",
                "id", "user", "created", "expires"
            );
            for t in tokens {
                println!(
                    "{:<16}  {:<20}  {:<20}  {:<20}  {}",
                    t.id,
                    t.user,
                    t.created,
                    t.expires.as_deref().unwrap_or("never"),
                    t.description
                );
            }
        }
        TokenCmd::Revoke { id } => {
            let t = auth.revoke_token(&id).await.map_err(err)?;
            store.flush().await.map_err(|e| e.to_string())?;
            match t {
                Some(t) => println!("revoked token {} of user '{}'", t.id, t.user),
                None => {
                    return Err(format!(
                        "no token has id '{id}'; neurocube token list shows them"
                    ));
                }
            }
        }
    }
    Ok(())
}

//! Identity and permissions: `/v1/auth/...` (who am I, users, tokens) and
//! `/v1/datasets/{ds}/permissions`.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_core::DatasetName;
use neurocube_service::auth::Permissions;
use neurocube_service::{Access, RequestContext};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, dataset, json_body, query, segment};
use crate::error::ApiResult;
use crate::state::AppState;

/// Bodies here are small.
const LIMIT: u64 = 1 << 20;

/// `GET /v1/auth/whoami`
pub struct WhoAmI;

impl Endpoint for WhoAmI {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(WhoAmI)
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        Ok(HttpResponse::Ok().json(state.services.whoami(ctx)))
    }
}

/// `GET /v1/auth/users`
pub struct ListUsers;

impl Endpoint for ListUsers {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(ListUsers)
    }

    fn access(&self) -> Access {
        Access::ServerAdmin
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let users = state.services.list_users(ctx).await?;
        Ok(HttpResponse::Ok().json(json!({ "users": users })))
    }
}

/// Body of `PUT /v1/auth/users/{user}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// `PUT /v1/auth/users/{user}`: create or change a user.
pub struct PutUser(String);

impl Endpoint for PutUser {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(segment(req, "user")?.to_string()))
    }

    fn access(&self) -> Access {
        Access::ServerAdmin
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let b: UserBody = json_body(req, body, LIMIT, "user").await?;
        let u = state
            .services
            .put_user(ctx, &self.0, b.groups, b.admin)
            .await?;
        Ok(HttpResponse::Ok().json(u))
    }
}

/// `DELETE /v1/auth/users/{user}`: delete a user and revoke its tokens.
pub struct DeleteUser(String);

impl Endpoint for DeleteUser {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(segment(req, "user")?.to_string()))
    }

    fn access(&self) -> Access {
        Access::ServerAdmin
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        state.services.delete_user(ctx, &self.0).await?;
        Ok(HttpResponse::NoContent().finish())
    }
}

/// Query of `GET /v1/auth/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensQuery {
    user: Option<String>,
}

/// `GET /v1/auth/tokens[?user=]`
pub struct ListTokens(Option<String>);

impl Endpoint for ListTokens {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let q: TokensQuery = query(req)?;
        Ok(Self(q.user))
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let tokens = state.services.list_tokens(ctx, self.0.as_deref()).await?;
        Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
    }
}

/// Body of `POST /v1/auth/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    user: Option<String>,
    #[serde(default)]
    description: String,
    expires_in_days: Option<u32>,
}

/// `POST /v1/auth/tokens`: make a token (the secret is in this answer only).
pub struct CreateToken;

impl Endpoint for CreateToken {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(CreateToken)
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let b: TokenBody = json_body(req, body, LIMIT, "token").await?;
        let expires = b
            .expires_in_days
            .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400));
        let t = state
            .services
            .create_token(ctx, b.user.as_deref(), &b.description, expires)
            .await?;
        Ok(HttpResponse::Created().json(t))
    }
}

/// `DELETE /v1/auth/tokens/{id}`: revoke a token.
pub struct RevokeToken(String);

impl Endpoint for RevokeToken {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(segment(req, "id")?.to_string()))
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let t = state.services.revoke_token(ctx, &self.0).await?;
        Ok(HttpResponse::Ok().json(json!({ "revoked": t })))
    }
}

/// `GET /v1/datasets/{ds}/permissions`
pub struct GetPermissions(DatasetName);

impl Endpoint for GetPermissions {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::Admin(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let p = state.services.permissions(ctx, &self.0).await?;
        Ok(HttpResponse::Ok().json(p))
    }
}

/// `PUT /v1/datasets/{ds}/permissions`: replace them.
pub struct PutPermissions(DatasetName);

impl Endpoint for PutPermissions {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::Admin(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let p: Permissions = json_body(req, body, LIMIT, "permissions").await?;
        let p = state.services.set_permissions(ctx, &self.0, p).await?;
        Ok(HttpResponse::Ok().json(p))
    }
}

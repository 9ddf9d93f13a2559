//! Access control (issue 9) in `auth.mode = "tokens"`: every route of the
//! route table against every kind of caller, tokens by header, cookie and
//! query, public and private datasets, roles through users and groups,
//! revocation and expiry, rate limits and header limits.

use std::time::Duration;

use neurocube_service::auth::{Grant, Permissions, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, npy, pattern, spawn_with};

/// A token-mode server with a private dataset `priv` (channel `img`) and a
/// public one `pub`, both made by the server itself.
pub(crate) async fn app() -> TestApp {
    let app = spawn_with(|s| s.auth.mode = "tokens".into()).await;
    let root = user(&app, "root", &[], true).await;
    for ds in ["priv", "pub"] {
        let r = app
            .client
            .put(format!("{}/v1/datasets/{ds}", app.url))
            .bearer_auth(&root)
            .json(&json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8], "levels": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        let r = app
            .client
            .put(format!("{}/v1/datasets/{ds}/channels/img", app.url))
            .bearer_auth(&root)
            .json(&json!({"type": "image", "dtype": "uint8", "chunk_size": [32, 32, 4]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
    let r = app
        .client
        .put(format!("{}/v1/datasets/pub/permissions", app.url))
        .bearer_auth(&root)
        .json(&json!({"public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    app
}

/// A user with a fresh token.
pub(crate) async fn user(app: &TestApp, name: &str, groups: &[&str], admin: bool) -> String {
    let a = &app.services.auth;
    a.put_user(
        name,
        groups.iter().map(|g| (*g).to_string()).collect(),
        admin,
    )
    .await
    .unwrap();
    a.create_token(name, "test", None).await.unwrap().token
}

pub(crate) async fn grant(app: &TestApp, ds: &str, grants: Vec<Grant>, public: bool) {
    let name = neurocube_core::DatasetName::parse(ds).unwrap();
    app.services
        .auth
        .set_permissions(&name, Permissions { public, grants })
        .await
        .unwrap();
}

pub(crate) fn to_user(user: &str, role: Role) -> Grant {
    Grant {
        user: Some(user.into()),
        group: None,
        role,
    }
}

#[tokio::test]
async fn a_token_arrives_by_header_cookie_or_query() {
    let app = app().await;
    let t = user(&app, "ann", &[], false).await;
    grant(&app, "priv", vec![to_user("ann", Role::Read)], false).await;
    let url = format!("{}/v1/datasets/priv/channels", app.url);
    let ok = |r: reqwest::Response| async move {
        let s = r.status();
        assert_eq!(s, StatusCode::OK, "{}", r.text().await.unwrap());
    };
    ok(app.client.get(&url).bearer_auth(&t).send().await.unwrap()).await;
    for cookie in ["neurocube_token", "middle_auth_token"] {
        let r = app
            .client
            .get(&url)
            .header("Cookie", format!("other=1; {cookie}={t}"))
            .send()
            .await
            .unwrap();
        ok(r).await;
    }
    for param in ["token", "middle_auth_token"] {
        ok(app
            .get(&format!("/v1/datasets/priv/channels?{param}={t}"))
            .await)
        .await;
    }
    // The token parameter is not taken for one of the route's own.
    let r = app
        .get(&format!("/v1/jobs/nosuch?tasks=true&token={t}"))
        .await;
    assert_error(r, 404, "not_found", "job 'nosuch'").await;
    // Without it the dataset does not exist, as far as the client can tell.
    let hidden = app.get("/v1/datasets/priv/channels").await;
    let absent = app.get("/v1/datasets/nosuch/channels").await;
    assert_eq!(hidden.status(), 404);
    let (h, a): (Value, Value) = (hidden.json().await.unwrap(), absent.json().await.unwrap());
    assert_eq!(
        h["message"].as_str().unwrap().replace("priv", "X"),
        a["message"].as_str().unwrap().replace("nosuch", "X")
    );
    // A scheme other than Bearer is refused by name.
    let r = app
        .client
        .get(&url)
        .header("Authorization", "Basic YW5uOnB3")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthenticated", "Bearer").await;
    let me: Value = app
        .client
        .get(format!("{}/v1/auth/whoami", app.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"user": "ann", "groups": [], "admin": false, "mode": "tokens"})
    );
}

#[tokio::test]
async fn public_datasets_read_without_a_token_and_write_with_a_role() {
    let app = app().await;
    let reader = user(&app, "reader", &[], false).await;
    let writer = user(&app, "writer", &["lab"], false).await;
    grant(
        &app,
        "pub",
        vec![
            to_user("reader", Role::Read),
            Grant {
                user: None,
                group: Some("lab".into()),
                role: Role::Write,
            },
        ],
        true,
    )
    .await;
    let cutout = "/pub/img/npy/0/0,8/0,8/0,2/";
    let data = pattern(128, 7);
    let body = npy("|u1", [2, 8, 8], &data);
    // Anonymous: reads, cannot write.
    let r = app.put(cutout, body.clone()).await;
    assert_error(
        r,
        401,
        "unauthenticated",
        "writing to dataset 'pub' needs a token",
    )
    .await;
    // A reader: 403 naming the role it lacks.
    let r = app
        .client
        .put(format!("{}{cutout}", app.url))
        .bearer_auth(&reader)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden", "needs the write role").await;
    // The lab group writes; the anonymous reader gets exactly the voxels.
    let r = app
        .client
        .put(format!("{}{cutout}", app.url))
        .bearer_auth(&writer)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let got = app.get(cutout).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());
    // The dataset list shows anonymous clients the public dataset only.
    let names = |v: Value| -> Vec<String> {
        v["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    let anon: Value = app.get("/v1/datasets").await.json().await.unwrap();
    assert_eq!(names(anon), ["pub"]);
    grant(&app, "priv", vec![to_user("reader", Role::Read)], false).await;
    let mine: Value = app
        .client
        .get(format!("{}/v1/datasets", app.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(mine), ["priv", "pub"]);
}

#[tokio::test]
async fn a_creator_administers_its_dataset_and_a_deleted_one_starts_afresh() {
    let app = app().await;
    let ann = user(&app, "ann", &[], false).await;
    let bob = user(&app, "bob", &[], false).await;
    let put = |t: &str, path: &str, v: Value| {
        app.client
            .put(format!("{}{path}", app.url))
            .bearer_auth(t)
            .json(&v)
            .send()
    };
    let ds = json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8], "levels": 1});
    assert_eq!(
        put(&ann, "/v1/datasets/mine", ds.clone())
            .await
            .unwrap()
            .status(),
        201
    );
    let p: Value = app
        .client
        .get(format!("{}/v1/datasets/mine/permissions", app.url))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        p,
        json!({"public": false, "grants": [{"user": "ann", "role": "admin"}]})
    );
    // Bob cannot see it; Ann grants him read, then he can.
    let get = |t: &str| {
        app.client
            .get(format!("{}/v1/datasets/mine", app.url))
            .bearer_auth(t)
            .send()
    };
    assert_eq!(get(&bob).await.unwrap().status(), 404);
    let r = put(
        &ann,
        "/v1/datasets/mine/permissions",
        json!({"grants": [{"user": "ann", "role": "admin"}, {"user": "bob", "role": "read"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&bob).await.unwrap().status(), 200);
    // Bad grants are refused by name and change nothing.
    let r = put(
        &ann,
        "/v1/datasets/mine/permissions",
        json!({"grants": [{"user": "bob", "group": "lab", "role": "read"}]}),
    )
    .await
    .unwrap();
    assert_error(r, 400, "invalid_request", "exactly one of").await;
    let r = put(
        &ann,
        "/v1/datasets/mine/permissions",
        json!({"grants": [{"user": "bob", "role": "owner"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(get(&bob).await.unwrap().status(), 200);
    // Deleted and made again by Bob: Ann's grant is gone.
    let r = app
        .client
        .delete(format!("{}/v1/datasets/mine", app.url))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(
        put(&bob, "/v1/datasets/mine", ds).await.unwrap().status(),
        201
    );
    assert_eq!(get(&ann).await.unwrap().status(), 404);
    assert_eq!(get(&bob).await.unwrap().status(), 200);
}

#[tokio::test]
async fn revoked_and_expired_tokens_stop_working_and_secrets_are_not_stored() {
    let app = app().await;
    let ann = user(&app, "ann", &[], false).await;
    let bob = user(&app, "bob", &[], false).await;
    // Ann makes a second token for herself.
    let r = app
        .client
        .post(format!("{}/v1/auth/tokens", app.url))
        .bearer_auth(&ann)
        .json(&json!({"description": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let second = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["user"], "ann");
    // ... but not one for Bob.
    let r = app
        .client
        .post(format!("{}/v1/auth/tokens", app.url))
        .bearer_auth(&ann)
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden", "server admins only").await;
    let whoami = |t: String| {
        let c = app.client.clone();
        let url = format!("{}/v1/auth/whoami", app.url);
        async move {
            c.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(whoami(second.clone()).await, 200);
    // Listing shows ids, never secrets.
    let list: Value = app
        .client
        .get(format!("{}/v1/auth/tokens", app.url))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = list.to_string();
    assert_eq!(list["tokens"].as_array().unwrap().len(), 2, "{text}");
    assert!(!text.contains(&second) && !text.contains(&ann) && !text.contains("bob"));
    // Bob cannot revoke Ann's token: to him it does not exist.
    let r = app
        .client
        .delete(format!("{}/v1/auth/tokens/{id}", app.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found", &id).await;
    let r = app
        .client
        .delete(format!("{}/v1/auth/tokens/{id}", app.url))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(whoami(second.clone()).await, 401);
    assert_eq!(whoami(ann.clone()).await, 200);
    // An expired token is refused.
    let short = app
        .services
        .auth
        .create_token("ann", "short", Some(Duration::from_secs(1)))
        .await
        .unwrap()
        .token;
    assert_eq!(whoami(short.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(6100)).await; // past expiry and the 5 s cache
    assert_eq!(whoami(short).await, 401);
    // Deleting a user revokes its tokens.
    let root = user(&app, "root2", &[], true).await;
    let r = app
        .client
        .delete(format!("{}/v1/auth/users/bob", app.url))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(whoami(bob.clone()).await, 401);
    // No secret is in the store, in any key or value.
    let mut token = None;
    loop {
        let page = app
            .services
            .store
            .scan_all(neurocube_store::Table::Meta, token, 1000)
            .await
            .unwrap();
        for (k, v) in &page.rows {
            for secret in [&ann, &root, &second] {
                let s = secret.as_bytes();
                for hay in [&k.partition[..], &k.sort[..], &v[..]] {
                    assert!(!hay.windows(s.len()).any(|w| w == s), "a secret is stored");
                }
            }
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_with(|s| {
        s.auth.mode = "tokens".into();
        s.auth.rate_limit_per_second = 1.0;
        s.auth.rate_limit_burst = 3;
    })
    .await;
    let ann = user(&app, "ann", &[], false).await;
    let bob = user(&app, "bob", &[], false).await;
    let who = |t: &str| {
        app.client
            .get(format!("{}/v1/auth/whoami", app.url))
            .bearer_auth(t)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(who(&ann).await.unwrap().status(), 200);
    }
    let r = who(&ann).await.unwrap();
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "Retry-After {after}");
    assert_error(r, 429, "rate_limited", "at most 1 per second").await;
    // Another user has a bucket of its own; anonymous clients share their address's.
    assert_eq!(who(&bob).await.unwrap().status(), 200);
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    let r = app.get("/health").await;
    assert_error(r, 429, "rate_limited", "address 127.0.0.1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(who(&ann).await.unwrap().status(), 200);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_server_keeps_serving() {
    let app = app().await;
    let r = app
        .client
        .get(format!("{}/v1/datasets", app.url))
        .header("X-Padding", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_error(r, 431, "headers_too_large", "limits.max_header_bytes").await;
    // Far past what the HTTP parser buffers: refused before any route.
    let r = app
        .client
        .get(format!("{}/v1/datasets", app.url))
        .header("X-Padding", "a".repeat(200_000))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // The server closed that connection; a new one is served.
    let fresh = reqwest::Client::new();
    let r = fresh
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_open_server_ignores_credentials_meant_for_something_else() {
    // A proxy in front of an open server may pass its Basic credentials on.
    let app = crate::helpers::spawn_app().await;
    let r = app
        .client
        .get(format!("{}/v1/datasets", app.url))
        .header("Authorization", "Basic YW5uOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = app
        .client
        .get(format!("{}/v1/auth/whoami", app.url))
        .bearer_auth("nct_not_a_real_token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"user": null, "groups": [], "admin": false, "mode": "open"})
    );
}

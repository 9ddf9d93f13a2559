//! Access control (issue 9): every route of the route table against every
//! kind of caller, in `auth.mode = "tokens"`. A route without an access
//! rule here fails the test.

use neurocube_service::auth::{Grant, Role};
use serde_json::Value;

use crate::auth::{app, grant, to_user, user};

/// What a route needs, by (method, path) of the route table. A route
/// missing here fails the matrix test: every new route needs a rule.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Public,
    SignedIn,
    ServerAdmin,
    Read,
    Write,
    Admin,
}

fn rule(method: &str, path: &str) -> Option<Rule> {
    use Rule::*;
    let data = path.ends_with("/{ds}/{ch}/{fmt}/{level}/{a}/{b}/{c}");
    Some(match (method, path) {
        ("GET", "/health" | "/metrics" | "/v1" | "/v1/schemas" | "/v1/schemas/{name}") => Public,
        ("GET", "/viewer" | "/viewer/{file}" | "/v1/auth/whoami" | "/v1/datasets") => Public,
        ("GET", "/v1/workers" | "/v1/jobs" | "/v1/jobs/{id}" | "/v1/auth/tokens") => SignedIn,
        ("POST", "/v1/auth/tokens" | "/v1/jobs") => SignedIn,
        ("DELETE", "/v1/auth/tokens/{id}" | "/v1/jobs/{id}") => SignedIn,
        ("POST", "/v1/jobs/{id}/tasks/{name}/done" | "/v1/jobs/{id}/fail") => SignedIn,
        ("PUT", "/v1/datasets/{ds}") => SignedIn,
        ("GET", "/v1/auth/users") => ServerAdmin,
        ("PUT" | "DELETE", "/v1/auth/users/{user}") => ServerAdmin,
        ("GET", "/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}") => Read,
        ("GET", "/catmaid/{ds}/{ch}/{plane}/{z}/{tile}") => Read,
        ("GET", p) if p.starts_with("/precomputed/{ds}/") => Read,
        ("GET", "/v1/collection") => Public,
        ("GET", p) if p.starts_with("/v1/collection/{coll}") || p == "/v1/coord/{frame}" => Read,
        ("GET", "/v1/cutout/{coll}/{exp}/{ch}/{res}/{x}/{y}/{z}") => Read,
        ("POST", "/v1/cutout/{coll}/{exp}/{ch}/{res}/{x}/{y}/{z}") => Write,
        ("OPTIONS", p) if p.starts_with("/precomputed/") => Public,
        // CAVE's protocol: discovery is public, a datastack's data is read.
        (
            "GET",
            "/info/version"
            | "/info/api/v2/datastacks"
            | "/schema/versions"
            | "/schema/api/v2/types_all"
            | "/schema/api/v2/type"
            | "/schema/api/v2/type/{name}"
            | "/materialize/api/versions"
            | "/materialize/version"
            | "/segmentation/api/versions",
        ) => Public,
        ("GET", "/info/api/v2/datastack/full/{ds}") => Read,
        ("GET" | "POST", p)
            if p.starts_with("/materialize/api/v")
                || p.starts_with("/segmentation/api/v1/table/{ds}/") =>
        {
            Read
        }
        ("GET", p)
            if data || p.starts_with("/v1/datasets/{ds}") && !p.ends_with("/permissions") =>
        {
            Read
        }
        ("POST", "/v1/datasets/{ds}/tables/{table}/query" | "/v1/datasets/{ds}/synapse_query") => {
            Read
        }
        ("POST", "/v1/datasets/{ds}/graph" | "/v1/datasets/{ds}/graph/stats") => Read,
        ("PUT" | "POST", _) if data => Write,
        ("POST" | "PUT" | "DELETE", "/v1/datasets/{ds}/tables/{table}/rows") => Write,
        ("POST", "/v1/datasets/{ds}/tables/{table}/objects") => Write,
        ("PUT" | "DELETE", p) if p.starts_with("/v1/datasets/{ds}/tables/{table}/objects/") => {
            Write
        }
        ("POST", "/v1/datasets/{ds}/versions" | "/v1/datasets/{ds}/channels/{ch}/downsample") => {
            Write
        }
        ("DELETE" | "PATCH", "/v1/datasets/{ds}") => Admin,
        (
            "PUT" | "DELETE",
            "/v1/datasets/{ds}/channels/{ch}" | "/v1/datasets/{ds}/tables/{table}",
        ) => Admin,
        ("GET" | "PUT", "/v1/datasets/{ds}/permissions") => Admin,
        _ => return None,
    })
}

/// A concrete URL for a route pattern, aimed at dataset `priv`. Deletes
/// name things that do not exist (or a dataset that still has channels),
/// so an allowed request changes nothing the matrix depends on.
fn concrete(method: &str, pattern: &str) -> String {
    let deleting = method == "DELETE";
    let mut url = pattern.to_string();
    if pattern.starts_with("/v1/cutout/") {
        url = url.replace("{x}/{y}/{z}", "0:8/0:8/0:1");
    }
    if pattern.contains("/objects/{id}") {
        url = url.replace("{id}", "7");
    }
    for (hole, value) in [
        ("{ds}", "priv"),
        ("{ch}", if deleting { "gone" } else { "img" }),
        ("{table}", "gone"),
        ("{v}", "1"),
        ("{name}", "synapse"),
        ("{id}", "nosuchthing"),
        ("{user}", "nobody"),
        ("{file}", "viewer.js"),
        ("{plane}", "xy"),
        ("{size}", "256"),
        ("{level}", "0"),
        ("{slice}", "0"),
        ("{row}", "0"),
        ("{col}", "0.png"),
        ("{z}", "0"),
        ("{tile}", "0_0_0.png"),
        ("{scale}", "4_4_40"),
        ("{index}", "by_id"),
        ("{key}", "1"),
        ("{coll}", "priv"),
        ("{frame}", "priv"),
        ("{exp}", "default"),
        ("{res}", "0"),
        ("{chunk}", "0-8_0-8_0-1"),
        ("{fmt}", "npy"),
        ("{a}", "0,8"),
        ("{b}", "0,8"),
        ("{c}", "0,1"),
    ] {
        url = url.replace(hole, value);
    }
    url
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Nobody,
    BadToken,
    Reader,
    Writer,
    DatasetAdmin,
    ServerAdmin,
}

/// The status a caller must get, or `None` for "allowed" (any answer but
/// 401, 403 and the invisible dataset's 404).
fn expected(rule: Rule, caller: Caller) -> Option<(u16, &'static str)> {
    use Caller as C;
    const UNAUTH: Option<(u16, &str)> = Some((401, "unauthenticated"));
    const FORBIDDEN: Option<(u16, &str)> = Some((403, "forbidden"));
    const HIDDEN: Option<(u16, &str)> = Some((404, "unknown_dataset"));
    match (rule, caller) {
        (_, C::BadToken) => UNAUTH,
        (_, C::ServerAdmin) | (Rule::Public, _) => None,
        (Rule::SignedIn, C::Nobody) | (Rule::ServerAdmin, C::Nobody) => UNAUTH,
        (Rule::SignedIn, _) => None,
        (Rule::ServerAdmin, _) => FORBIDDEN,
        (Rule::Read | Rule::Write | Rule::Admin, C::Nobody) => HIDDEN,
        (Rule::Read, _) => None,
        (Rule::Write, C::Reader) => FORBIDDEN,
        (Rule::Write, _) => None,
        (Rule::Admin, C::DatasetAdmin) => None,
        (Rule::Admin, _) => FORBIDDEN,
    }
}

#[tokio::test]
async fn every_route_against_every_caller() {
    let app = app().await;
    let reader = user(&app, "reader", &[], false).await;
    let writer = user(&app, "writer", &["lab"], false).await;
    let dsadmin = user(&app, "dsadmin", &[], false).await;
    let sysadmin = user(&app, "sysadmin", &[], true).await;
    grant(
        &app,
        "priv",
        vec![
            to_user("reader", Role::Read),
            Grant {
                user: None,
                group: Some("lab".into()),
                role: Role::Write,
            },
            to_user("dsadmin", Role::Admin),
        ],
        false,
    )
    .await;
    let callers = [
        (Caller::Nobody, None),
        (Caller::BadToken, Some("nct_0123456789abcdef".to_string())),
        (Caller::Reader, Some(reader)),
        (Caller::Writer, Some(writer)),
        (Caller::DatasetAdmin, Some(dsadmin)),
        (Caller::ServerAdmin, Some(sysadmin)),
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for route in neurocube_server::routes::table() {
        let method = route.method.as_str();
        let Some(rule) = rule(method, &route.path) else {
            missing.push(format!("{method} {}", route.path));
            continue;
        };
        let url = format!("{}{}", app.url, concrete(method, &route.path));
        for (caller, token) in &callers {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = app.client.request(m, &url);
            if method != "GET" {
                // A body every endpoint refuses or ignores: nothing changes.
                req = req.body(r#"{"bogus": 1}"#);
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            let what = format!(
                "{method} {} as {caller:?} ({rule:?}): {status} {body}",
                route.path
            );
            match expected(rule, *caller) {
                Some((want, want_code)) => {
                    assert_eq!(status, want, "{what}");
                    assert_eq!(code.as_deref(), Some(want_code), "{what}");
                }
                None => {
                    assert!(status != 401 && status != 403, "{what}");
                    assert!(
                        !(status == 404 && code.as_deref() == Some("unknown_dataset")),
                        "{what}"
                    );
                    assert!(status < 500, "{what}");
                }
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "routes without an access rule: {missing:?}"
    );
    assert!(checked > 300, "only {checked} requests");
    // Nothing the matrix did changed the datasets.
    let r = app
        .services
        .catalog
        .dataset(&neurocube_core::DatasetName::parse("priv").unwrap())
        .await;
    assert!(r.is_ok());
}

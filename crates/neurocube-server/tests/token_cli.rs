//! `neurocube token` as an operator runs it: the first admin's token made
//! on the store before the server starts, listed without secrets, revoked;
//! then a server in token mode that honours them, and `neurocube ingest` /
//! `neurocube jobs` sending a token to it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BIN, serve};

fn token(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("NEUROCUBE__STORE__DURABILITY", "flush")
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .output()
        .expect("run neurocube token")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

async fn whoami(url: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/auth/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_on_the_command_line_work_until_revoked() {
    let data = tempfile::tempdir().unwrap();
    let root = ok(&token(
        data.path(),
        &["create", "--user", "root", "--admin"],
    ))
    .trim()
    .to_string();
    assert!(root.starts_with("nct_") && root.len() > 60, "{root}");
    let ann_out = token(
        data.path(),
        &[
            "create",
            "--user",
            "ann",
            "--group",
            "lab",
            "--description",
            "laptop",
        ],
    );
    let ann = ok(&ann_out).trim().to_string();
    let note = String::from_utf8_lossy(&ann_out.stderr).to_string();
    assert!(
        note.contains("user 'ann'") && note.contains("shown this once"),
        "{note}"
    );
    let old = ok(&token(data.path(), &["create", "--user", "ann"]))
        .trim()
        .to_string();
    // The list names users and descriptions, never a secret.
    let list = ok(&token(data.path(), &["list"]));
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("root") && list.contains("laptop"), "{list}");
    for secret in [&root, &ann, &old] {
        assert!(!list.contains(secret.as_str()));
    }
    // Revoke ann's second token by its id (the last one listed for ann
    // without a description).
    let id = list
        .lines()
        .find(|l| l.contains(" ann ") && !l.contains("laptop"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let revoked = ok(&token(data.path(), &["revoke", &id]));
    assert!(
        revoked.contains(&id) && revoked.contains("ann"),
        "{revoked}"
    );
    let again = token(data.path(), &["revoke", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no token has id"));

    let server = serve(data.path(), &[("NEUROCUBE__AUTH__MODE", "tokens")]);
    let (s, me) = whoami(&server.url, &root).await;
    assert_eq!(s, 200);
    assert_eq!(me["user"], "root");
    assert_eq!(me["admin"], true);
    let (s, me) = whoami(&server.url, &ann).await;
    assert_eq!(s, 200);
    assert_eq!(me["groups"], serde_json::json!(["lab"]));
    assert_eq!(whoami(&server.url, &old).await.0, 401);

    // Ingest into the token-mode server with ann's token: she creates the
    // dataset, so she administers it, and nobody else sees it.
    let src = tempfile::tempdir().unwrap();
    let px: Vec<u8> = (0..64u32 * 32 * 2).map(|i| (i * 7 % 251) as u8).collect();
    for z in 0..2usize {
        image::GrayImage::from_raw(64, 32, px[z * 2048..(z + 1) * 2048].to_vec())
            .unwrap()
            .save(src.path().join(format!("{z}.png")))
            .unwrap();
    }
    let ingest = |tok: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("ingest")
            .arg(src.path())
            .args([
                "--url",
                &server.url,
                "--dataset",
                "d",
                "--channel",
                "c",
                "--create",
            ])
            .env_remove("NEUROCUBE_TOKEN");
        if let Some(t) = tok {
            c.env("NEUROCUBE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let refused = ingest(None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs a token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(&ingest(Some(&ann)));
    let c = reqwest::Client::new();
    let cut = format!("{}/d/c/raw/0/0,64/0,32/0,2/", server.url);
    let got = c.get(&cut).bearer_auth(&ann).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap()[..] == px[..]);
    assert_eq!(c.get(&cut).send().await.unwrap().status(), 404);
    let jobs = Command::new(BIN)
        .args(["jobs", "--url", &server.url, "--token", &ann])
        .output()
        .unwrap();
    let listing = ok(&jobs);
    assert!(
        listing.contains("ingest") && listing.contains("d/c"),
        "{listing}"
    );
}

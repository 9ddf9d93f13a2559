//! `neurocube jobs`: list, show and cancel jobs of a running server.

use super::sink::{Sink, check, http_err};
use super::{JobsArgs, JobsCmd};
use neurocube_service::jobs::JobState;
use serde_json::Value;

fn fmt_secs(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) => format!("{:.0}m", s / 60.0),
    }
}

/// Run `neurocube jobs`.
pub async fn jobs(a: JobsArgs) -> Result<(), String> {
    let sink = Sink::Http {
        client: super::http_client(a.token.as_deref())?,
        base: a.url.trim_end_matches('/').to_string(),
    };
    match a.cmd.unwrap_or(JobsCmd::List) {
        JobsCmd::List => {
            let v = sink.get_json("/v1/jobs").await?.unwrap_or_default();
            println!(
                "{:<24} {:<10} {:<9} {:>22} {:>12} {:>6}  what",
                "id", "kind", "state", "done/total", "rate/s", "eta"
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                let what = format!(
                    "{}/{}",
                    j["params"]["dataset"].as_str().unwrap_or("-"),
                    j["params"]["channel"].as_str().unwrap_or("-")
                );
                println!(
                    "{:<24} {:<10} {:<9} {:>22} {:>12} {:>6}  {what}{}",
                    j["id"].as_str().unwrap_or_default(),
                    j["kind"].as_str().unwrap_or_default(),
                    j["state"].as_str().unwrap_or_default(),
                    format!(
                        "{}/{} {}",
                        j["done"],
                        j["total"],
                        j["unit"].as_str().unwrap_or_default()
                    ),
                    j["rate"].as_f64().map_or("-".into(), |r| format!("{r:.1}")),
                    fmt_secs(j["eta_seconds"].as_f64()),
                    j["errors"]
                        .as_array()
                        .and_then(|e| e.last())
                        .and_then(Value::as_str)
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        JobsCmd::Show { id } => {
            let v = sink
                .get_json(&format!("/v1/jobs/{id}?tasks=true"))
                .await?
                .ok_or_else(|| format!("job '{id}' does not exist"))?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        JobsCmd::Cancel { id } => {
            let Sink::Http { client, base } = &sink else {
                unreachable!()
            };
            let r = client
                .delete(format!("{base}/v1/jobs/{id}"))
                .send()
                .await
                .map_err(http_err)?;
            let v = check(r).await?;
            println!("job {id} is {}", v["state"].as_str().unwrap_or_default());
        }
        JobsCmd::Downsample { dataset, channel } => {
            let r = sink.downsample(&dataset, &channel).await?;
            println!(
                "job {} {:?}: {}/{} {}",
                r.id, r.state, r.done, r.total, r.unit
            );
            if r.state != JobState::Done {
                return Err(format!("job {} ended {:?}: {:?}", r.id, r.state, r.errors));
            }
        }
    }
    Ok(())
}

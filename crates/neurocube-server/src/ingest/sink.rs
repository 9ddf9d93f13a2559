//! Sinks: writing voxels and job records into a local store or to a
//! running server over HTTP.

use std::sync::Arc;
use std::time::Duration;

use super::IngestArgs;
use super::source::Stack;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use neurocube_core::Box3;
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling, default_chunk};
use neurocube_core::{ChannelName, DatasetName};
use neurocube_service::Services;
use neurocube_service::jobs::{JobRecord, TaskSpec};
use serde_json::{Value, json};

/// Where the voxels go: a local store or a server.
pub(super) enum Sink {
    Local(Arc<Services>),
    Http {
        client: reqwest::Client,
        base: String,
    },
}

pub(super) fn http_err(e: reqwest::Error) -> String {
    format!("request failed: {e}")
}

pub(super) async fn check(r: reqwest::Response) -> Result<Value, String> {
    let status = r.status();
    let body = r.text().await.map_err(http_err)?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!(
            "server answered {status}: {}",
            v["message"].as_str().unwrap_or(&body)
        ))
    }
}

impl Sink {
    pub(super) async fn get_json(&self, path: &str) -> Result<Option<Value>, String> {
        let Sink::Http { client, base } = self else {
            return Ok(None);
        };
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(http_err)?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(r).await.map(Some)
    }

    pub(super) async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let Sink::Http { client, base } = self else {
            return Err("not a server".into());
        };
        let r = client
            .request(method, format!("{base}{path}"))
            .json(body)
            .send()
            .await
            .map_err(http_err)?;
        check(r).await
    }

    /// The dataset and channel, created with --create if missing.
    pub(super) async fn ensure(
        &self,
        a: &IngestArgs,
        st: &Stack,
    ) -> Result<(Dataset, Channel), String> {
        let (ds, ch) = (&a.dataset, &a.channel);
        let existing_ds: Option<Dataset> = match self {
            Sink::Local(s) => s.catalog.dataset(ds).await.ok().map(|d| (*d).clone()),
            Sink::Http { .. } => self
                .get_json(&format!("/v1/datasets/{ds}"))
                .await?
                .map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("level_info");
                    }
                    serde_json::from_value(v).map_err(|e| format!("dataset {ds}: {e}"))
                })
                .transpose()?,
        };
        let d = match existing_ds {
            Some(d) => d,
            None if a.create => {
                let vs: Vec<f64> = a
                    .voxel_size
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        format!("--voxel-size '{}' must look like 4,4,40", a.voxel_size)
                    })?;
                let [vx, vy, vz] = vs[..] else {
                    return Err(format!(
                        "--voxel-size '{}' must look like 4,4,40",
                        a.voxel_size
                    ));
                };
                let chunk = default_chunk();
                let levels = a.levels.unwrap_or_else(|| {
                    let mut l = 1u8;
                    let mut s = st.shape[0].max(st.shape[1]);
                    while s > chunk[0] && l < 8 {
                        s = s.div_ceil(2);
                        l += 1;
                    }
                    l
                });
                let d = Dataset {
                    name: ds.to_string(),
                    voxel_size: [vx, vy, vz],
                    extent: [st.shape[0], st.shape[1], a.z.unwrap_or(0) + st.shape[2]],
                    offset: [0, 0, 0],
                    levels,
                    scaling: Scaling::Anisotropic,
                    description: format!("ingested from {}", a.source.display()),
                    synapse_table: None,
                    soma_table: None,
                };
                match self {
                    Sink::Local(s) => {
                        s.catalog
                            .create_dataset(d.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Sink::Http { .. } => {
                        self.send_json(
                            reqwest::Method::PUT,
                            &format!("/v1/datasets/{ds}"),
                            &serde_json::to_value(&d).unwrap_or_default(),
                        )
                        .await?;
                    }
                }
                d
            }
            None => {
                return Err(format!(
                    "dataset '{ds}' does not exist; create it first or pass --create"
                ));
            }
        };
        let existing_ch: Option<Channel> = match self {
            Sink::Local(s) => s
                .catalog
                .channel(ds, ch)
                .await
                .ok()
                .map(|c| c.channel.meta.clone()),
            Sink::Http { .. } => self
                .get_json(&format!("/v1/datasets/{ds}/channels/{ch}"))
                .await?
                .map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("level_status");
                        o.remove("dataset");
                    }
                    serde_json::from_value(v).map_err(|e| format!("channel {ds}/{ch}: {e}"))
                })
                .transpose()?,
        };
        let c = match existing_ch {
            Some(c) => c,
            None if a.create => {
                let kind = match a.kind.as_str() {
                    "image" => ChannelType::Image,
                    "segmentation" => ChannelType::Segmentation,
                    k => return Err(format!("--kind '{k}' must be image or segmentation")),
                };
                let c = Channel {
                    name: ch.to_string(),
                    kind,
                    dtype: st.dtype,
                    chunk_size: default_chunk(),
                    compression: Compression::BloscLz4,
                    description: String::new(),
                };
                match self {
                    Sink::Local(s) => {
                        s.catalog
                            .create_channel(ds, c.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Sink::Http { .. } => {
                        self.send_json(
                            reqwest::Method::PUT,
                            &format!("/v1/datasets/{ds}/channels/{ch}"),
                            &serde_json::to_value(&c).unwrap_or_default(),
                        )
                        .await?;
                    }
                }
                c
            }
            None => {
                return Err(format!(
                    "channel '{ch}' does not exist in dataset '{ds}'; create it first or pass --create"
                ));
            }
        };
        if c.dtype != st.dtype {
            return Err(format!(
                "{} holds {} voxels but channel {ds}/{ch} is {}",
                a.source.display(),
                st.dtype,
                c.dtype
            ));
        }
        Ok((d, c))
    }

    /// The ingest job of this source (existing: resumed) and its finished slabs.
    pub(super) async fn job(
        &self,
        key: &str,
        params: Value,
        tasks: Vec<TaskSpec>,
    ) -> Result<(JobRecord, Vec<String>), String> {
        match self {
            Sink::Local(s) => {
                let (j, _) = s
                    .jobs
                    .create_external(key, "ingest", params, "bytes", tasks)
                    .await
                    .map_err(|e| e.to_string())?;
                let done = s
                    .jobs
                    .tasks(&j.id, Some(0))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|(_, t)| t.state == neurocube_service::jobs::TaskState::Done)
                    .map(|(_, t)| t.name)
                    .collect();
                Ok((j, done))
            }
            Sink::Http { .. } => {
                let body = json!({
                    "kind": "ingest",
                    "key": key,
                    "params": params,
                    "unit": "bytes",
                    "tasks": tasks.iter().map(|t| json!({"name": t.name, "units": t.units})).collect::<Vec<_>>(),
                });
                let v = self
                    .send_json(reqwest::Method::POST, "/v1/jobs", &body)
                    .await?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let full = self
                    .get_json(&format!("/v1/jobs/{id}?tasks=true"))
                    .await?
                    .ok_or_else(|| format!("job {id} vanished"))?;
                let done = full["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["state"] == "done")
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect();
                let rec: JobRecord =
                    serde_json::from_value(v).map_err(|e| format!("job {id}: {e}"))?;
                Ok((rec, done))
            }
        }
    }

    pub(super) async fn write(
        &self,
        ds: &DatasetName,
        ch: &ChannelName,
        b: Box3,
        data: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Sink::Local(s) => {
                let t = s
                    .volumes
                    .target(ds, ch, 0, b)
                    .await
                    .map_err(|e| e.to_string())?;
                s.volumes
                    .write(t, Bytes::from(data))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Sink::Http { client, base } => {
                let url = format!(
                    "{base}/{ds}/{ch}/raw/0/{},{}/{},{}/{},{}/",
                    b.start[0], b.end[0], b.start[1], b.end[1], b.start[2], b.end[2]
                );
                let r = client.put(url).body(data).send().await.map_err(http_err)?;
                check(r).await.map(|_| ())
            }
        }
    }

    pub(super) async fn task_done(&self, id: &str, name: &str) -> Result<(), String> {
        match self {
            Sink::Local(s) => s
                .jobs
                .complete_task(id, name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Sink::Http { .. } => self
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/tasks/{name}/done"),
                    &json!({}),
                )
                .await
                .map(|_| ()),
        }
    }

    pub(super) async fn fail(&self, id: &str, error: &str) {
        let r = match self {
            Sink::Local(s) => s
                .jobs
                .fail(id, error.to_string())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Sink::Http { .. } => self
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/fail"),
                    &json!({"error": error}),
                )
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            eprintln!("neurocube: could not record the failure in job {id}: {e}");
        }
    }

    /// Start downsampling and follow it to the end with a progress bar.
    pub(super) async fn downsample(
        &self,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<JobRecord, String> {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "downsample {msg} [{bar:30}] {pos}/{len} chunks {per_sec} ETA {eta}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        bar.set_message(format!("{ds}/{ch}"));
        let show = |r: &JobRecord| {
            bar.set_length(r.total);
            bar.set_position(r.done);
        };
        let rec = match self {
            Sink::Local(s) => {
                let (j, _) = s
                    .pyramid
                    .start_downsample(ds, ch)
                    .await
                    .map_err(|e| e.to_string())?;
                s.jobs
                    .run_to_end(&j.id, show)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Sink::Http { .. } => {
                let v = self
                    .send_json(
                        reqwest::Method::POST,
                        &format!("/v1/datasets/{ds}/channels/{ch}/downsample"),
                        &json!({}),
                    )
                    .await?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                loop {
                    let v = self
                        .get_json(&format!("/v1/jobs/{id}"))
                        .await?
                        .ok_or_else(|| format!("job {id} vanished"))?;
                    let r: JobRecord =
                        serde_json::from_value(v).map_err(|e| format!("job {id}: {e}"))?;
                    show(&r);
                    if r.state.is_final() {
                        break r;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        bar.finish();
        Ok(rec)
    }
}

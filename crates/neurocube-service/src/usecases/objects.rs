//! Use cases of annotation objects and their voxels, and the ids in a box.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use neurocube_core::{Box3, DType, DatasetName, TableName};

use super::{BODY_SLACK, VolumeBox};
use crate::Services;
use crate::annotations::UploadFormat;
use crate::body::{self, BodyLimit};
use crate::context::RequestContext;
use crate::encoding::{self, Encoded, Encoding};
use crate::error::{Result, ServiceError};
use crate::objects::{self, Conflict, LabelWrite, ObjectVoxels};
use crate::volume::CutoutStream;

/// How an object's voxels are sent.
#[derive(Clone, Debug)]
pub enum VoxelsBody {
    /// `{"voxels": [[x, y, z], ...]}` (or the bare list).
    List,
    /// A dense cutout of the box in a wire encoding: voxels holding the
    /// object's id are its, 0 are not.
    Mask(Encoding, Box3),
}

/// An object as `GET .../objects/{id}` shows it.
#[derive(Clone, Debug)]
pub struct ObjectView {
    /// Its row (JSON, as queries return it).
    pub row: serde_json::Value,
    /// Its voxels and bounding box.
    pub voxels: ObjectVoxels,
}

impl Services {
    fn upload_limit(&self) -> BodyLimit {
        BodyLimit {
            bytes: self.config.max_upload_bytes,
            source: "server setting annotations.max_upload_bytes".into(),
            advice: "split the objects over several requests",
            idle: self.config.body_idle_timeout,
        }
    }

    /// Create objects (their rows and voxels) from JSON or NDJSON, all
    /// checked before anything is written; returns their ids.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_objects<S, E>(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        format: UploadFormat,
        conflict: Conflict,
        declared: Option<u64>,
        body: S,
    ) -> Result<Vec<u64>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.upload_limit();
        body::check_declared(declared, &limit)?;
        let _permit = self
            .admission
            .admit(declared.unwrap_or(limit.bytes).saturating_mul(3))?;
        let bytes = body::read(declared, body, &limit).await?;
        let objects = if bytes.len() < 1 << 16 {
            objects::parse_objects(format, &bytes)?
        } else {
            tokio::task::spawn_blocking(move || objects::parse_objects(format, &bytes)).await??
        };
        self.objects.create(ds, table, objects, conflict).await
    }

    /// Label voxels of an object: a voxel list, or a dense mask of a box.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_object_voxels<S, E>(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        id: u64,
        how: VoxelsBody,
        conflict: Conflict,
        declared: Option<u64>,
        body: S,
    ) -> Result<LabelWrite>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let voxels = match how {
            VoxelsBody::List => {
                let limit = self.upload_limit();
                body::check_declared(declared, &limit)?;
                let _permit = self
                    .admission
                    .admit(declared.unwrap_or(limit.bytes).saturating_mul(3))?;
                let bytes = body::read(declared, body, &limit).await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| ServiceError::InvalidBody {
                        format: "json",
                        reason: format!("invalid JSON: {e}"),
                    })?;
                let list = match v {
                    serde_json::Value::Object(mut o) => {
                        o.remove("voxels")
                            .ok_or_else(|| ServiceError::InvalidBody {
                                format: "json",
                                reason: "send {\"voxels\": [[x, y, z], ...]}".into(),
                            })?
                    }
                    other => other,
                };
                objects::voxel_list(&list).map_err(|reason| ServiceError::InvalidBody {
                    format: "json",
                    reason,
                })?
            }
            VoxelsBody::Mask(enc, bbox) => {
                let t = self.objects.mask_target(ds, table, bbox).await?;
                let len = t.bytes();
                let limit = BodyLimit {
                    bytes: len + BODY_SLACK,
                    source: format!(
                        "box {bbox} holds {len} bytes of {}, plus at most {BODY_SLACK} bytes of npy header or Blosc overhead",
                        t.dtype()
                    ),
                    advice: "send a mask that matches the box",
                    idle: self.config.body_idle_timeout,
                };
                body::check_declared(declared, &limit)?;
                let _permit = self.admission.admit(len.saturating_mul(2))?;
                let bytes = body::read(declared, body, &limit).await?;
                let dtype = t.dtype();
                let data = encoding::decode(enc, bytes, &t).await?;
                tokio::task::spawn_blocking(move || objects::mask_voxels(&bbox, dtype, &data, id))
                    .await??
            }
        };
        self.objects
            .put_voxels(ds, table, id, voxels, conflict)
            .await
    }

    /// An object: its row, voxels and bounding box.
    pub async fn object(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        id: u64,
    ) -> Result<ObjectView> {
        let row = self.objects.row_json(ds, table, id).await?;
        let voxels = self.objects.voxels(ds, table, id).await?;
        Ok(ObjectView { row, voxels })
    }

    /// An object's voxels and bounding box.
    pub async fn object_voxels(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        id: u64,
    ) -> Result<ObjectVoxels> {
        self.objects.voxels(ds, table, id).await
    }

    /// An object's labels as a cutout (its bounding box unless `bbox`),
    /// other labels masked to 0, encoded.
    pub async fn object_cutout(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        id: u64,
        bbox: Option<Box3>,
        enc: Encoding,
    ) -> Result<(Box3, DType, Encoded)> {
        let (b, dtype, data) = self.objects.cutout(ds, table, id, bbox).await?;
        let stream = CutoutStream {
            dtype,
            bbox: b,
            len: data.len() as u64,
            body: futures::stream::once(async move { Ok(Bytes::from(data)) }).boxed(),
        };
        Ok((b, dtype, encoding::encode(enc, stream).await?))
    }

    /// Delete an object: its voxels are cleared, its row deleted. Returns
    /// the voxels cleared.
    pub async fn delete_object(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        table: &TableName,
        id: u64,
    ) -> Result<u64> {
        self.objects.delete(ds, table, id).await
    }

    /// The labels present in a box (0 left out), ascending.
    pub async fn ids_in_box(&self, ctx: &RequestContext, b: &VolumeBox) -> Result<Vec<u64>> {
        let t = self
            .volumes
            .target(&b.dataset, &b.channel, b.level, b.bbox)
            .await?;
        let dtype = t.dtype();
        if !matches!(dtype, DType::Uint32 | DType::Uint64) {
            return Err(ServiceError::field(
                "channel",
                format!(
                    "channel '{}' holds {dtype} voxels; ids are read from uint32 or uint64 label channels",
                    b.channel
                ),
            ));
        }
        // Slab by slab, as a cutout streams: memory holds a few slabs and
        // the set of labels met.
        let _permit = self
            .admission
            .admit(t.bytes().min(super::SLABS_HELD * t.slab_bytes()))?;
        let deadline = ctx.deadline().zip(ctx.timeout);
        let mut body = self.volumes.read(t, deadline).body;
        let mut seen = std::collections::HashSet::<u64>::new();
        while let Some(slab) = body.next().await {
            let slab = slab?;
            seen = tokio::task::spawn_blocking(move || {
                let elem = dtype.size();
                let mut last = 0;
                for v in slab.chunks_exact(elem) {
                    let l = neurocube_core::labels::label_of(v);
                    // Labels come in runs: skip the set for a repeat.
                    if l != 0 && l != last {
                        seen.insert(l);
                        last = l;
                    }
                }
                seen
            })
            .await?;
        }
        let mut ids: Vec<u64> = seen.into_iter().collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

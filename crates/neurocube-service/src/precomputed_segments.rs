//! Neuroglancer's `segment_properties` for a segmentation channel: the
//! labels it holds, so a viewer can list and search them, with names,
//! descriptions and tags for labels that are annotation objects.
//!
//! The list is the union of two sources:
//! - the labels present at level 0, read as `ids` reads a box (slab by
//!   slab), when the whole level fits in one cutout (`limits.max_cutout_bytes`);
//! - the live objects of every object table (`ramon_*`) bound to the
//!   channel: label `"{kind} {id}"`, the author as description, the kind
//!   and the table as tags.
//!
//! A channel with neither (larger than a cutout, no object table) has no
//! segment properties: its `info` does not name them and asking for them
//! answers 413 with what to do instead.

use std::collections::BTreeMap;

use neurocube_core::annotation::{Filters, Schema, Value};
use neurocube_core::meta::ChannelType;
use neurocube_core::{ChannelName, DType, DatasetName};
use serde_json::{Value as J, json};

use crate::Services;
use crate::annotations::ResolvedTable;
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};
use crate::usecases::VolumeBox;

/// What is known of one label.
#[derive(Default)]
struct Segment {
    label: String,
    description: String,
    tags: Vec<usize>,
}

impl Services {
    /// The object tables bound to a channel.
    async fn object_tables(
        &self,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<Vec<ResolvedTable>> {
        let mut out = Vec::new();
        for rec in self.annotations.tables(ds).await? {
            if Schema::is_object_schema(&rec.spec.schema)
                && rec.spec.segmentation.as_ref() == Some(ch)
            {
                out.push(self.annotations.table(ds, &rec.name).await?);
            }
        }
        Ok(out)
    }

    /// The level-0 box of a channel, or why it does not fit in one cutout.
    async fn listable_box(
        &self,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<std::result::Result<VolumeBox, ServiceError>> {
        let rc = self.catalog.channel(ds, ch).await?;
        let l = rc.dataset.level(0);
        let bbox =
            neurocube_core::Box3::new(l.offset, [0, 1, 2].map(|i| l.offset[i] + l.extent[i]))?;
        match self.volumes.target(ds, ch, 0, bbox).await {
            Ok(_) => Ok(Ok(VolumeBox {
                dataset: ds.clone(),
                channel: ch.clone(),
                level: 0,
                bbox,
            })),
            Err(ServiceError::TooLarge {
                bytes,
                limit,
                limit_source,
                ..
            }) => Ok(Err(ServiceError::TooLarge {
                what: "read of the whole of level 0 that segment properties need",
                bytes,
                limit,
                limit_source,
                advice: "bind an object table to the channel (its objects are listed), or read the labels of a box with GET /{ds}/{ch}/ids/{level}/{x0,x1}/{y0,y1}/{z0,z1}/",
            })),
            Err(e) => Err(e),
        }
    }

    /// Whether `info` should name segment properties for a channel.
    pub(crate) async fn has_segment_properties(
        &self,
        ds: &DatasetName,
        ch: &ChannelName,
        kind: ChannelType,
        dtype: DType,
    ) -> Result<bool> {
        if kind != ChannelType::Segmentation || !matches!(dtype, DType::Uint32 | DType::Uint64) {
            return Ok(false);
        }
        Ok(self.listable_box(ds, ch).await?.is_ok()
            || !self.object_tables(ds, ch).await?.is_empty())
    }

    /// `segment_properties/info` of a segmentation channel, inline:
    /// ids (decimal strings, ascending), and the `label`, `description`
    /// and `tags` properties.
    pub async fn segment_properties(
        &self,
        ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<J> {
        let rc = self.catalog.channel(ds, ch).await?;
        let (kind, dtype) = (rc.channel.meta.kind, rc.channel.meta.dtype);
        if kind != ChannelType::Segmentation || !matches!(dtype, DType::Uint32 | DType::Uint64) {
            return Err(ServiceError::field(
                "channel",
                format!(
                    "segment properties list the labels of a uint32 or uint64 segmentation channel; '{ch}' is a {dtype} {} channel",
                    format!("{kind:?}").to_lowercase()
                ),
            ));
        }
        let mut segments: BTreeMap<u64, Segment> = BTreeMap::new();
        let tables = self.object_tables(ds, ch).await?;
        match self.listable_box(ds, ch).await? {
            Ok(b) => {
                for id in self.ids_in_box(ctx, &b).await? {
                    segments.entry(id).or_default();
                }
            }
            Err(too_large) if tables.is_empty() => return Err(too_large),
            Err(_) => {}
        }
        let mut tag_names: Vec<String> = Vec::new();
        let mut tag = |name: &str| {
            tag_names.iter().position(|t| t == name).unwrap_or_else(|| {
                tag_names.push(name.to_string());
                tag_names.len() - 1
            })
        };
        for t in tables {
            let kind = t
                .record
                .spec
                .schema
                .trim_start_matches("ramon_")
                .to_string();
            let author = t.schema.column("author");
            let (k, tt) = (tag(&kind), tag(t.name().as_str()));
            for r in self.live_rows(&t).await? {
                let s = segments.entry(r.id).or_default();
                s.label = format!("{kind} {}", r.id);
                if let Some(Value::Str(a)) = author.map(|c| &r.values[c]) {
                    s.description.clone_from(a);
                }
                // A table named after its kind is one tag.
                s.tags = if k == tt { vec![k] } else { vec![k, tt] };
            }
        }
        let ids: Vec<String> = segments.keys().map(u64::to_string).collect();
        let labels: Vec<&str> = segments.values().map(|s| s.label.as_str()).collect();
        let descriptions: Vec<&str> = segments.values().map(|s| s.description.as_str()).collect();
        let tags: Vec<&[usize]> = segments.values().map(|s| s.tags.as_slice()).collect();
        Ok(json!({
            "@type": "neuroglancer_segment_properties",
            "inline": {
                "ids": ids,
                "properties": [
                    {"id": "label", "type": "label", "values": labels},
                    {"id": "description", "type": "description", "values": descriptions},
                    {"id": "tags", "type": "tags", "tags": tag_names, "values": tags},
                ],
            },
        }))
    }

    /// Every row of `t` valid now.
    async fn live_rows(&self, t: &ResolvedTable) -> Result<Vec<neurocube_core::annotation::Row>> {
        let now = J::from(crate::jobs::now_ms() as f64 / 1000.0);
        self.rows_at(t, Filters::default(), Some(&now)).await
    }
}

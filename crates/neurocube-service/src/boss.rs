//! BOSS (BossDB) resources over neurocube's catalog, as `intern`'s
//! `BossRemote` reads them: a collection is a dataset, with one experiment,
//! `default`, whose coordinate frame (named like the dataset) is the
//! dataset's extent and voxel size; a channel is a channel (segmentation
//! channels are BOSS `annotation` channels). Cutouts are the dataset's
//! cutouts, as Blosc.

use neurocube_core::meta::{ChannelType, Scaling};
use neurocube_core::{ChannelName, DatasetName};
use serde_json::{Value, json};

use crate::Services;
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};

/// The one experiment of every collection.
pub const EXPERIMENT: &str = "default";

/// Check an experiment name.
pub fn check_experiment(collection: &DatasetName, name: &str) -> Result<()> {
    if name == EXPERIMENT {
        Ok(())
    } else {
        Err(ServiceError::UnknownExperiment {
            collection: collection.to_string(),
            name: name.to_string(),
        })
    }
}

impl Services {
    /// The collections (datasets) the caller may read.
    pub async fn boss_collections(&self, ctx: &RequestContext) -> Result<Value> {
        let names: Vec<String> = self
            .list_datasets(ctx)
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        Ok(json!({ "collections": names }))
    }

    /// A collection.
    pub async fn boss_collection(&self, _ctx: &RequestContext, ds: &DatasetName) -> Result<Value> {
        let d = self.catalog.dataset(ds).await?;
        Ok(json!({
            "name": d.name, "description": d.description, "creator": "neurocube",
            "experiments": [EXPERIMENT],
        }))
    }

    /// A collection's experiment.
    pub async fn boss_experiment(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        exp: &str,
    ) -> Result<Value> {
        check_experiment(ds, exp)?;
        let d = self.catalog.dataset(ds).await?;
        let channels: Vec<String> = self
            .catalog
            .channel_records(ds)
            .await?
            .into_iter()
            .map(|c| c.meta.name)
            .collect();
        Ok(json!({
            "name": EXPERIMENT, "description": d.description, "creator": "neurocube",
            "collection": d.name, "coord_frame": d.name,
            "num_hierarchy_levels": d.levels,
            "hierarchy_method": match d.scaling {
                Scaling::Anisotropic => "anisotropic",
                Scaling::Isotropic => "isotropic",
            },
            "num_time_samples": 1, "time_step": 0, "time_step_unit": "seconds",
            "channels": channels,
        }))
    }

    /// The coordinate frame of a dataset (named like it).
    pub async fn boss_coord_frame(&self, _ctx: &RequestContext, ds: &DatasetName) -> Result<Value> {
        let d = self.catalog.dataset(ds).await?;
        let (o, e, v) = (d.offset, d.extent, d.voxel_size);
        Ok(json!({
            "name": d.name, "description": d.description,
            "x_start": o[0], "x_stop": o[0] + e[0],
            "y_start": o[1], "y_stop": o[1] + e[1],
            "z_start": o[2], "z_stop": o[2] + e[2],
            "x_voxel_size": v[0], "y_voxel_size": v[1], "z_voxel_size": v[2],
            "voxel_unit": "nanometers",
        }))
    }

    /// A channel.
    pub async fn boss_channel(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        exp: &str,
        ch: &ChannelName,
    ) -> Result<Value> {
        check_experiment(ds, exp)?;
        let rc = self.catalog.channel(ds, ch).await?;
        let c = &rc.channel.meta;
        Ok(json!({
            "name": c.name, "description": c.description, "creator": "neurocube",
            "experiment": EXPERIMENT, "collection": ds.as_str(),
            "default_time_sample": 0, "base_resolution": 0,
            "type": match c.kind {
                ChannelType::Image => "image",
                ChannelType::Segmentation => "annotation",
            },
            "datatype": c.dtype.name(),
            "sources": [], "related": [],
            "downsample_status": "DOWNSAMPLED",
        }))
    }
}

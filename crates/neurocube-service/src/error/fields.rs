//! The structured facts of each error, for the JSON body.

use serde_json::{Map, Value, json};

use super::{ServiceError, box_json};

impl ServiceError {
    /// The structured facts of the error, for the JSON body beside `code`
    /// and `message`.
    #[must_use]
    pub fn fields(&self) -> Map<String, Value> {
        let v = match self {
            ServiceError::UnknownDataset { name } => json!({ "dataset": name }),
            ServiceError::UnknownChannel { dataset, name } => {
                json!({ "dataset": dataset, "channel": name })
            }
            ServiceError::UnknownLevel {
                dataset,
                level,
                last,
            } => json!({ "dataset": dataset, "level": level, "levels": u16::from(*last) + 1 }),
            ServiceError::UnknownJob { id } => json!({ "job": id }),
            ServiceError::UnknownUser { name } => json!({ "user": name }),
            ServiceError::UnknownExperiment { collection, name } => {
                json!({ "collection": collection, "experiment": name })
            }
            ServiceError::UnknownScale { key, keys } => json!({ "scale": key, "scales": keys }),
            ServiceError::UnknownToken { id } => json!({ "token_id": id }),
            ServiceError::RateLimited {
                per_second,
                burst,
                retry_after,
                ..
            } => json!({
                "per_second": per_second, "burst": burst,
                "retry_after": retry_after.as_secs().max(1),
            }),
            ServiceError::HeadersTooLarge { bytes, limit } => {
                json!({ "bytes": bytes, "limit": limit })
            }
            ServiceError::UnknownTask { job, task } => json!({ "job": job, "task": task }),
            ServiceError::UnknownTable { dataset, name }
            | ServiceError::TableExists { dataset, name } => {
                json!({ "dataset": dataset, "table": name })
            }
            ServiceError::UnknownRow { table, id } => json!({ "table": table, "id": id }),
            ServiceError::UnknownVersion { dataset, version }
            | ServiceError::VersionExpired { dataset, version } => {
                json!({ "dataset": dataset, "version": version })
            }
            ServiceError::TableNotInVersion {
                dataset,
                table,
                version,
            }
            | ServiceError::TableReplaced {
                dataset,
                table,
                version,
            } => json!({ "dataset": dataset, "table": table, "version": version }),
            ServiceError::VersionNotReady {
                dataset,
                version,
                status,
                job,
            } => json!({ "dataset": dataset, "version": version, "status": status, "job": job }),
            ServiceError::InvalidRow { row, column, .. } => {
                json!({ "row": row, "column": column })
            }
            ServiceError::TableReferenced {
                dataset,
                name,
                referrers,
            } => json!({ "dataset": dataset, "table": name, "referrers": referrers }),
            ServiceError::LabelConflict {
                id,
                other,
                voxel,
                count,
            } => json!({ "id": id, "other": other, "voxel": voxel, "count": count }),
            ServiceError::RowNotValid {
                table,
                id,
                superceded_id,
            } => json!({ "table": table, "id": id, "superceded_id": superceded_id }),
            ServiceError::SliceOutsideLevel {
                dataset,
                level,
                axis,
                slice,
                start,
                end,
            } => json!({
                "dataset": dataset, "level": level, "axis": axis, "slice": slice,
                "range": [start, end],
            }),
            ServiceError::TileOutsideLevel {
                dataset,
                level,
                plane,
                size,
                row,
                col,
                rows,
                cols,
            } => json!({
                "dataset": dataset, "level": level, "plane": plane, "size": size,
                "row": row, "col": col, "rows": rows, "cols": cols,
            }),
            ServiceError::BoxOutsideLevel {
                dataset,
                level,
                bbox,
                bounds,
            } => json!({
                "dataset": dataset, "level": level, "box": box_json(bbox), "bounds": box_json(bounds),
            }),
            ServiceError::InvalidBox { .. } => json!({}),
            ServiceError::InvalidField { field, .. } => json!({ "field": field }),
            ServiceError::InvalidBody { format, .. } => json!({ "format": format }),
            ServiceError::DatasetExists { name } => json!({ "dataset": name }),
            ServiceError::ChannelExists { dataset, name } => {
                json!({ "dataset": dataset, "channel": name })
            }
            ServiceError::DatasetNotEmpty { name, channels } => {
                json!({ "dataset": name, "channels": channels })
            }
            ServiceError::JobEnded { id, state } => json!({ "job": id, "state": state }),
            ServiceError::ChannelReplaced {
                dataset,
                channel,
                job,
            } => json!({ "dataset": dataset, "channel": channel, "job": job }),
            ServiceError::TooLarge {
                what, bytes, limit, ..
            } => json!({ "what": what, "bytes": bytes, "limit": limit }),
            ServiceError::Overloaded {
                resource,
                limit,
                setting,
                retry_after,
            } => json!({
                "resource": resource, "limit": limit, "setting": setting,
                "retry_after": retry_after.as_secs().max(1),
            }),
            ServiceError::Contended { what, attempts } => {
                json!({ "what": what, "attempts": attempts })
            }
            ServiceError::DeadlineExceeded { after } => {
                json!({ "deadline_seconds": after.as_secs() })
            }
            ServiceError::BodyStalled { idle, received } => {
                json!({ "idle_seconds": idle.as_secs_f64(), "received_bytes": received })
            }
            ServiceError::Corrupt { what, key, .. } => json!({ "what": what, "key": key }),
            ServiceError::Forbidden { action, .. } => json!({ "action": action }),
            ServiceError::Store(e) => json!({ "backend": e.backend() }),
            ServiceError::ShuttingDown
            | ServiceError::Unauthenticated { .. }
            | ServiceError::Internal { .. } => json!({}),
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

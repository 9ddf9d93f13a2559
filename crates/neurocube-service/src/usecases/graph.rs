//! The graph use cases: a synapse table's connectivity graph, and its
//! statistics.

use neurocube_core::DatasetName;

use crate::Services;
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};
use crate::graph::{GraphFormat, GraphOutput, GraphRequest, Stats};

impl Services {
    /// The graph a request selects, in `format` (`None`: the request's
    /// `format`, else JSON).
    pub async fn graph(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        req: GraphRequest,
        accept: Option<GraphFormat>,
    ) -> Result<GraphOutput> {
        let format = match req.format.as_deref() {
            Some(f) => GraphFormat::parse(f).ok_or_else(|| {
                ServiceError::field(
                    "format",
                    format!(
                        "unknown graph format '{f}'; use one of {}",
                        GraphFormat::NAMES
                    ),
                )
            })?,
            None => accept.unwrap_or(GraphFormat::Json),
        };
        // Refuse a PNG-only parameter problem before any work.
        if req.order_by.is_some() && format != GraphFormat::Png {
            return Err(ServiceError::field(
                "order_by",
                "order_by orders the rows and columns of format=png only",
            ));
        }
        // An id list already over the PNG's node limit is refused before any
        // work (other selections are counted once built).
        let limit = self.annotations.max_graph_png_nodes();
        if format == GraphFormat::Png
            && let Some(n) = req.ids.as_ref().map(Vec::len).filter(|n| *n > limit)
        {
            return Err(ServiceError::field(
                "format",
                format!(
                    "the connectivity PNG draws at most {limit} nodes (server setting annotations.max_graph_png_nodes) and {n} ids were given; select fewer nodes or ask for format=npz"
                ),
            ));
        }
        let g = self.annotations.graph(ds, &req).await?;
        crate::graph::encode(
            g,
            format,
            req.order_by.as_deref(),
            self.annotations.max_graph_png_nodes(),
        )
    }

    /// Node and edge counts, degree distributions, reciprocity and synapses
    /// per edge of the graph a request selects.
    pub async fn graph_stats(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        mut req: GraphRequest,
    ) -> Result<Stats> {
        if req.format.is_some() || req.order_by.is_some() {
            return Err(ServiceError::field(
                "format",
                "graph statistics are JSON; format and order_by belong to GET .../graph",
            ));
        }
        // The numbers need no node attributes.
        req.node_tables = Some(Vec::new());
        let g = self.annotations.graph(ds, &req).await?;
        Ok(crate::graph::stats(&g))
    }
}

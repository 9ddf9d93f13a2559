//! Fuzz targets for the parsers a request reaches before any store call
//! (issue 9): the OCP URL grammar and its ranges, npy and Blosc bodies,
//! annotation uploads in JSON, NDJSON, CSV and Arrow, CAVE filters, and
//! graph requests. Inputs are arbitrary bytes and valid inputs with bytes
//! changed; every one must give `Ok` or an error, never a panic.
//! `PROPTEST_CASES` sets the cases (the test command: the default 256 per
//! target; `scripts/fuzz.sh`: many more).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use bytes::Bytes;
use neurocube_core::annotation::{Filter, Filters, Schema};
use neurocube_core::blosc::{self, Blosc};
use neurocube_core::{DType, npy};
use neurocube_service::annotations::{UploadFormat, upload};
use neurocube_service::graph::GraphRequest;
use proptest::prelude::*;

/// A valid input with a few bytes changed, cut, or extended.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        0usize..3,
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(flips, how, tail)| {
            let mut b = valid.clone();
            for (i, v) in flips {
                if !b.is_empty() {
                    let i = i.index(b.len());
                    b[i] = v;
                }
            }
            match how {
                1 => b.truncate(b.len() / 2),
                2 => b.extend(tail),
                _ => {}
            }
            b
        })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,21},[0-9]{0,21}",
        "[0-9]{0,21}",
        "-?[0-9]{1,5}(,-?[0-9]{1,5})?",
        "[a-z,. %]{0,8}",
        Just("18446744073709551615,18446744073709551615".to_string()),
    ]
}

fn upload_samples() -> Vec<(UploadFormat, Vec<u8>)> {
    let json = br#"[{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "ctr_pt_position": [2, 3, 4], "size": 2.5, "pre_pt_root_id": 5, "post_pt_root_id": 6}]"#.to_vec();
    let ndjson = br#"{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "size": 2.5}
{"pre_pt_position": [7, 8, 9], "post_pt_position": [1, 1, 1], "size": null}"#
        .to_vec();
    let csv = b"pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,post_pt_position_x,post_pt_position_y,post_pt_position_z,size,pre_pt_root_id\n1,2,3,4,5,6,2.5,9\n7,8,9,1,1,1,,10\n".to_vec();
    vec![
        (UploadFormat::Json, json),
        (UploadFormat::Ndjson, ndjson),
        (UploadFormat::Csv, csv),
        (UploadFormat::Arrow, arrow_sample()),
    ]
}

fn arrow_sample() -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema as ArrowSchema};
    let names = [
        "pre_pt_position_x",
        "pre_pt_position_y",
        "pre_pt_position_z",
        "post_pt_position_x",
        "post_pt_position_y",
        "post_pt_position_z",
    ];
    let mut fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(*n, DataType::Int64, false))
        .collect();
    fields.push(Field::new("size", DataType::Float64, true));
    let schema = Arc::new(ArrowSchema::new(fields));
    let mut cols: Vec<arrow_array::ArrayRef> = names
        .iter()
        .map(|_| Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef)
        .collect();
    cols.push(Arc::new(Float64Array::from(vec![
        Some(1.0),
        None,
        Some(3.5),
    ])));
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    w.into_inner().unwrap()
}

/// Keep the output readable: panics that the upload parser contains (in
/// arrow-ipc, see `annotations::upload`) are not printed; any other is.
fn quiet_contained_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .location()
                .is_some_and(|l| l.file().contains("/arrow-"))
            {
                prev(info);
            }
        }));
    });
}

proptest! {
    // A failure is kept (shrunk) in `fuzz_parsers.regressions` beside this
    // file and replayed first by every later run.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn data_urls_parse_or_refuse(segs in prop::collection::vec(segment(), 7), kind in prop::sample::select(vec!["npy", "raw", "blosc", "xy", "xz", "yz", "tif"])) {
        let mut s: Vec<&str> = segs.iter().map(String::as_str).collect();
        s[0] = "d";
        s[1] = "c";
        s[2] = kind;
        let _ = neurocube_server::url::parse([s[0], s[1], s[2], s[3], s[4], s[5], s[6]]);
        let _ = neurocube_server::url::window(&segs[3]);
    }

    #[test]
    fn npy_headers_parse_or_refuse(b in mutated(npy::header(DType::Uint16, &[3, 4, 5]).into_iter().chain([0u8; 120]).collect())) {
        // Any shape may parse (the cutout checks it against the box).
        if let Ok((_, off)) = npy::parse(&b) {
            prop_assert!(off <= b.len());
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_npy_or_blosc(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = npy::parse(&b);
        let _ = blosc::decompress(&b, 1 << 20);
    }

    #[test]
    fn blosc_frames_decode_or_refuse(b in mutated(Blosc::lz4(2).unwrap().compress(&(0..4000u32).map(|i| (i * 31 % 7) as u8).collect::<Vec<u8>>()).unwrap())) {
        if let Ok(out) = blosc::decompress(&b, 1 << 20) {
            prop_assert!(out.len() <= 1 << 20);
        }
    }

    #[test]
    fn uploads_parse_or_refuse(pick in 0usize..4, flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), cut in any::<prop::sample::Index>()) {
        quiet_contained_panics();
        let (format, mut b) = upload_samples().swap_remove(pick);
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        if flips_cut(&b) {
            b.truncate(cut.index(b.len()));
        }
        let schema = Schema::builtin("synapse").unwrap();
        let computed = upload::computed_columns(&schema, false);
        let _ = upload::parse(format, &Bytes::from(b), &schema, &computed);
    }

    #[test]
    fn filters_parse_or_refuse(b in mutated(br#"{"filter_in_dict": {"pre_pt_root_id": [1, 2]}, "filter_spatial_dict": {"post_pt_position": [[0, 0, 0], [9, 9, 9]]}, "filter_regex_dict": {"x": "^a"}, "filter_equal_dict": {"size": 2.5}}"#.to_vec())) {
        if let Ok(f) = serde_json::from_slice::<Filters>(&b) {
            let _ = Filter::parse(&f, &Schema::builtin("synapse").unwrap());
        }
    }

    #[test]
    fn graph_requests_parse_or_refuse(pairs in prop::collection::vec((prop::sample::select(vec!["ids", "pre_ids", "post_ids", "bounding_box", "version", "min_synapses", "autapses", "timestamp", "format", "select_values", "colour"]), segment()), 0..4), body in mutated(br#"{"ids": [1, 2], "bounding_box": [[0, 0, 0], [1, 1, 1]], "min_synapses": 2, "select_values": ["t"]}"#.to_vec())) {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = GraphRequest::from_query(&pairs);
        if let Ok(v) = serde_json::from_slice(&body) {
            let _ = GraphRequest::from_json(v);
        }
    }
}

/// Cut the body short about one case in four (decided by its bytes).
fn flips_cut(b: &[u8]) -> bool {
    b.iter()
        .fold(0u8, |a, x| a.wrapping_add(*x))
        .is_multiple_of(4)
}

//! Objects in bulk: many in one request, as NDJSON or Arrow, checked whole
//! before anything is written.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_with;
use crate::objects::{ids_in, row_count, setup, slow_flush, voxels_of};

fn arrow_objects(objects: &[(&str, Vec<[u64; 3]>)]) -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, ListBuilder, UInt64Builder};
    use arrow_array::{Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let mut vb = ListBuilder::new(FixedSizeListBuilder::new(UInt64Builder::new(), 3));
    for (_, voxels) in objects {
        for v in voxels {
            let fl = vb.values();
            fl.values().append_slice(v);
            fl.append(true);
        }
        vb.append(true);
    }
    let voxels = vb.finish();
    let authors = StringArray::from(objects.iter().map(|o| o.0).collect::<Vec<_>>());
    let schema = Arc::new(Schema::new(vec![
        Field::new("author", DataType::Utf8, true),
        Field::new("voxels", voxels.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(authors), Arc::new(voxels)]).unwrap();
    crate::helpers::arrow_stream(&batch)
}

#[tokio::test]
async fn pipelines_post_many_objects_at_once_as_ndjson_or_arrow() {
    let app = spawn_with(slow_flush).await;
    setup(&app).await;
    let post = |ct: &'static str, body: Vec<u8>| {
        let (client, url) = (app.client.clone(), app.url.clone());
        async move {
            client
                .post(format!("{url}/v1/datasets/o/tables/syn/objects"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let ndjson = "{\"author\": \"n1\", \"voxels\": [[1, 1, 1]]}\n\n{\"author\": \"n2\", \"voxels\": [[2, 2, 2], [3, 2, 2]]}\n";
    let r = post("application/x-ndjson", ndjson.as_bytes().to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let n: Vec<u64> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    let r = post(
        "application/vnd.apache.arrow.stream",
        arrow_objects(&[
            ("a1", vec![[10, 10, 1], [11, 10, 1]]),
            ("a2", vec![[20, 20, 2]]),
        ]),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let a: Vec<u64> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    assert_eq!(n.len() + a.len(), 4);
    for (id, want) in [
        (n[0], vec![[1, 1, 1]]),
        (n[1], vec![[2, 2, 2], [3, 2, 2]]),
        (a[0], vec![[10, 10, 1], [11, 10, 1]]),
        (a[1], vec![[20, 20, 2]]),
    ] {
        assert_eq!(voxels_of(&app, id).await, want);
    }
    let authors: Vec<String> = app
        .query(
            "/v1/datasets/o/tables/syn/query",
            &json!({"select_columns": ["author"], "timestamp": 4_000_000_000u64}),
        )
        .await
        .iter()
        .map(|r| r["author"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(authors, ["n1", "n2", "a1", "a2"]);
    // One bad object in a bulk request: nothing of it is written.
    let r = post(
        "application/vnd.apache.arrow.stream",
        arrow_objects(&[("ok", vec![[5, 5, 5]]), ("bad", vec![[5, 5, 500]])]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["row"].clone(), e["column"].clone()),
        (json!(1), json!("voxels")),
        "{e}"
    );
    let r = post(
        "application/x-ndjson",
        b"{\"voxels\": [[1, 1, 1]]}\n{\"voxels\": [[1, 1]]}\n".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(row_count(&app).await, 4);
    assert_eq!(
        ids_in(&app, [0, 0, 0], [256, 256, 32]).await,
        [n.clone(), a.clone()].concat()
    );
}

//! Many writers painting different voxels of the same chunks lose nothing.

use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_painters_never_lose_voxels() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.dataset("p", [96, 64, 24], 1).await;
    app.channel("p", "c", "segmentation", "uint16", [32, 32, 8])
        .await;
    // Writer w owns rows y ≡ w (mod 16) and paints them in 3 passes of z;
    // every row crosses 3 chunks in x and every chunk is shared by 16 writers.
    let writers = 16u16;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for pass in 0..3u64 {
                for y in (u64::from(w)..64).step_by(usize::from(writers)) {
                    let z0 = pass * 8 + 1;
                    let value = (w + 1) * 100 + pass as u16;
                    let body: Vec<u8> = (0..96 * 6).flat_map(|_| value.to_le_bytes()).collect();
                    let r = app
                        .put(
                            &format!("/p/c/raw/0/0,96/{y},{}/{z0},{}/", y + 1, z0 + 6),
                            body,
                        )
                        .await;
                    assert_eq!(r.status(), StatusCode::CREATED);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = app
        .get("/p/c/raw/0/0,96/0,64/0,24/")
        .await
        .bytes()
        .await
        .unwrap();
    let at = |x: u64, y: u64, z: u64| {
        let o = (((z * 64 + y) * 96 + x) * 2) as usize;
        u16::from_le_bytes([all[o], all[o + 1]])
    };
    for z in 0..24 {
        for y in 0..64 {
            for x in 0..96 {
                let (pass, off) = (z / 8, z % 8);
                let expect = if (1..7).contains(&off) {
                    ((y % 16) as u16 + 1) * 100 + pass as u16
                } else {
                    0
                };
                assert_eq!(at(x, y, z), expect, "voxel ({x},{y},{z})");
            }
        }
    }
}

//! Snapshots of the shape of every signed role: what any TUF client parses. Signatures,
//! expiries, release times and the random product key are redacted; everything else is fixed.

use insta::assert_json_snapshot;

use crate::common::{firmware, spawn_app};

#[tokio::test]
async fn metadata_shapes() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 1000)).await;
    let products: Vec<serde_json::Value> = app.get_json("/api/v1/products").await;
    let product_keyid = products[0]["keyid"].as_str().unwrap().to_owned();
    let product_key = products[0]["public_key"].as_str().unwrap().to_owned();
    let fetch = |name: &'static str| {
        let app = &app;
        let (keyid, key) = (product_keyid.clone(), product_key.clone());
        async move {
            let text = app.metadata(name).await.text().await.unwrap();
            let text = text.replace(&keyid, "<product-keyid>").replace(&key, "<product-public-key>");
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    let redactions = |settings: &mut insta::Settings| {
        settings.add_redaction(".signatures[].sig", "<sig>");
        settings.add_redaction(".signed.expires", "<expires>");
        settings.add_redaction(".signed.meta.*.hashes", "<hashes>");
        settings.add_redaction(".signed.meta.*.length", "<length>");
        settings.add_redaction(".signed.targets.*.custom.released_at", "<released_at>");
    };
    let mut settings = insta::Settings::clone_current();
    redactions(&mut settings);
    settings.set_sort_maps(true);
    let _guard = settings.bind_to_scope();
    assert_json_snapshot!("image_root_v1", fetch("1.root.json").await);
    assert_json_snapshot!("image_targets_v2", fetch("2.targets.json").await);
    assert_json_snapshot!("product_role_v2", fetch("2.pump-x1.json").await);
    assert_json_snapshot!("snapshot_v3", fetch("3.snapshot.json").await);
    assert_json_snapshot!("timestamp", fetch("timestamp.json").await);
}

//! A full key ceremony on a production-shaped server: three image root key holders (threshold
//! 2) in separate directories, the top-level targets holder, the director root holder and the
//! manufacturer. Each step is followed by tough, python-tuf's ngclient and the real agent, which
//! keeps installing new releases across every rotation.

use crate::split_trust::{Production, run_ok};

#[tokio::test]
async fn three_holders_rotate_root_delegate_a_product_and_rotate_every_online_key_while_agents_keep_updating() {
    let mut p = Production::start().await;

    // Step 1: a product delegation (the product waits in pending_delegation until it lands).
    p.create_product().await;
    let v1 = p.publish("1.0.0", 1, None).await;
    p.enroll().await;
    p.roll_out("1.0.0").await;
    p.installs("1.0.0", &v1).await;
    p.tough(&[("1.0.0", &v1)], 1).await;
    p.ngclient(&[("1.0.0", &v1)], &[], 1).await;

    // Step 2: rotate the root: holder 3 leaves, holder 4 joins (threshold stays 2). A single old
    // holder's signature is not enough; h1+h2 (old threshold) with h4 in the new root is.
    let h4 = p.holders.join("h4");
    std::fs::create_dir_all(&h4).unwrap();
    run_ok(&["keys", "new", "--out", h4.join("root.pem").to_str().unwrap()]).await;
    let h3_keyid = keyid(&p.key("h3")).await;
    let flags =
        ["--add-root-key", p.key("h4").to_str().unwrap().to_owned().leak(), "--remove-root-key", h3_keyid.leak()];
    let refused = p.root_ceremony("image", &flags, &["h1"]).await;
    assert!(refused.contains("FAILED") && refused.contains("root_chain_broken"), "{refused}");
    let landed = p.root_ceremony("image", &flags, &["h1", "h2", "h4"]).await;
    assert!(!landed.contains("FAILED"), "{landed}");
    let v2 = p.publish("1.1.0", 2, None).await;
    p.roll_out("1.1.0").await;
    p.installs("1.1.0", &v2).await;
    p.tough(&[("1.1.0", &v2)], 2).await;
    p.ngclient(&[("1.0.0", &v1), ("1.1.0", &v2)], &[], 2).await;

    // Step 3: rotate the timestamp and snapshot keys: the new keys go into the server's online/
    // first, then the root ceremony (signed by h1 and h4, the new root's holders) names them.
    let online = p.app.dir.path().join("keys/online");
    let ts = online.join("image-timestamp-2.pem");
    let snap = online.join("image-snapshot-2.pem");
    run_ok(&["keys", "new", "--out", ts.to_str().unwrap()]).await;
    run_ok(&["keys", "new", "--out", snap.to_str().unwrap()]).await;
    let flags = ["--timestamp-key", ts.to_str().unwrap(), "--snapshot-key", snap.to_str().unwrap()];
    let landed = p.root_ceremony("image", &flags, &["h1", "h4"]).await;
    assert!(!landed.contains("FAILED"), "{landed}");
    let ts_keyid = keyid(&ts).await;
    let timestamp: serde_json::Value =
        p.app.client.get(p.app.url("/repo/metadata/timestamp.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(timestamp["signatures"][0]["keyid"], ts_keyid, "the timestamp is signed with the new key");
    let v3 = p.publish("1.2.0", 3, None).await;
    p.roll_out("1.2.0").await;
    p.installs("1.2.0", &v3).await;
    p.tough(&[("1.2.0", &v3)], 3).await;
    p.ngclient(&[("1.2.0", &v3)], &[], 3).await;

    // Step 4: rotate the director's online key (director root ceremony, its one holder).
    let director_key = online.join("director-2.pem");
    run_ok(&["keys", "new", "--out", director_key.to_str().unwrap()]).await;
    let landed = p.root_ceremony("director", &["--online-key", director_key.to_str().unwrap()], &["director"]).await;
    assert!(!landed.contains("FAILED"), "{landed}");
    let v4 = p.publish("1.3.0", 4, None).await;
    p.roll_out("1.3.0").await;
    p.installs("1.3.0", &v4).await;

    // Step 5: rotate the product key: a new delegation, and the product role re-signed with the
    // new key, landed together; then the manufacturer publishes with the new key.
    p.rotate_product_key().await;
    let v5 = p.publish("1.4.0", 5, None).await;
    p.roll_out("1.4.0").await;
    p.installs("1.4.0", &v5).await;
    p.tough(&[("1.0.0", &v1), ("1.4.0", &v5)], 3).await;
    p.ngclient(&[("1.0.0", &v1), ("1.3.0", &v4), ("1.4.0", &v5)], &[], 3).await;

    // The audit log names every ceremony.
    let audit: serde_json::Value = p.app.get_json("/api/v1/audit?action=repo.ceremony").await;
    let entries = audit["entries"].as_array().or(audit.as_array()).cloned().unwrap_or_default();
    assert!(entries.len() >= 5, "{audit}");
}

/// The TUF key id of a key file (`patchgate keys show`).
pub async fn keyid(file: &std::path::Path) -> String {
    let out = run_ok(&["keys", "show", file.to_str().unwrap()]).await;
    out.lines().find_map(|l| l.strip_prefix("keyid:")).unwrap().trim().to_owned()
}

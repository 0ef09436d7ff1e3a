//! Fuzz target of the multipart upload parser (see `patchgate_protocol::fuzzing`): mutated
//! publish forms posted to a real server. Whatever arrives, the answer is a JSON success or a
//! JSON 4xx, never a 5xx; no staged file is left behind; and the repository stays one that tough
//! accepts. Corpus: `fuzz/corpus/upload_form/` (raw bodies, boundary `fuzzboundary`).

use patchgate_protocol::fuzzing::{self, Mutated};

use crate::common::spawn_app;

/// Files under the blob store's staging directory.
fn staged_files(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let staging = data_dir.join("objects").join("staging");
    std::fs::read_dir(staging).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}

#[test]
fn upload_form() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(async {
        let app = spawn_app().await;
        app.create_product("pump-x1", &["revA"]).await;
        app
    });
    let data_dir = app.services.config.data_dir.clone();
    let url = app.url("/api/v1/products/pump-x1/releases");
    // Each case is a request (and sometimes a publish): a tenth of the cheap targets' count.
    let cases = (fuzzing::cases() / 10).max(1);
    fuzzing::run("upload_form", cases, fuzzing::mutated(fuzzing::corpus("upload_form")), |m: &Mutated| {
        let (status, body) = runtime.block_on(async {
            let res = app
                .client
                .post(&url)
                .bearer_auth(&app.admin)
                .header("content-type", "multipart/form-data; boundary=fuzzboundary")
                .body(m.bytes.clone())
                .send()
                .await
                .map_err(|e| format!("the request failed: {e}"))?;
            let status = res.status();
            let body = res.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
            Ok::<_, String>((status, body))
        })?;
        if status.is_server_error() {
            return Err(format!("answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        if status.is_client_error() {
            let error: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| format!("{status} without a JSON body"))?;
            if !error["error"].is_string() {
                return Err(format!("{status} without an error code: {error}"));
            }
        }
        let left = staged_files(&data_dir);
        if !left.is_empty() {
            return Err(format!("answered {status} and left staged files behind: {left:?}"));
        }
        Ok(())
    });
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = app.root_v1().await;
        let repo = app.tough(&root, dir.path()).await.expect("tough loads the repository after the fuzzing");
        for name in repo.all_targets().map(|(name, _)| name.raw().to_owned()).collect::<Vec<_>>() {
            crate::common::tough_read(&repo, &name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    });
}

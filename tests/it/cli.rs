//! The `patchgate` binary: configuration errors, key generation, tokens, publishing, export.

use std::process::Command;

use crate::common::{dev_keys_dir, firmware, spawn_app};

fn patchgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchgate"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHGATE_")) {
        cmd.env_remove(key);
    }
    cmd
}

/// `patchgate release publish` of `file` as `version` of pump-x1 to `app`.
async fn publish_cli(app: &crate::common::TestApp, version: &str, file: &std::path::Path) -> std::process::Output {
    let args = [
        "release",
        "publish",
        "--server",
        &app.base,
        "--token",
        &app.admin,
        "--product",
        "pump-x1",
        "--version",
        version,
    ];
    async_patchgate().args(args).arg(file).output().await.unwrap()
}

/// For async tests: a blocking wait would stall the test's runtime, which drives the server's
/// PostgreSQL connections, and the server could never answer.
fn async_patchgate() -> tokio::process::Command {
    tokio::process::Command::from(patchgate())
}

#[test]
fn an_invalid_configuration_value_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = patchgate().current_dir(dir.path()).env("PATCHGATE_LISTEN", "nowhere").arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("listen") && stderr.contains("invalid socket address"), "{stderr}");
    let out = patchgate().current_dir(dir.path()).env("PATCHGATE_MAX_UPLOAD_BYTES", "0").arg("serve").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_upload_bytes"));
}

/// `patchgate keys generate … | head`: a reader that went away ends the command as it ends
/// other Unix tools (status 141, SIGPIPE's), not with a panic and a backtrace.
#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = patchgate()
        .current_dir(dir.path())
        .args(["keys", "generate", "--out", "keys"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir.path().join("keys/online/director.pem").exists(), "the keys were written before the output");
}

/// Without a terminal to prompt on, `user create` says how to give the password instead.
#[test]
fn a_password_prompt_without_a_terminal_points_to_password_stdin() {
    let dir = tempfile::tempdir().unwrap();
    // setsid: a new session has no controlling terminal, even when the tests run in one.
    let out = Command::new("setsid")
        .arg("--wait")
        .arg(env!("CARGO_BIN_EXE_patchgate"))
        .args(["user", "create", "--name", "ada", "--role", "admin"])
        .current_dir(dir.path())
        .env_remove("PATCHGATE_DATABASE_URL")
        .env("PATCHGATE_DATA_DIR", dir.path().join("data"))
        .env("PATCHGATE_KEYS_DIR", dev_keys_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no terminal") && stderr.contains("--password-stdin"), "{stderr}");
}

/// `patchgate serve` in `dir` on `listen` with the keys in `keys`, which must refuse to start;
/// its stderr.
fn serve_refused(dir: &std::path::Path, listen: &str, keys: &std::path::Path) -> String {
    let out = patchgate()
        .current_dir(dir)
        .env("PATCHGATE_LISTEN", listen)
        .env("PATCHGATE_KEYS_DIR", keys)
        .env("PATCHGATE_DATA_DIR", dir.join("data"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A server that can read offline keys refuses to start, naming each key's file.
#[test]
fn a_server_that_can_read_offline_keys_names_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = patchgate().args(["keys", "generate", "--out"]).arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = serve_refused(dir.path(), "127.0.0.1:0", &keys);
    for file in ["offline/image-root-1.pem", "offline/image-root-2.pem", "offline/image-targets.pem"] {
        assert!(stderr.contains(file), "{file}: {stderr}");
    }
    assert!(!stderr.contains("image-root-N"), "{stderr}");
}

#[test]
fn the_dev_keys_refuse_a_public_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = serve_refused(dir.path(), "0.0.0.0:0", &dev_keys_dir());
    assert!(stderr.contains("DEVELOPMENT KEYS") && stderr.contains("loopback"), "{stderr}");
}

#[test]
fn keys_example_is_recognised_as_the_development_set() {
    let set = patchgate::tuf::keydir::load(&dev_keys_dir()).unwrap();
    assert!(patchgate::startup::uses_dev_keys(&set));
    let mut ids: Vec<String> = set.all().map(|k| k.keyid().to_owned()).collect();
    ids.sort();
    let mut dev: Vec<String> = patchgate::tuf::dev_keys::DEV_KEYIDS.iter().map(|s| (*s).to_owned()).collect();
    dev.sort();
    assert_eq!(ids, dev);
    // A freshly generated set is not.
    let dir = tempfile::tempdir().unwrap();
    let out = patchgate()
        .args(["keys", "generate", "--out"])
        .arg(dir.path().join("k"))
        .args(["--root-keys", "3", "--root-threshold", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = patchgate::tuf::keydir::load(&dir.path().join("k")).unwrap();
    assert_eq!(fresh.image_root.len(), 3);
    assert!(!patchgate::startup::uses_dev_keys(&fresh));
    // Generating again into the same place never overwrites.
    let again = patchgate().args(["keys", "generate", "--out"]).arg(dir.path().join("k")).output().unwrap();
    assert!(!again.status.success());
}

#[tokio::test]
async fn publish_and_export_root_from_the_command_line() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let file = app.dir.path().join("fw-1.bin");
    std::fs::write(&file, firmware(5, 300_000)).unwrap();
    let out = publish_cli(&app, "1.0.0", &file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("target: pump-x1/1.0.0/fw-1.bin"), "{stdout}");
    assert!(stdout.contains(&format!("sha256: {}", crate::common::sha256_hex(&firmware(5, 300_000)))), "{stdout}");
    // Errors are clear, with a non-zero exit.
    let out = publish_cli(&app, "1.0", &file).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--version") && stderr.contains("1.0"), "{stderr}");
    let out = publish_cli(&app, "1.0.1", std::path::Path::new("/does/not/exist")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/does/not/exist"));
}

/// `patchgate release delta`: the delta's name and size, and clear refusals with a non-zero exit.
#[tokio::test]
async fn release_delta_computes_a_delta_from_the_command_line() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let v1 = firmware(6, 200_000);
    let mut v2 = v1.clone();
    v2[1000] ^= 0xff;
    for (version, image) in [("1.0.0", &v1), ("1.1.0", &v2)] {
        let file = app.dir.path().join(version).join("fw.bin");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, image).unwrap();
        assert!(publish_cli(&app, version, &file).await.status.success());
    }
    let delta = |from: &str, to: &str| {
        let args = ["release", "delta", "--server", &app.base, "--token", &app.admin, "--product", "pump-x1"];
        async_patchgate().args(args).args(["--from", from, "--to", to]).output()
    };
    let out = delta("1.0.0", "1.1.0").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("pump-x1/1.1.0/fw.bin~from-1.0.0 ("), "{stdout}");
    assert!(stdout.contains("of the 200000-byte image"), "{stdout}");
    for (from, to, says) in [("1.0.0", "9.9.9", "unknown_release"), ("1.0", "1.1.0", "--from")] {
        let out = delta(from, to).await.unwrap();
        assert!(!out.status.success(), "{from} -> {to}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// Every refusal names the next step: the server's address, the token, the role, the path.
#[tokio::test]
async fn cli_errors_end_with_the_next_step() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let hint = |out: std::process::Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let hint = stderr.lines().find_map(|l| l.strip_prefix("hint: ")).map(str::to_owned);
        (stderr.clone(), hint.unwrap_or_else(|| panic!("no hint: {stderr}")))
    };
    let rollout_list = |server: &str, token: &str| {
        async_patchgate().args(["rollout", "list", "--server", server, "--token", token]).output()
    };
    // Nothing listens on the port the test server no longer uses.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (stderr, step) = hint(rollout_list(&closed, &app.admin).await.unwrap());
    assert!(step.contains("is the server running") && step.contains("PATCHGATE_SERVER"), "{stderr}");
    let (stderr, step) = hint(rollout_list(&app.base, "pga_not-a-token").await.unwrap());
    assert!(stderr.contains("401") && step.contains("--token") && step.contains("token create"), "{stderr}");
    let viewer = app.token(patchgate::services::auth::Role::Viewer, None).await;
    let out = async_patchgate()
        .args(["rollout", "start", "r-1", "--server", &app.base, "--token", &viewer])
        .output()
        .await
        .unwrap();
    let (stderr, step) = hint(out);
    assert!(stderr.contains("403") && step.contains("role"), "{stderr}");
    let (stderr, step) = hint(publish_cli(&app, "1.0.1", std::path::Path::new("/does/not/exist")).await);
    assert!(stderr.contains("/does/not/exist") && step.contains("check the path"), "{stderr}");
}

#[test]
fn token_create_prints_the_token_last_and_export_root_prints_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    crate::common::copy_dir(&dev_keys_dir(), &keys);
    let run = |args: &[&str]| {
        let out = patchgate()
            .env("PATCHGATE_DATA_DIR", dir.path().join("data"))
            .env("PATCHGATE_KEYS_DIR", &keys)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["repo", "init"]).contains("initialised"));
    let out = run(&["token", "create", "--role", "publisher", "--name", "ci"]);
    assert!(out.trim_end().lines().last().unwrap().starts_with("pgt_"));
    // A scope naming a product that does not exist is refused, with a non-zero exit.
    let refused = patchgate()
        .env("PATCHGATE_DATA_DIR", dir.path().join("data"))
        .env("PATCHGATE_KEYS_DIR", &keys)
        .args(["token", "create", "--role", "publisher", "--product", "pump-x1", "--name", "ci2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("product pump-x1 does not exist"));
    let root = dir.path().join("root.json");
    let out = run(&["repo", "export-root", "--repo", "image", "--out", root.to_str().unwrap()]);
    let bytes = std::fs::read(&root).unwrap();
    assert!(out.contains(&crate::common::sha256_hex(&bytes)), "{out}");
    let out = run(&["repo", "rotate-root", "--root-keys", "3", "--root-threshold", "2"]);
    assert!(out.contains("version 2"), "{out}");
    let out = run(&["repo", "export-root", "--repo", "image", "--out", root.to_str().unwrap()]);
    assert!(out.contains("root version 2"), "{out}");
    assert_eq!(out.lines().last().unwrap().split(", ").count(), 3);
    let out = run(&["repo", "export-root", "--repo", "director", "--out", root.to_str().unwrap()]);
    assert!(out.contains("director root version 1"), "{out}");
}

#[tokio::test]
async fn the_server_refuses_keys_that_the_stored_roots_do_not_trust() {
    let app = spawn_app().await;
    let other_keys = app.dir.path().join("other-keys");
    patchgate::tuf::keydir::generate(&other_keys, 2, 2).unwrap();
    let mut config = app.services.config.as_ref().clone();
    config.keys_dir = other_keys;
    let clock = std::sync::Arc::new(patchgate::clock::SystemClock);
    let err = patchgate::startup::Application::build(config, clock).await.err().expect("mismatched keys refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("not the keys the stored roots trust") && text.contains("online/image-timestamp.pem"),
        "{text}"
    );
}

/// Runs `patchgate ARGS` on `app`'s own configuration (its data directory, keys and database),
/// feeding `stdin`; returns the exit status and stderr.
pub async fn patchgate_with_config(
    app: &crate::common::TestApp,
    args: &[&str],
    stdin: Option<&str>,
) -> (std::process::ExitStatus, String) {
    use tokio::io::AsyncWriteExt;
    let config = &app.services.config;
    let mut cmd = async_patchgate();
    cmd.env("PATCHGATE_DATA_DIR", &config.data_dir).env("PATCHGATE_KEYS_DIR", &config.keys_dir);
    if let Some(url) = &config.database_url {
        cmd.env("PATCHGATE_DATABASE_URL", url);
    }
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

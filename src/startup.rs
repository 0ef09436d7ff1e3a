//! Building the services from configuration and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{IntoServiceFactory as _, ServiceFactoryExt as _, fn_service, map_config};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::{Context as _, bail};

use crate::clock::Clock;
use crate::config::Config;
use crate::http::sendfile::Connection;
use crate::services::Services;
use crate::services::init_repo::init_repositories;
use crate::storage::BlobStore;
use crate::tuf::dev_keys::is_dev_key;
use crate::tuf::keydir::{self, KeySet};

/// Whether any key of the set is a public development key.
pub fn uses_dev_keys(keys: &KeySet) -> bool {
    keys.all().any(|k| is_dev_key(k.keyid()))
}

/// Refuses keys that are not the ones the stored roots trust (clients would reject everything
/// signed with them); returns whether a stored root trusts any development key.
async fn check_keys_against_roots(
    db: &sea_orm::DatabaseConnection,
    keys: &KeySet,
    config: &Config,
) -> anyhow::Result<bool> {
    use crate::db::metadata::metadata_latest;
    use crate::services::image_repo::{DIRECTOR, IMAGE};
    use crate::tuf::verify::{director_key_mismatches, image_key_mismatches, parse_root};
    let mut problems = Vec::new();
    let mut trusts_dev_keys = false;
    for repo in [IMAGE, DIRECTOR] {
        let Some(row) = metadata_latest(db, repo, "root").await? else { continue };
        let root = parse_root(&row.body).with_context(|| format!("the stored {repo} root"))?;
        trusts_dev_keys |= root.signed.keys.keys().any(|id| is_dev_key(&hex::encode(id.as_ref())));
        problems.extend(if repo == IMAGE {
            image_key_mismatches(&root.signed, keys)
        } else {
            director_key_mismatches(&root.signed, keys)
        });
    }
    if !problems.is_empty() {
        bail!(
            "the keys in {} are not the keys the stored roots trust, so clients would reject what this server signs: {}. \
             Point PATCHGATE_KEYS_DIR at the keys this repository was made with, or rotate the root to the new keys first",
            config.keys_dir.display(),
            problems.join("; ")
        );
    }
    Ok(trusts_dev_keys)
}

/// Opens keys, database and blob store as `config` says.
pub async fn build_services(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Services> {
    let tokens =
        crate::tuf::pkcs11::open_all(&config.pkcs11_keys, config.pkcs11_sessions).map_err(anyhow::Error::msg)?;
    if let Some(uri) = &config.product_keys_pkcs11 {
        crate::tuf::pkcs11::open_token(uri, config.pkcs11_sessions)
            .map_err(|e| anyhow::anyhow!("product_keys_pkcs11: {e}"))?;
    }
    let keys = keydir::load_with_tokens(&config.keys_dir, &tokens).with_context(|| {
        format!("loading signing keys from {} (create them with `patchgate keys generate`)", config.keys_dir.display())
    })?;
    let db = crate::db::connect(&config.database_url()).await?;
    let dev_keys = uses_dev_keys(&keys) || check_keys_against_roots(&db, &keys, &config).await?;
    let store = BlobStore::open(config.store_url.as_deref(), &config.store_options, &config.data_dir.join("objects"))?;
    store.check().await?;
    Ok(Services {
        db: db.clone(),
        store,
        keys: Arc::new(keys),
        clock,
        config: Arc::new(config),
        dev_keys,
        late_keys: Arc::default(),
        caches: Arc::default(),
        plans: Arc::default(),
        writes: crate::services::group_commit::GroupCommit::start(db.clone()),
        signatures: crate::services::signature_batch::SignatureBatcher::start()
            .context("starting the signature-checking thread")?,
    })
}

/// Server-signed products whose key this instance cannot use: publishing to them fails, and
/// their role is not refreshed here.
async fn warn_about_product_keys(svc: &Services) -> anyhow::Result<()> {
    for product in crate::db::products::product_list(&svc.db).await? {
        if product.signing_mode != crate::services::products::SERVER_SIGNED {
            continue;
        }
        match crate::services::image_repo::product_signer(svc, &product.name) {
            Ok(signer) if signer.keyid() == product.keyid => {}
            Ok(_) => {
                tracing::error!(product = %product.name, "the product key file does not match the product's delegation")
            }
            Err(e) => {
                tracing::error!(product = %product.name, error = %e, "cannot read the product's key (product_keys_dir)")
            }
        }
    }
    Ok(())
}

/// In production the running server holds only online keys (docs/design.md §1): a root or
/// top-level targets key it can read would let whoever takes the server sign anything.
fn refuse_offline_keys(svc: &Services) -> anyhow::Result<()> {
    let readable: Vec<String> = svc
        .keys
        .offline_keys()
        .into_iter()
        .filter(|(_, k)| !is_dev_key(k.keyid()))
        .map(|(file, k)| format!("{file} (key {})", k.keyid()))
        .collect();
    if !readable.is_empty() {
        bail!(
            "refusing to start: this server can read offline keys in {}: {}. In production the server holds only \
             online/ (snapshot, timestamp, director); keep offline/ on the key holders' machines and change roots and \
             delegations by key ceremony (`patchgate repo prepare|sign|submit`, README \"Key ceremony\")",
            svc.config.keys_dir.display(),
            readable.join(", ")
        );
    }
    Ok(())
}

/// A bound, not yet running server.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    services: Services,
    draining: crate::http::ops::Draining,
}

impl Application {
    /// Builds everything and binds the listener (port 0 picks a free port).
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let listen = config.listen;
        let svc = build_services(config, clock).await?;
        refuse_offline_keys(&svc)?;
        if svc.dev_keys {
            tracing::warn!(
                "RUNNING ON THE PUBLIC DEVELOPMENT KEYS (keys-example/), or a root that trusts them: anyone can sign \
                 updates for this server. Never use them for real devices; generate your own with `patchgate keys generate`."
            );
            if !listen.ip().is_loopback() {
                bail!(
                    "refusing to listen on {listen}: the development keys are public, so this server may only listen on a loopback address"
                );
            }
        }
        let outcome = if svc.dev_keys {
            Some(
                init_repositories(&svc, &crate::services::auth::Caller::system())
                    .await
                    .map_err(anyhow::Error::new)
                    .context("initialising the repositories")?,
            )
        } else {
            None
        };
        if outcome.is_some_and(|o| o.image_created) {
            tracing::info!("initialised the image and director repositories on the development keys");
        }
        if crate::db::metadata::metadata_latest(&svc.db, crate::services::image_repo::IMAGE, "root").await?.is_none() {
            bail!("the image repository is not initialised: run `patchgate repo init` first");
        }
        warn_about_product_keys(&svc).await?;
        // Uploads a crash cut off; an hour spares uploads in progress on other instances.
        match svc.store.cleanup_staging(std::time::Duration::from_secs(3600)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed unfinished uploads from staging"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "could not clean the staging area"),
        }
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let port = listener.local_addr()?.port();
        let prometheus = crate::telemetry::prometheus()?;
        let data = web::Data::new(svc.clone());
        let prom = web::Data::new(prometheus);
        let draining = crate::http::ops::Draining::default();
        let draining_data = web::Data::new(draining.clone());
        let config = &svc.config;
        let limits = crate::http::limits::BodyLimits::from_config(config);
        let (cap, open_files) = crate::http::limits::connection_cap(config.max_connections);
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let connections = crate::http::limits::ConnectionCount::new(cap);
        let address = listener.local_addr()?;
        let keep_alive = match config.keep_alive_seconds {
            0 => actix_web::http::KeepAlive::Disabled,
            n => actix_web::http::KeepAlive::Timeout(Duration::from_secs(n)),
        };
        let request_timeout = Duration::from_secs(config.header_timeout_seconds);
        // actix-web's `HttpServer` put together by hand, with its defaults, for one difference:
        // the dispatcher drives a `sendfile::Connection` rather than the bare socket, so target
        // downloads can leave actix's write buffer out (`http::sendfile`).
        let builder = actix_web::dev::Server::build()
            .workers(workers)
            // actix counts per worker; the accept loop pauses only when every worker is full.
            .max_concurrent_connections(cap.div_ceil(workers))
            // Signals are ours (`run_until_stopped`): readiness turns first, then actix stops.
            .disable_signals()
            .shutdown_timeout(config.shutdown_timeout_seconds);
        let shutdown = builder.graceful_shutdown_signal();
        let server = builder
            .listen("patchgate", listener, move || {
                let app = App::new()
                    .app_data(data.clone())
                    .app_data(prom.clone())
                    .app_data(draining_data.clone())
                    .app_data(limits)
                    .wrap(crate::http::error::default_error_handlers())
                    .wrap(from_fn(crate::http::limits::pace_bodies))
                    .wrap(from_fn(crate::http::request_metrics))
                    .configure(crate::http::routes)
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response());
                let shutdown = shutdown.clone();
                let connections = connections.clone();
                let http = actix_http::HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    })
                    .keep_alive(keep_alive)
                    .client_request_timeout(request_timeout)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(address)
                    .on_connect_ext(move |conn: &Connection, data: &mut actix_web::dev::Extensions| {
                        connections.opened(data);
                        conn.offer(data);
                    })
                    // Only the host name of requests without a `Host` header comes from here.
                    .finish(map_config(app, |()| actix_web::dev::AppConfig::default()));
                fn_service(|stream: tokio::net::TcpStream| async move {
                    let peer = stream.peer_addr().ok();
                    Ok::<_, actix_http::error::DispatchError>((
                        Connection::new(stream),
                        actix_http::Protocol::Http1,
                        peer,
                    ))
                })
                .and_then(http)
            })?
            .run();
        tracing::info!(address = %listen, port, max_connections = cap, open_file_limit = open_files, "patchgate listening");
        Ok(Self { server, port, services: svc, draining })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The services behind the server (tests use them to move time or run jobs).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Stops the server gracefully on SIGTERM or SIGINT (the `serve` command; tests stop their
    /// servers by dropping them): see [`stop_on_signal`].
    pub fn stop_on_signals(&self) {
        let drain = Duration::from_secs(self.services.config.shutdown_drain_seconds);
        tokio::spawn(stop_on_signal(self.server.handle(), self.draining.clone(), drain));
    }

    /// Runs the server and the background jobs until the server stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let every = self.services.config.refresh_interval_seconds;
        let job = (every > 0).then(|| {
            let holder = format!("{}-{}", std::process::id(), crate::storage::random_hex(4));
            tokio::spawn(crate::jobs::expiry::run(self.services.clone(), holder, std::time::Duration::from_secs(every)))
        });
        if job.is_none() {
            tracing::warn!("the metadata refresh job is off on this instance (refresh_interval_seconds = 0)");
        }
        let gates = self.services.config.rollout_interval_seconds;
        let gate_job = (gates > 0).then(|| {
            let holder = format!("{}-{}", std::process::id(), crate::storage::random_hex(4));
            tokio::spawn(crate::jobs::rollouts::run(
                self.services.clone(),
                holder,
                std::time::Duration::from_secs(gates),
            ))
        });
        if gate_job.is_none() {
            tracing::warn!("the rollout gate job is off on this instance (rollout_interval_seconds = 0)");
        }
        let blobs = self.services.config.blob_sweep_interval_seconds;
        let blob_job = (blobs > 0).then(|| {
            let holder = format!("{}-{}", std::process::id(), crate::storage::random_hex(4));
            tokio::spawn(crate::jobs::blobs::run(self.services.clone(), holder, Duration::from_secs(blobs)))
        });
        let deltas = self.services.config.delta_interval_seconds;
        let delta_job = (deltas > 0).then(|| {
            let holder = format!("{}-{}", std::process::id(), crate::storage::random_hex(4));
            tokio::spawn(crate::jobs::deltas::run(self.services.clone(), holder, Duration::from_secs(deltas)))
        });
        // Other instances' changes reach this one's caches within a second.
        let watch =
            Some(tokio::spawn(crate::services::caches::watch(self.services.db.clone(), self.services.caches.clone())));
        let result = self.server.await;
        for job in [job, gate_job, blob_job, delta_job, watch].into_iter().flatten() {
            job.abort();
        }
        result
    }
}

/// Waits for SIGTERM or SIGINT, turns `/readyz` unready, keeps serving for `drain`, then stops
/// the server gracefully: no new connections, requests in flight finish (bounded by
/// `shutdown_timeout_seconds`), and `run_until_stopped` returns.
async fn stop_on_signal(server: actix_web::dev::ServerHandle, draining: crate::http::ops::Draining, drain: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    draining.0.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        signal = name,
        drain_seconds = drain.as_secs(),
        "shutting down: /readyz answers 503 while requests drain"
    );
    let graceful = async {
        tokio::time::sleep(drain).await;
        tracing::info!("shutting down: no new connections; finishing the requests in flight");
        server.stop(true).await;
    };
    // A second signal means "now": requests in flight are dropped (what was answered is stored).
    tokio::select! {
        () = graceful => {}
        _ = term.recv() => force(&server).await,
        _ = int.recv() => force(&server).await,
    }
}

async fn force(server: &actix_web::dev::ServerHandle) {
    tracing::warn!("second signal: stopping now, without waiting for the requests in flight");
    server.stop(false).await;
}

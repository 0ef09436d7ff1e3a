//! Typed configuration: embedded defaults, then `patchgate.toml`, then `PATCHGATE_*` variables.
//!
//! Loaded once at start-up, validated, and passed down; nothing reads configuration globally.
//! An invalid value stops start-up with a message naming the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Uploads above this size are refused with 413 unless configured otherwise: firmware images of
/// medical devices are typically tens of MiB; 2 GiB leaves room for full OS images.
const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// 256 MiB: about a minute of one core for the largest delta (measured: README, "Delta updates").
const DEFAULT_DELTA_MAX_IMAGE_BYTES: u64 = 256 * 1024 * 1024;

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The URL devices and clients use to reach this server (for links and logs).
    pub public_url: Option<String>,
    /// Directory for the default database, objects and server-held product keys.
    pub data_dir: PathBuf,
    /// Directory holding `offline/` and `online/` signing keys.
    pub keys_dir: PathBuf,
    /// Online keys held by a PKCS#11 token (an HSM) instead of a file in `online/`: the file's
    /// name without `.pem` (`image-snapshot`, `image-timestamp`, `director`, or any other name
    /// for a further online key, such as a rotation's next one) → a PKCS#11 URI
    /// (`pkcs11:token=…;object=…?module-path=…&pin-source=…`). The PIN comes from the URI's
    /// `pin-source` file, or else `PATCHGATE_HSM_PIN` (never the URI itself).
    pub pkcs11_keys: BTreeMap<String, String>,
    /// Server-held ("server-signed") product keys in a PKCS#11 token instead of files in
    /// `product_keys_dir`: a `pkcs11:` URI naming only the token (no `object=`); product P's key
    /// is the token's key labelled `product-P`, made there when the product is created.
    pub product_keys_pkcs11: Option<String>,
    /// Sessions the server opens on each token it signs with, shared by the token's keys: how
    /// many signatures it asks of the token at once. Raise it for an HSM that takes
    /// milliseconds per signature (a network HSM, a cloud KMS), within the token's own limit.
    pub pkcs11_sessions: usize,
    /// Where server-held ("server-signed") product keys live; default `{data_dir}/product-keys`.
    /// Instances sharing one database must share this directory too.
    pub product_keys_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://{data_dir}/patchgate.db`.
    pub database_url: Option<String>,
    /// `file:///…` or `s3://bucket/prefix`; defaults to `{data_dir}/objects`.
    pub store_url: Option<String>,
    /// Settings of an `s3://` store, by object_store's names: `aws_endpoint` (MinIO, Ceph…),
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`… The
    /// `AWS_*` environment variables are read as well; these win over them.
    pub store_options: BTreeMap<String, String>,
    /// When above 0 and the store is S3: `GET /repo/targets/…` answers 307 with a presigned URL of
    /// the store, valid this many seconds, so that firmware flows from the store (or a CDN in
    /// front of it) rather than through the server. 0: the server streams every download.
    pub presigned_download_seconds: u64,
    /// Largest firmware file accepted by a publish, in bytes (larger: 413).
    pub max_upload_bytes: u64,
    /// Largest image (source or target) a delta is computed for, in bytes: what bounds the time
    /// one takes (seconds per megabyte of one core); its memory is bounded whatever the size.
    pub delta_max_image_bytes: u64,
    /// How often the delta job computes the deltas its policy wants (to the newest release and
    /// every release a rollout underway installs, from the releases most devices run), in
    /// seconds; 0 turns it off on this instance (deltas are then made only on request).
    pub delta_interval_seconds: u64,
    /// How many source releases the delta job makes deltas from, per release devices are headed
    /// for: the ones most active devices run. 0: the job makes none.
    pub delta_sources_per_release: u64,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// How often the metadata refresh job looks for roles to re-sign, in seconds; 0 turns the
    /// job off on this instance (another instance sharing the database may run it).
    pub refresh_interval_seconds: u64,
    /// How often the rollout gate job evaluates running rollouts, in seconds; 0 turns it off on
    /// this instance.
    pub rollout_interval_seconds: u64,
    /// How often the blob sweep removes stored files no release refers to (left by failed or
    /// abandoned publishes, once a day old), in seconds; 0 turns it off on this instance.
    pub blob_sweep_interval_seconds: u64,
    /// The poll interval suggested to devices in every report answer, in seconds.
    pub device_poll_seconds: u64,
    /// Longest a client may take to send a request's head, in seconds.
    pub header_timeout_seconds: u64,
    /// Longest a client may take to send a whole request body, in seconds, on every route but
    /// uploads (those must keep [`Config::upload_min_bytes_per_second`] instead).
    pub body_timeout_seconds: u64,
    /// Uploads (multipart bodies) that send less than this on average over any
    /// [`Config::upload_rate_window_seconds`] are cut with 408 and their staged file removed.
    pub upload_min_bytes_per_second: u64,
    /// The window over which an upload's rate is measured, in seconds.
    pub upload_rate_window_seconds: u64,
    /// How long an idle keep-alive connection stays open, in seconds; 0 turns keep-alive off.
    pub keep_alive_seconds: u64,
    /// Most connections open at once; beyond it new ones wait in the listen backlog. Default:
    /// what the open-file limit leaves after the database, files and logs (see the README).
    pub max_connections: Option<usize>,
    /// On SIGTERM or SIGINT, how long `/readyz` answers 503 ("shutting down") while requests are
    /// still served, so that a load balancer stops sending new ones first; then the server stops
    /// accepting.
    pub shutdown_drain_seconds: u64,
    /// Then how long requests in flight (uploads, reports waiting for their group) may take to
    /// finish before the process exits anyway.
    pub shutdown_timeout_seconds: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("data"),
            keys_dir: PathBuf::from("keys-example"),
            pkcs11_keys: BTreeMap::new(),
            product_keys_pkcs11: None,
            pkcs11_sessions: crate::tuf::pkcs11::DEFAULT_SESSIONS,
            product_keys_dir: None,
            database_url: None,
            store_url: None,
            store_options: BTreeMap::new(),
            presigned_download_seconds: 0,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            delta_max_image_bytes: DEFAULT_DELTA_MAX_IMAGE_BYTES,
            // A release is published, then rolled out over hours: five minutes lets the deltas
            // be there before the first stage's devices fetch it, at a few queries per product.
            delta_interval_seconds: 300,
            // Most fleets run one or two releases; three covers the stragglers.
            delta_sources_per_release: 3,
            log_format: LogFormat::Text,
            // The shortest refresh margin (timestamp: 8 h) is vastly longer: a minute only
            // bounds how long a lost lease leaves the job undone.
            refresh_interval_seconds: 60,
            // Soaks are minutes to days; evaluating every 30 s halts a failing stage well
            // within a minute of the failure that crosses the gate (reports also halt at once).
            rollout_interval_seconds: 30,
            // Orphans cost only disk: hourly is plenty.
            blob_sweep_interval_seconds: 3600,
            // Ten minutes keeps 100 000 devices at under 200 reports a second.
            device_poll_seconds: 600,
            header_timeout_seconds: 5,
            // A device's report or an admin's form is a few KiB: even a poor mobile link sends
            // it in seconds. Thirty leaves room and still frees a stalled connection soon.
            body_timeout_seconds: 30,
            // 4 KiB/s is a very poor link; a client trickling slower holds a connection and a
            // staged file for nothing.
            upload_min_bytes_per_second: 4 * 1024,
            upload_rate_window_seconds: 30,
            keep_alive_seconds: 5,
            max_connections: None,
            // Load balancers typically probe every few seconds.
            shutdown_drain_seconds: 5,
            // Reports finish in milliseconds; a minute lets most uploads in flight complete.
            shutdown_timeout_seconds: 60,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source held a value of the wrong shape; figment's message names the field and source.
    /// (Not a `source()`: the message already is figment's, and chains would repeat it.)
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: field `{field}`: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it was refused.
        message: String,
    },
}

/// `PATCHGATE_*` variables that are not server configuration (lowercase, without the prefix):
/// `PATCHGATE_CONFIG` names the file itself; the publishing CLI's server and token; the
/// agent's enrollment token and the variables it hands an install command; the test suite's
/// and the benchmarks' knobs.
const NOT_FIELDS: &[&str] = &[
    "config",
    "server",
    "token",
    "enrollment_token",
    "target_name",
    "target_version",
    "target_sha256",
    "test_postgres",
    "test_postgres_url",
    "contract_examples",
    "fuzz_cases",
    "bin",
    "hsm_pin",
];

impl Config {
    /// Loads defaults, then `file` (default `patchgate.toml`, if present), then `PATCHGATE_*`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = file.map(Path::to_path_buf).or_else(|| std::env::var_os("PATCHGATE_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &explicit {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid {
                        field: "config",
                        message: format!("configuration file {} does not exist", path.display()),
                    });
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("patchgate.toml").exists() => {
                figment = figment.merge(Toml::file_exact("patchgate.toml"));
            }
            None => {}
        }
        // Every PATCHGATE_* must be a field (typos are refused), except the documented
        // variables of other tools that may be set in the same shell (`NOT_FIELDS`).
        figment = figment.merge(Env::prefixed("PATCHGATE_").ignore(NOT_FIELDS));
        let config: Config = figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (role, uri) in &self.pkcs11_keys {
            if let Err(message) = crate::tuf::keydir::check_token_key_name(role) {
                return Err(ConfigError::Invalid { field: "pkcs11_keys", message });
            }
            if let Err(e) = uri.parse::<crate::tuf::pkcs11::KeyUri>() {
                return Err(ConfigError::Invalid { field: "pkcs11_keys", message: format!("{role}: {e}") });
            }
        }
        if !(1..=256).contains(&self.pkcs11_sessions) {
            return Err(ConfigError::Invalid { field: "pkcs11_sessions", message: "must be between 1 and 256".into() });
        }
        if let Some(uri) = &self.product_keys_pkcs11 {
            let field = "product_keys_pkcs11";
            let token = crate::tuf::pkcs11::KeyUri::parse_token(uri)
                .map_err(|e| ConfigError::Invalid { field, message: e.to_string() })?;
            if token.names_a_key() {
                return Err(ConfigError::Invalid {
                    field,
                    message: "name only the token: each product's key is the one labelled product-NAME".into(),
                });
            }
        }
        if !(10..=86_400).contains(&self.device_poll_seconds) {
            return Err(ConfigError::Invalid {
                field: "device_poll_seconds",
                message: "must be between 10 and 86400".into(),
            });
        }
        for (field, value, range) in [
            ("header_timeout_seconds", self.header_timeout_seconds, 1..=3600),
            ("body_timeout_seconds", self.body_timeout_seconds, 1..=3600),
            ("upload_rate_window_seconds", self.upload_rate_window_seconds, 1..=3600),
            ("upload_min_bytes_per_second", self.upload_min_bytes_per_second, 1..=1 << 30),
            ("keep_alive_seconds", self.keep_alive_seconds, 0..=3600),
            ("shutdown_drain_seconds", self.shutdown_drain_seconds, 0..=3600),
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds, 1..=3600),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!("must be between {} and {}", range.start(), range.end()),
                });
            }
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::Invalid { field: "max_connections", message: "must be greater than zero".into() });
        }
        if self.delta_max_image_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "delta_max_image_bytes",
                message: "must be greater than zero".into(),
            });
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "max_upload_bytes",
                message: "must be greater than zero".into(),
            });
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid {
                field: "public_url",
                message: format!("{url:?} is not a URL: {e}"),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid {
                    field: "public_url",
                    message: format!("{url:?} must be http:// or https://"),
                });
            }
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                field: "database_url",
                // Its password, if any, is not repeated.
                message: format!("{:?} must start with sqlite:// or postgres://", crate::db::redact(&db)),
            });
        }
        // The URL itself is not repeated: it may hold a password.
        if !db.starts_with("sqlite:")
            && let Err(e) = url::Url::parse(&db)
        {
            return Err(ConfigError::Invalid {
                field: "database_url",
                message: format!(
                    "is not a URL ({e}); a PostgreSQL on this machine is reached over its socket as \
                     postgres://USER@localhost/DATABASE?host=/var/run/postgresql"
                ),
            });
        }
        if let Some(store) = &self.store_url
            && !(store.starts_with("file://") || store.starts_with("s3://"))
        {
            return Err(ConfigError::Invalid {
                field: "store_url",
                message: format!("{store:?} must start with file:// or s3://"),
            });
        }
        if !self.store_options.is_empty() && !self.store_url.as_deref().is_some_and(|s| s.starts_with("s3://")) {
            return Err(ConfigError::Invalid {
                field: "store_options",
                message: "applies only to an s3:// store_url".into(),
            });
        }
        if self.presigned_download_seconds > 0 {
            if !self.store_url.as_deref().is_some_and(|s| s.starts_with("s3://")) {
                return Err(ConfigError::Invalid {
                    field: "presigned_download_seconds",
                    message: "needs an s3:// store_url (a local store has no URLs to hand out)".into(),
                });
            }
            // S3 accepts presigned URLs for at most seven days.
            if !(10..=604_800).contains(&self.presigned_download_seconds) {
                return Err(ConfigError::Invalid {
                    field: "presigned_download_seconds",
                    message: "must be 0 (off) or between 10 and 604800 (S3's limit, seven days)".into(),
                });
            }
        }
        if let Some(unknown) = self
            .store_options
            .keys()
            .find(|k| k.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>().is_err())
        {
            return Err(ConfigError::Invalid {
                field: "store_options",
                message: format!("{unknown:?} is not an S3 setting (aws_endpoint, aws_region, aws_access_key_id…)"),
            });
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("patchgate.db").display()),
        }
    }

    /// Where server-held ("server-signed") product keys live.
    ///
    /// Under the data directory rather than the keys directory: the default keys directory is
    /// the committed `keys-example/`, which must never collect generated keys, and these keys
    /// belong to the same deployment as the database that names their delegations.
    pub fn product_keys_dir(&self) -> PathBuf {
        self.product_keys_dir.clone().unwrap_or_else(|| self.data_dir.join("product-keys"))
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail API returns its own large error")]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn an_invalid_listen_address_names_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PATCHGATE_LISTEN", "not-an-address");
            // figment names the variable's key (`LISTEN` of PATCHGATE_LISTEN).
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains("listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_field_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("patchgate.toml", "lisen = \"127.0.0.1:1\"")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_other_tools_documented_variables_are_not_fields() {
        figment::Jail::expect_with(|jail| {
            for var in [
                "PATCHGATE_TOKEN",
                "PATCHGATE_SERVER",
                "PATCHGATE_ENROLLMENT_TOKEN",
                "PATCHGATE_TEST_POSTGRES_URL",
                "PATCHGATE_TARGET_SHA256",
                "PATCHGATE_BIN",
            ] {
                jail.set_env(var, "x");
            }
            jail.set_env("PATCHGATE_LISTEN", "127.0.0.1:9");
            assert_eq!(Config::load(None).unwrap().listen.port(), 9);
            // A typo is still refused.
            jail.set_env("PATCHGATE_LISTN", "127.0.0.1:9");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_database_scheme_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PATCHGATE_DATABASE_URL", "mysql://x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("database_url"), "{err}");
            jail.set_env("PATCHGATE_DATABASE_URL", "mysql://fleet:s3cret@db/fleet");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("mysql://fleet:***@db/fleet") && !err.contains("s3cret"), "{err}");
            Ok(())
        });
    }

    /// `postgres://user@/db` (no host) is what one writes for a socket and neither sea-orm nor
    /// sqlx parses: the error says what does, without repeating the URL (it may hold a password).
    #[test]
    fn a_postgres_url_without_a_host_is_refused_with_the_socket_form() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PATCHGATE_DATABASE_URL", "postgres://patchgate:s3cret@/fleet?host=/var/run/postgresql");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("database_url") && err.contains("empty host"), "{err}");
            assert!(err.contains("postgres://USER@localhost/DATABASE?host=/var/run/postgresql"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
            jail.set_env("PATCHGATE_DATABASE_URL", "postgres://patchgate@localhost/fleet?host=/var/run/postgresql");
            Config::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn store_options_are_read_from_the_file_and_the_environment_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "patchgate.toml",
                "store_url = \"s3://firmware\"\n[store_options]\naws_region = \"eu-central-1\"\n",
            )?;
            jail.set_env("PATCHGATE_STORE_OPTIONS", "{aws_endpoint=\"http://127.0.0.1:9000\"}");
            let config = Config::load(None).unwrap();
            assert_eq!(config.store_options["aws_region"], "eu-central-1");
            assert_eq!(config.store_options["aws_endpoint"], "http://127.0.0.1:9000");
            // A misspelt setting would be ignored by object_store: it is refused here.
            jail.set_env("PATCHGATE_STORE_OPTIONS", "{aws_endpiont=\"http://127.0.0.1:9000\"}");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("store_options") && err.contains("aws_endpiont"), "{err}");
            // And they mean nothing to a local store.
            jail.create_file("patchgate.toml", "[store_options]\naws_region = \"eu-central-1\"\n")?;
            jail.set_env("PATCHGATE_STORE_OPTIONS", "{aws_region=\"eu-central-1\"}");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("applies only to an s3:// store_url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn presigned_downloads_need_an_s3_store_and_s3_s_bounds() {
        let s3 = |seconds| Config {
            store_url: Some("s3://firmware".into()),
            presigned_download_seconds: seconds,
            ..Config::default()
        };
        assert!(s3(0).validate().is_ok() && s3(3600).validate().is_ok() && s3(604_800).validate().is_ok());
        for seconds in [5, 604_801] {
            let err = s3(seconds).validate().unwrap_err().to_string();
            assert!(err.contains("presigned_download_seconds") && err.contains("604800"), "{err}");
        }
        let local = Config { presigned_download_seconds: 3600, ..Config::default() };
        let err = local.validate().unwrap_err().to_string();
        assert!(err.contains("needs an s3:// store_url"), "{err}");
    }
}

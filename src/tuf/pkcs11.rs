//! Online keys held in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 bridge, SoftHSM in tests):
//! the server asks the token to sign (`CKM_EDDSA` over an Ed25519 key) and never sees the private
//! key. Keys are named by PKCS#11 URIs (RFC 7512), for example
//!
//! ```text
//! pkcs11:token=patchgate;object=image-timestamp?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/hsm-pin
//! ```
//!
//! Path attributes: `token` (the token's label, required), `object` (the key's label) and/or `id`
//! (its `CKA_ID`, percent-encoded bytes). Query attributes: `module-path` (the vendor's PKCS#11
//! library, required) and `pin-source` (a file holding the user PIN, `file:` prefix allowed);
//! without it the PIN is read from `PATCHGATE_HSM_PIN`. RFC 7512's `pin-value` is refused: a PIN
//! inside a URI ends up in configuration files, command lines, logs and CI output. Every
//! failure names what to fix: module, token, PIN, key, key type.
//!
//! The sessions (and the login) belong to the token, not to a key: every key on a token signs
//! through the same `pkcs11_sessions` sessions, so the number of sessions the server holds does
//! not grow with its keys (tokens limit them: a YubiHSM 2 has 16 in all).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The environment variable read for the PIN when the URI names no `pin-source`.
pub const PIN_ENV: &str = "PATCHGATE_HSM_PIN";

/// `CKA_EC_PARAMS` of an Ed25519 key: the printable string `edwards25519` (what SoftHSM and
/// pkcs11-tool write) or the OID 1.3.101.112 (RFC 8410).
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";
const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// What went wrong with a PKCS#11 key. Never carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The URI does not parse.
    #[error("{uri:?} is not a usable PKCS#11 URI: {message}")]
    Uri {
        /// The URI as given (any `pin-value` masked).
        uri: String,
        /// What is wrong.
        message: String,
    },
    /// The module could not be loaded or initialised.
    #[error(
        "PKCS#11 module {}: {message}; install the HSM vendor's PKCS#11 library or fix module-path",
        module.display()
    )]
    Module {
        /// The library.
        module: PathBuf,
        /// The loader's or the module's error.
        message: String,
    },
    /// No token with that label.
    #[error(
        "no token labelled {token:?} in {} (tokens present: {}); initialise it or fix token= in the URI",
        module.display(),
        if found.is_empty() { "none".to_owned() } else { found.join(", ") }
    )]
    NoToken {
        /// The label asked for.
        token: String,
        /// The module searched.
        module: PathBuf,
        /// The labels of the tokens present.
        found: Vec<String>,
    },
    /// The PIN could not be read.
    #[error("cannot read the PIN for token {token:?}: {message}")]
    Pin {
        /// The token.
        token: String,
        /// Why.
        message: String,
    },
    /// The token refused the PIN.
    #[error(
        "token {token:?} refused the PIN ({code}); fix the PIN in the pin-source file or {PIN_ENV} (a token locks after too many wrong PINs)"
    )]
    WrongPin {
        /// The token.
        token: String,
        /// The module's return code.
        code: String,
    },
    /// No key under that label or id.
    #[error(
        "no {what} key {key} on token {token:?}; create one with `patchgate keys new --pkcs11 '<uri>'` or fix object=/id= in the URI"
    )]
    NoKey {
        /// Which half was missing (`private`, `public`).
        what: &'static str,
        /// The label or id.
        key: String,
        /// The token.
        token: String,
    },
    /// More than one key matches.
    #[error("{count} private keys match {key} on token {token:?}; name one key by both object= and id=")]
    Ambiguous {
        /// How many.
        count: usize,
        /// The label or id.
        key: String,
        /// The token.
        token: String,
    },
    /// The key is not Ed25519.
    #[error("key {key} on token {token:?} is {found}, not an Ed25519 key; TUF roles here are signed with ed25519")]
    WrongKeyType {
        /// The label or id.
        key: String,
        /// The token.
        token: String,
        /// What it is.
        found: String,
    },
    /// A key of that label already exists (generation never replaces a key).
    #[error("token {token:?} already holds a key {key}; refusing to create a second one under the same name")]
    Exists {
        /// The label or id.
        key: String,
        /// The token.
        token: String,
    },
    /// The public key on the token does not verify what its private key signs.
    #[error("key {key} on token {token:?}: the public key does not verify the private key's signature")]
    Mismatch {
        /// The label or id.
        key: String,
        /// The token.
        token: String,
    },
    /// Any other failure of a PKCS#11 call.
    #[error("PKCS#11 {context} (token {token:?}): {message}")]
    Call {
        /// What was being done.
        context: &'static str,
        /// The token.
        token: String,
        /// The module's error.
        message: String,
    },
}

/// Where the user PIN comes from (never the URI itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PinSource {
    File(PathBuf),
    Env,
}

/// A parsed PKCS#11 URI naming one key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyUri {
    token: String,
    object: Option<String>,
    id: Option<Vec<u8>>,
    module: PathBuf,
    pin: PinSource,
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The URI again (it holds no PIN): safe for logs and errors.
impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkcs11:token={}", encode(self.token.as_bytes()))?;
        if let Some(object) = &self.object {
            write!(f, ";object={}", encode(object.as_bytes()))?;
        }
        if let Some(id) = &self.id {
            write!(f, ";id={}", id.iter().map(|b| format!("%{b:02x}")).collect::<String>())?;
        }
        write!(f, "?module-path={}", self.module.display())?;
        match &self.pin {
            PinSource::File(path) => write!(f, "&pin-source={}", path.display()),
            PinSource::Env => Ok(()),
        }
    }
}

/// Everything but RFC 3986's unreserved characters is percent-encoded in a URI's values.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, UNRESERVED).to_string()
}

/// Masks every `pin-value` of a refused URI, so the error can show the rest.
fn redact(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find("pin-value=") {
        let value = at + "pin-value=".len();
        out.push_str(&rest[..value]);
        out.push_str("***");
        rest = &rest[value..];
        rest = &rest[rest.find(['&', ';']).unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

impl std::str::FromStr for KeyUri {
    type Err = HsmError;

    fn from_str(uri: &str) -> Result<Self, HsmError> {
        let parsed = Self::parse_token(uri)?;
        if parsed.object.is_none() && parsed.id.is_none() {
            return Err(HsmError::Uri {
                uri: redact(uri),
                message: "object= (the key's label) or id= is required".into(),
            });
        }
        Ok(parsed)
    }
}

impl KeyUri {
    /// A URI that names a token and how to log in to it, and perhaps no key (`object`, `id`):
    /// where the server makes and finds keys of its own ([`KeyUri::with_object`]).
    pub fn parse_token(uri: &str) -> Result<Self, HsmError> {
        let bad = |message: String| HsmError::Uri { uri: redact(uri), message };
        let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| bad("must start with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let decode = |name: &str, value: &str| -> Result<Vec<u8>, HsmError> {
            if value.is_empty() {
                return Err(bad(format!("{name}= is empty")));
            }
            Ok(percent_encoding::percent_decode_str(value).collect())
        };
        let text = |name: &str, value: &str| -> Result<String, HsmError> {
            String::from_utf8(decode(name, value)?).map_err(|_| bad(format!("{name}= is not UTF-8")))
        };
        let (mut token, mut object, mut id) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| bad(format!("{attr:?} is not name=value")))?;
            match name {
                "token" => token = Some(text(name, value)?),
                "object" => object = Some(text(name, value)?),
                "id" => id = Some(decode(name, value)?),
                "type" if value == "private" => {}
                "type" => return Err(bad(format!("type={value}: only private keys sign"))),
                // Attributes that narrow the search further are not needed to find a key by
                // token and label, and are refused rather than silently ignored.
                other => return Err(bad(format!("path attribute {other:?} is not supported (use token, object, id)"))),
            }
        }
        let (mut module, mut pin) = (None, PinSource::Env);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| bad(format!("{attr:?} is not name=value")))?;
            match name {
                "module-path" => module = Some(PathBuf::from(text(name, value)?)),
                "pin-source" => {
                    let source = text(name, value)?;
                    let path =
                        source.strip_prefix("file://").or_else(|| source.strip_prefix("file:")).unwrap_or(&source);
                    pin = PinSource::File(PathBuf::from(path));
                }
                "pin-value" => {
                    return Err(bad(format!(
                        "pin-value is refused: a PIN in a URI ends up in configuration, command lines and logs; \
                         put it in a file named by pin-source= (mode 0600) or in {PIN_ENV}"
                    )));
                }
                other => {
                    return Err(bad(format!(
                        "query attribute {other:?} is not supported (use module-path, pin-source)"
                    )));
                }
            }
        }
        let token = token.ok_or_else(|| bad("token= is required (the token's label)".into()))?;
        let module = module.ok_or_else(|| bad("?module-path=… is required (the HSM's PKCS#11 library)".into()))?;
        Ok(Self { token, object, id, module, pin })
    }

    /// Whether the URI names a key (`object=` or `id=`), not only a token.
    pub fn names_a_key(&self) -> bool {
        self.object.is_some() || self.id.is_some()
    }

    /// The key labelled `label` on this URI's token.
    pub fn with_object(&self, label: &str) -> Self {
        Self { object: Some(label.to_owned()), id: None, ..self.clone() }
    }
    /// How the key is named in messages: its label and/or id.
    fn key_name(&self) -> String {
        match (&self.object, &self.id) {
            (Some(label), None) => format!("labelled {label:?}"),
            (None, Some(id)) => format!("with id {}", hex::encode(id)),
            (Some(label), Some(id)) => format!("labelled {label:?} with id {}", hex::encode(id)),
            (None, None) => "(unnamed)".to_owned(),
        }
    }

    /// The attributes that name this key: its label and/or id.
    fn naming(&self) -> Vec<Attribute> {
        let label = self.object.iter().map(|l| Attribute::Label(l.as_bytes().to_vec()));
        label.chain(self.id.iter().map(|id| Attribute::Id(id.clone()))).collect()
    }

    /// The attributes that find this key's objects of `class`.
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut template = vec![Attribute::Class(class)];
        template.extend(self.naming());
        template
    }

    fn pin(&self) -> Result<AuthPin, HsmError> {
        self.pin_text().map(AuthPin::from)
    }

    fn pin_text(&self) -> Result<String, HsmError> {
        let error = |message: String| HsmError::Pin { token: self.token.clone(), message };
        let pin = match &self.pin {
            PinSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| error(format!("pin-source {}: {e}", path.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            PinSource::Env => std::env::var(PIN_ENV)
                .map_err(|_| error(format!("the URI names no pin-source, and {PIN_ENV} is not set")))?,
        };
        Ok(pin)
    }

    fn call(&self, context: &'static str) -> impl Fn(CkError) -> HsmError + '_ {
        move |e| HsmError::Call { context, token: self.token.clone(), message: e.to_string() }
    }
}

/// One initialised context per module and process: `C_Initialize` may run only once per library.
fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pkcs11) = contexts.get(module) {
        return Ok(pkcs11.clone());
    }
    let failed = |e: CkError| HsmError::Module { module: module.to_owned(), message: e.to_string() };
    if !module.is_file() {
        return Err(HsmError::Module { module: module.to_owned(), message: "no such file".into() });
    }
    let pkcs11 = Pkcs11::new(module).map_err(failed)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e)),
    }
    contexts.insert(module.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

/// A logged-in session on the URI's token.
fn open_session(uri: &KeyUri, read_write: bool) -> Result<Session, HsmError> {
    let pkcs11 = context(&uri.module)?;
    let slots = pkcs11.get_slots_with_token().map_err(uri.call("listing slots"))?;
    let mut found = Vec::new();
    let mut slot = None;
    for candidate in slots {
        let label = pkcs11.get_token_info(candidate).map_err(uri.call("reading token info"))?.label().trim().to_owned();
        if label == uri.token && slot.is_none() {
            slot = Some(candidate);
        }
        // SoftHSM and others list an empty, uninitialised token in a spare slot.
        if !label.is_empty() {
            found.push(label);
        }
    }
    let slot = slot.ok_or_else(|| HsmError::NoToken { token: uri.token.clone(), module: uri.module.clone(), found })?;
    let session = if read_write { pkcs11.open_rw_session(slot) } else { pkcs11.open_ro_session(slot) }
        .map_err(uri.call("opening a session"))?;
    match session.login(UserType::User, Some(&uri.pin()?)) {
        // Sessions of one application share the token's login: a second key on the same token
        // finds the user logged in already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired), _)) => {
            Err(HsmError::WrongPin { token: uri.token.clone(), code: format!("{rv:?}") })
        }
        Err(e) => Err(uri.call("logging in")(e)),
    }
}

/// A token's logged-in sessions, shared by every key on it.
struct TokenSessions {
    // A PKCS#11 session may be used by one thread at a time. Handles of token objects are valid
    // in every session of the application.
    sessions: Vec<Mutex<Session>>,
    next: std::sync::atomic::AtomicUsize,
}

impl TokenSessions {
    /// A free session if there is one, else the next in turn once it is free.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for session in &self.sessions {
            if let Ok(free) = session.try_lock() {
                return free;
            }
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.sessions.len();
        self.sessions[turn].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sessions of the URI's token, opened and logged in by the first caller in this process
/// (`count` of them, at least one); later callers share them, and the login (PKCS#11 logs an
/// application in per token, not per session), whatever PIN source their own URI names.
fn token_sessions(uri: &KeyUri, count: usize) -> Result<Arc<TokenSessions>, HsmError> {
    /// Each token's sessions, by module and token label.
    type Tokens = HashMap<(PathBuf, String), Arc<TokenSessions>>;
    static TOKENS: OnceLock<Mutex<Tokens>> = OnceLock::new();
    let mut tokens = TOKENS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    let name = (uri.module.clone(), uri.token.clone());
    if let Some(pool) = tokens.get(&name) {
        return Ok(Arc::clone(pool));
    }
    let sessions = (0..count.max(1)).map(|_| open_session(uri, false).map(Mutex::new)).collect::<Result<_, _>>()?;
    let pool = Arc::new(TokenSessions { sessions, next: Default::default() });
    tokens.insert(name, Arc::clone(&pool));
    Ok(pool)
}

/// Opens the token a URI names and logs in (`product_keys_pkcs11` at start-up), so that a wrong
/// module, token or PIN stops start-up rather than failing, and retrying the PIN, later.
pub fn open_token(uri: &str, sessions: usize) -> Result<(), HsmError> {
    token_sessions(&KeyUri::parse_token(uri)?, sessions).map(drop)
}

/// Sessions the server keeps open per token unless `pkcs11_sessions` says otherwise: a session
/// signs one message at a time, and an HSM that takes milliseconds per signature would otherwise
/// hold every signing task in one queue. The director signs a group's roles in as many tasks as
/// its key's token has sessions (`Signer::concurrency`), so this bounds how many signatures wait
/// on the token at once. Tokens limit sessions (a YubiHSM 2 has 16 in all).
pub const DEFAULT_SESSIONS: usize = 8;

/// An Ed25519 key on a token, signing through the token's sessions.
pub struct HsmKey {
    uri: KeyUri,
    sessions: Arc<TokenSessions>,
    private: ObjectHandle,
    public: [u8; 32],
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmKey").field("uri", &self.uri).finish_non_exhaustive()
    }
}

impl HsmKey {
    /// Finds the key the URI names and checks that it is an Ed25519 pair whose public half
    /// verifies what the private half signs. It signs through the token's sessions, `sessions`
    /// of them if this is the first key of its token in this process.
    pub fn open(uri: &KeyUri, sessions: usize) -> Result<Self, HsmError> {
        let pool = token_sessions(uri, sessions)?;
        let session = pool.session();
        let privates =
            session.find_objects(&uri.template(ObjectClass::PRIVATE_KEY)).map_err(uri.call("finding keys"))?;
        let private = match privates.as_slice() {
            [one] => *one,
            [] => return Err(HsmError::NoKey { what: "private", key: uri.key_name(), token: uri.token.clone() }),
            many => {
                return Err(HsmError::Ambiguous { count: many.len(), key: uri.key_name(), token: uri.token.clone() });
            }
        };
        let attrs = session.get_attributes(private, &[AttributeType::KeyType]).map_err(uri.call("reading the key"))?;
        let key_type = attrs.iter().find_map(|a| match a {
            Attribute::KeyType(t) => Some(*t),
            _ => None,
        });
        if key_type != Some(KeyType::EC_EDWARDS) {
            let found = key_type.map_or_else(|| "of unknown type".to_owned(), |t| format!("a {t} key"));
            return Err(HsmError::WrongKeyType { key: uri.key_name(), token: uri.token.clone(), found });
        }
        let public = read_public(&session, uri)?;
        drop(session);
        let key = Self { uri: uri.clone(), sessions: pool, private, public };
        key.check_pair()?;
        Ok(key)
    }

    /// Generates a new Ed25519 pair on the token under the URI's label and id: the private key
    /// sensitive and never extractable. Refuses when a key of that name exists.
    pub fn generate(uri: &KeyUri) -> Result<Self, HsmError> {
        let session = open_session(uri, true)?;
        let existing =
            session.find_objects(&uri.template(ObjectClass::PRIVATE_KEY)).map_err(uri.call("finding keys"))?;
        if !existing.is_empty() {
            return Err(HsmError::Exists { key: uri.key_name(), token: uri.token.clone() });
        }
        let naming = uri.naming();
        let mut public_template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS_NAME.to_vec()),
        ];
        public_template.extend(naming.iter().cloned());
        let mut private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        private_template.extend(naming);
        session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_template, &private_template)
            .map_err(uri.call("generating an Ed25519 key pair"))?;
        drop(session);
        Self::open(uri, 1)
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// How many signatures its token is asked for at once (its sessions, shared with the
    /// token's other keys).
    pub fn sessions(&self) -> usize {
        self.sessions.sessions.len()
    }

    /// The URI (without any PIN).
    pub fn uri(&self) -> String {
        self.uri.to_string()
    }

    /// Whether the token marks the private key sensitive and never extractable: no one, this
    /// server included, can read it out.
    pub fn private_key_sealed(&self) -> Result<bool, HsmError> {
        let session = self.sessions.session();
        let attrs = session
            .get_attributes(self.private, &[AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(self.uri.call("reading the key's attributes"))?;
        let flag = |wanted: AttributeType| {
            attrs.iter().find_map(|a| match (a, wanted) {
                (Attribute::Sensitive(v), AttributeType::Sensitive)
                | (Attribute::Extractable(v), AttributeType::Extractable) => Some(*v),
                _ => None,
            })
        };
        Ok(flag(AttributeType::Sensitive) == Some(true) && flag(AttributeType::Extractable) == Some(false))
    }

    /// Signs `message` (pure Ed25519, RFC 8032) on the token.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let session = self.sessions.session();
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = session.sign(&mechanism, self.private, message).map_err(self.uri.call("signing"))?;
        sig.try_into().map_err(|sig: Vec<u8>| HsmError::Call {
            context: "signing",
            token: self.uri.token.clone(),
            message: format!("the token returned {} bytes, not a 64-byte Ed25519 signature", sig.len()),
        })
    }

    fn check_pair(&self) -> Result<(), HsmError> {
        let message = b"patchgate: does this token's public key verify its private key?";
        let mismatch = || HsmError::Mismatch { key: self.uri.key_name(), token: self.uri.token.clone() };
        let public = VerifyingKey::from_bytes(&self.public).map_err(|_| mismatch())?;
        let signature = Signature::from_bytes(&self.sign(message)?);
        public.verify(message, &signature).map_err(|_| mismatch())
    }
}

/// The public half's 32 bytes, from its `CKA_EC_POINT` (a DER OCTET STRING, or the raw bytes
/// some tokens return), after checking its curve.
fn read_public(session: &Session, uri: &KeyUri) -> Result<[u8; 32], HsmError> {
    let no_public = || HsmError::NoKey { what: "public", key: uri.key_name(), token: uri.token.clone() };
    let publics = session.find_objects(&uri.template(ObjectClass::PUBLIC_KEY)).map_err(uri.call("finding keys"))?;
    let public = *publics.first().ok_or_else(no_public)?;
    let attrs = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(uri.call("reading the public key"))?;
    let (mut params, mut point) = (None, None);
    for attr in attrs {
        match attr {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let wrong =
        |found: &str| HsmError::WrongKeyType { key: uri.key_name(), token: uri.token.clone(), found: found.into() };
    match params.as_deref() {
        Some(p) if p == ED25519_PARAMS_NAME || p == ED25519_PARAMS_OID => {}
        Some(_) => return Err(wrong("an Edwards key of another curve (Ed448?)")),
        None => return Err(wrong("a key without curve parameters")),
    }
    let point = point.ok_or_else(no_public)?;
    let raw: &[u8] = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => return Err(wrong("a key whose public point is not 32 bytes")),
    };
    raw.try_into().map_err(|_| wrong("a key whose public point is not 32 bytes"))
}

/// The key `uri` names, opened once per process and shared: opening finds the key and checks
/// the pair with a signature, too much to do per signature. `sessions` is used only if this
/// opens the token's sessions.
pub fn open_shared(uri: &KeyUri, sessions: usize) -> Result<Arc<HsmKey>, HsmError> {
    static OPEN: OnceLock<Mutex<HashMap<String, Arc<HsmKey>>>> = OnceLock::new();
    let name = uri.to_string();
    let open = OPEN.get_or_init(Mutex::default);
    if let Some(key) = open.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
        return Ok(Arc::clone(key));
    }
    let key = Arc::new(HsmKey::open(uri, sessions)?);
    open.lock().unwrap_or_else(|p| p.into_inner()).insert(name, Arc::clone(&key));
    Ok(key)
}

/// The token key of server-held product `product` when `product_keys_pkcs11` names a token
/// (`None` when product keys are files): labelled `product-NAME`, made there by `create`.
pub fn product_key(
    token_uri: Option<&str>,
    sessions: usize,
    product: &str,
    create: bool,
) -> Option<Result<Arc<HsmKey>, HsmError>> {
    let token = match KeyUri::parse_token(token_uri?) {
        Ok(token) => token,
        Err(e) => return Some(Err(e)),
    };
    let uri = token.with_object(&format!("product-{product}"));
    if !create {
        return Some(open_shared(&uri, sessions));
    }
    // Two creations of one product on this instance must not leave two keys of one label.
    static CREATING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    Some(match open_shared(&uri, sessions) {
        Err(HsmError::NoKey { .. }) => HsmKey::generate(&uri).and_then(|_| open_shared(&uri, sessions)),
        other => other,
    })
}

/// Opens every configured key (role name → URI), each error naming its role.
pub fn open_all(
    uris: &std::collections::BTreeMap<String, String>,
    sessions: usize,
) -> Result<HashMap<String, Arc<HsmKey>>, String> {
    let mut keys = HashMap::new();
    for (role, uri) in uris {
        let key = uri
            .parse::<KeyUri>()
            .and_then(|uri| HsmKey::open(&uri, sessions))
            .map_err(|e| format!("pkcs11_keys.{role}: {e}"))?;
        match key.private_key_sealed() {
            Ok(true) => tracing::info!(role = %role, uri = %key.uri, "online key held by a PKCS#11 token"),
            _ => tracing::warn!(
                role = %role,
                uri = %key.uri,
                "online key held by a PKCS#11 token that would let it be read out (CKA_SENSITIVE off or CKA_EXTRACTABLE on)"
            ),
        }
        keys.insert(role.clone(), Arc::new(key));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_uri_parses_and_prints_back() {
        let uri: KeyUri =
            "pkcs11:token=patch%20gate;object=image-timestamp;id=%01%02?module-path=/usr/lib/x.so&pin-source=/run/pin"
                .parse()
                .unwrap();
        assert_eq!(uri.token, "patch gate");
        assert_eq!(uri.object.as_deref(), Some("image-timestamp"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(uri.module, PathBuf::from("/usr/lib/x.so"));
        assert_eq!(uri.pin, PinSource::File(PathBuf::from("/run/pin")));
        assert_eq!(uri.to_string().parse::<KeyUri>().unwrap(), uri);
    }

    #[test]
    fn the_pin_comes_from_its_file_or_else_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "5678\n").unwrap();
        let uri: KeyUri =
            format!("pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:{}", file.display()).parse().unwrap();
        assert_eq!(uri.pin, PinSource::File(file.clone()));
        assert_eq!(uri.pin_text().unwrap(), "5678");
        let env: KeyUri = "pkcs11:token=t;object=k?module-path=/m.so".parse().unwrap();
        assert_eq!(env.pin, PinSource::Env);
    }

    #[test]
    fn incomplete_or_unknown_uris_are_refused_by_name() {
        for (uri, says) in [
            ("token=t;object=k?module-path=/m.so", "pkcs11:"),
            ("pkcs11:object=k?module-path=/m.so", "token="),
            ("pkcs11:token=t?module-path=/m.so", "object="),
            ("pkcs11:token=t;object=k", "module-path"),
            ("pkcs11:token=t;object=k;serial=1?module-path=/m.so", "serial"),
            ("pkcs11:token=t;object=k?module-path=/m.so&slot-id=3", "slot-id"),
            ("pkcs11:token=t;object=k;type=public?module-path=/m.so", "type=public"),
        ] {
            let err = uri.parse::<KeyUri>().unwrap_err().to_string();
            assert!(err.contains(says), "{uri}: {err}");
        }
        // A PIN in the URI is refused, and never repeated by the refusal.
        for uri in [
            "pkcs11:token=t;object=k?pin-value=secret&module-path=/m.so",
            "pkcs11:token=t;object=k?module-path=/m.so&pin-value=secret&pin-value=secret2",
        ] {
            let err = uri.parse::<KeyUri>().unwrap_err().to_string();
            assert!(err.contains("pin-value is refused") && !err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn a_token_uri_names_no_key_until_given_a_label() {
        let token = KeyUri::parse_token("pkcs11:token=t?module-path=/m.so&pin-source=/p").unwrap();
        assert!(!token.names_a_key());
        assert!("pkcs11:token=t?module-path=/m.so".parse::<KeyUri>().is_err(), "a key URI needs object= or id=");
        let key = token.with_object("product-pump-x1");
        assert!(key.names_a_key());
        assert_eq!(key.to_string(), "pkcs11:token=t;object=product-pump-x1?module-path=/m.so&pin-source=/p");
    }

    #[test]
    fn a_missing_module_is_named() {
        let uri: KeyUri = "pkcs11:token=t;object=k?module-path=/nonexistent/libhsm.so".parse().unwrap();
        let err = HsmKey::open(&uri, 1).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/libhsm.so") && err.contains("module-path"), "{err}");
    }
}

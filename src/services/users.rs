//! People who sign in to the admin UI: accounts (argon2id), server-side sessions with idle and
//! absolute expiry, CSRF tokens, and sign-in throttling.
//!
//! A session cookie holds a 256-bit secret; only its SHA-256 is stored, so a database leak does
//! not leak sessions. Sessions end at sign-out, after [`SESSION_IDLE_SECONDS`] without use, after
//! [`SESSION_MAX_SECONDS`] in all, and when the user's role changes. Repeated failed sign-ins for
//! one name slow down exponentially and every failure is audited. Must not import `http`.

use std::collections::BTreeMap;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;

use super::auth::{Caller, Role, new_secret, token_hash};
use super::{ServiceError, Services, audit};
use crate::db::entities::{session, user};
use crate::db::users::{
    NewSession, login_failure_clear, login_failure_delete, login_failure_insert, login_failures_before,
    session_find_active, session_insert, session_revoke, session_revoke_for_user, session_touch, user_get,
    user_get_by_name, user_insert, user_list, user_set_password, user_set_role,
};

/// A session unused this long is over: an unattended browser on a ward PC should not stay signed in.
pub const SESSION_IDLE_SECONDS: i64 = 30 * 60;
/// A session is over after this long whatever happens: a working day.
pub const SESSION_MAX_SECONDS: i64 = 12 * 3600;
/// Sign-in failures counted within this window…
const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;
/// …beyond this many, each further attempt must wait, doubling each time.
const FREE_FAILURES: u64 = 5;
/// The first wait once the free failures are used up (then it doubles). Long enough that a
/// script gains nothing, and that a slow machine cannot slip past it.
const FIRST_DELAY_SECONDS: i64 = 30;
/// The longest wait imposed between attempts.
const MAX_DELAY_SECONDS: i64 = 15 * 60;
/// The prefix of session secrets (in the cookie only).
const SESSION_PREFIX: &str = "pgs_";
/// Shortest password accepted: passphrases, not `Summer2026!`.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Activity is written to the session row at most this often.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// A signed-in user, from a valid session.
#[derive(Debug, Clone)]
pub struct SessionUser {
    /// The account.
    pub user: user::Model,
    /// Its role.
    pub role: Role,
    /// The session.
    pub session: session::Model,
}

impl SessionUser {
    /// The caller, as the audit log names it (`user:NAME`).
    pub fn caller(&self) -> Caller {
        Caller { name: format!("user:{}", self.user.name), role: self.role, product: None }
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.session.csrf_token.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// A new session: the cookie secret (shown once) and the user.
#[derive(Debug)]
pub struct SignedIn {
    /// The cookie value.
    pub secret: String,
    /// Who signed in.
    pub user: SessionUser,
}

/// Checks a user name: 1 to 64 of `a-z 0-9 . _ -`.
pub fn check_user_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid("invalid_user_name", "a user name is 1 to 64 of a-z, 0-9, '.', '_' and '-'"))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), ServiceError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_CHARS..=1024).contains(&n) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "weak_password",
            format!("a password must be {MIN_PASSWORD_CHARS} to 1024 characters long"),
        ))
    }
}

/// At most this many argon2 computations at once (each takes ~19 MiB and a core for a moment):
/// a burst of sign-ins queues instead of exhausting the server.
static ARGON2_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn hash_password(password: &str) -> Result<String, ServiceError> {
    let _permit = ARGON2_PERMITS.acquire().await.map_err(|e| ServiceError::Internal(anyhow::anyhow!(e)))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| ServiceError::Internal(anyhow::anyhow!(e)))?
}

async fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(_permit) = ARGON2_PERMITS.acquire().await else { return false };
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok())
        .await
        .unwrap_or(false)
}

/// Creates a user with `role` and `password` (argon2id).
pub async fn create_user(
    svc: &Services,
    actor: &Caller,
    name: &str,
    role: Role,
    password: &str,
) -> Result<user::Model, ServiceError> {
    check_user_name(name)?;
    check_password(password)?;
    if user_get_by_name(&svc.db, name).await?.is_some() {
        return Err(ServiceError::conflict("user_exists", format!("a user named {name} already exists")));
    }
    let hash = hash_password(password).await?;
    let now = svc.now_secs();
    let user = user_insert(&svc.db, name, role.as_str(), &hash, now).await?;
    audit::record(
        &svc.db,
        now,
        actor,
        "user.create",
        &format!("user:{name}"),
        None,
        Some(serde_json::json!({"role": role.as_str()})),
    )
    .await?;
    Ok(user)
}

/// Changes a user's role and ends every session it has (the new role applies at once).
pub async fn set_user_role(svc: &Services, actor: &Caller, name: &str, role: Role) -> Result<u64, ServiceError> {
    let user = user_get_by_name(&svc.db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_user", format!("no user is named {name}")))?;
    let now = svc.now_secs();
    user_set_role(&svc.db, user.id, role.as_str(), now).await?;
    let ended = session_revoke_for_user(&svc.db, user.id, now).await?;
    audit::record(
        &svc.db,
        now,
        actor,
        "user.role",
        &format!("user:{name}"),
        Some(serde_json::json!({"role": user.role})),
        Some(serde_json::json!({"role": role.as_str(), "sessions_ended": ended})),
    )
    .await?;
    Ok(ended)
}

/// Sets a user's password and ends its sessions.
pub async fn set_user_password(svc: &Services, actor: &Caller, name: &str, password: &str) -> Result<(), ServiceError> {
    check_password(password)?;
    let user = user_get_by_name(&svc.db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_user", format!("no user is named {name}")))?;
    let hash = hash_password(password).await?;
    let now = svc.now_secs();
    user_set_password(&svc.db, user.id, &hash, now).await?;
    session_revoke_for_user(&svc.db, user.id, now).await?;
    audit::record(&svc.db, now, actor, "user.password", &format!("user:{name}"), None, None).await
}

/// Forgets a user's failed sign-ins (an admin lifting a lockout).
pub async fn unlock_user(svc: &Services, actor: &Caller, name: &str) -> Result<(), ServiceError> {
    user_get_by_name(&svc.db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_user", format!("no user is named {name}")))?;
    login_failure_clear(&svc.db, name).await?;
    audit::record(&svc.db, svc.now_secs(), actor, "user.unlock", &format!("user:{name}"), None, None).await
}

/// Every user.
pub async fn list_users(svc: &Services) -> Result<Vec<user::Model>, ServiceError> {
    Ok(user_list(&svc.db).await?)
}

/// How long an attempt must wait after `earlier` counted attempts in the window, the newest at
/// `newest` (0: it may be checked now).
fn throttle_wait(earlier: u64, newest: Option<i64>, now: i64) -> i64 {
    let Some(newest) = newest.filter(|_| earlier >= FREE_FAILURES) else { return 0 };
    let extra = u32::try_from(earlier - FREE_FAILURES).unwrap_or(u32::MAX).min(20);
    let delay = FIRST_DELAY_SECONDS.saturating_mul(2i64.saturating_pow(extra)).min(MAX_DELAY_SECONDS);
    (newest + delay - now).max(0)
}

/// Sign-ins in progress on this instance, one lock per account name.
static ACCOUNT_TURNS: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// This instance's turn to sign in as `name`: attempts for one account run one at a time, so
/// each sees every earlier attempt counted. The lock leaves the map with its last holder.
struct AccountTurn {
    name: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl AccountTurn {
    async fn take(name: &str) -> Self {
        let lock = {
            let mut turns = ACCOUNT_TURNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            turns.entry(name.to_owned()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        Self { name: name.to_owned(), lock, _guard: guard }
    }
}

impl Drop for AccountTurn {
    fn drop(&mut self) {
        let mut turns = ACCOUNT_TURNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's reference and ours: nobody else waits for this account.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.name);
        }
    }
}

/// Signs `name` in with `password` from `remote` (an address, for the audit log).
///
/// Wrong names and wrong passwords get the same answer; after [`FREE_FAILURES`] failures within
/// the window each attempt must wait (a 429 with the seconds to wait), and every failure is audited.
///
/// An attempt is counted (stored as a failure) before its password is checked and forgotten
/// only when the password was right, and attempts for one account are checked one at a time on
/// each instance: a burst of any width gets at most [`FREE_FAILURES`] checks per window, and
/// then one per doubling delay, never longer than [`MAX_DELAY_SECONDS`].
pub async fn sign_in(svc: &Services, name: &str, password: &str, remote: &str) -> Result<SignedIn, ServiceError> {
    // A name that cannot exist costs no hash and leaves no row: the form cannot be used to
    // fill the database or the CPU with made-up names.
    if check_user_name(name).is_err() {
        return Err(ServiceError::Unauthenticated { message: "wrong user name or password".into() });
    }
    let _turn = AccountTurn::take(name).await;
    let now = svc.now_secs();
    let attempt = login_failure_insert(&svc.db, name, remote, now).await?;
    // Other instances' attempts count too: those stored before this one.
    let (earlier, newest) = login_failures_before(&svc.db, name, now - FAILURE_WINDOW_SECONDS, attempt).await?;
    let wait = throttle_wait(earlier, newest, now);
    if wait > 0 {
        // A refused attempt checked nothing: it does not lengthen the real user's wait.
        login_failure_delete(&svc.db, attempt).await?;
        return Err(ServiceError::Throttled { retry_after: wait });
    }
    let user = user_get_by_name(&svc.db, name).await?;
    metrics::counter!("patchgate_password_checks_total").increment(1);
    let ok = match &user {
        Some(u) => verify_password(password, &u.password_hash).await,
        // The same work for an unknown name, so timing does not tell which names exist.
        None => {
            let _ = hash_password(password).await;
            false
        }
    };
    let known = user.is_some();
    let (Some(user), true) = (user, ok) else {
        // The attempt's row stays: it is this failure.
        let anonymous = Caller { name: format!("anonymous@{remote}"), role: Role::Viewer, product: None };
        // People type passwords into the name field: only an existing account's name is recorded.
        let object = if known { format!("user:{name}") } else { "user:(unknown)".to_owned() };
        audit::record(&svc.db, now, &anonymous, "user.login_failed", &object, None, None).await?;
        return Err(ServiceError::Unauthenticated { message: "wrong user name or password".into() });
    };
    login_failure_clear(&svc.db, name).await?;
    let (secret, _, hash) = new_secret(SESSION_PREFIX);
    let csrf = crate::storage::random_hex(32);
    let session = session_insert(
        &svc.db,
        NewSession {
            user_id: user.id,
            token_hash: &hash,
            csrf_token: &csrf,
            now,
            expires_at: now + SESSION_MAX_SECONDS,
        },
    )
    .await?;
    let role = parse_role(&user)?;
    let signed_in = SessionUser { user, role, session };
    audit::record(
        &svc.db,
        now,
        &signed_in.caller(),
        "user.login",
        &format!("user:{name}"),
        None,
        Some(serde_json::json!({"from": remote})),
    )
    .await?;
    Ok(SignedIn { secret, user: signed_in })
}

fn parse_role(user: &user::Model) -> Result<Role, ServiceError> {
    Role::parse(&user.role)
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("user {} has role {:?}", user.name, user.role)))
}

/// The user of the session whose cookie secret is `secret`, if it is still valid; `activity`
/// marks it used (a page's automatic refresh is not activity: it must not keep an unattended
/// session alive).
pub async fn session_user(svc: &Services, secret: &str, activity: bool) -> Result<Option<SessionUser>, ServiceError> {
    let now = svc.now_secs();
    let Some(session) = session_find_active(&svc.db, &token_hash(secret)).await? else { return Ok(None) };
    if now >= session.expires_at || now - session.last_seen_at >= SESSION_IDLE_SECONDS {
        session_revoke(&svc.db, session.id, now).await?;
        return Ok(None);
    }
    let Some(user) = user_get(&svc.db, session.user_id).await? else { return Ok(None) };
    if activity && now - session.last_seen_at >= TOUCH_EVERY_SECONDS {
        session_touch(&svc.db, session.id, now).await?;
    }
    let role = parse_role(&user)?;
    Ok(Some(SessionUser { user, role, session }))
}

/// Ends a session.
pub async fn sign_out(svc: &Services, who: &SessionUser) -> Result<(), ServiceError> {
    let now = svc.now_secs();
    session_revoke(&svc.db, who.session.id, now).await?;
    audit::record(&svc.db, now, &who.caller(), "user.logout", &format!("user:{}", who.user.name), None, None).await
}

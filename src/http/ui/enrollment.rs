//! Admin UI pages for enrollment tokens: the list and create form, the one answer that shows a
//! new token's secret (no redirect could carry it, and it is never shown again), and revoking
//! with a confirmation page. Changes go through the same services as
//! `/api/v1/enrollment-tokens`.

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::cohorts::parse_tag_field;
use super::pages::{FieldErrors, Layout, NoticeQuery, countdown, when};
use super::session::{UiError, UiUser, html};
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::catalog::{TokenSummary, enrollment_token_summaries, enrollment_token_summary};
use crate::services::enrollment::{
    CreateEnrollmentToken, DEFAULT_EXPIRY_SECONDS, DEFAULT_MAX_USES, create_enrollment_token, revoke_enrollment_token,
};
use crate::services::products::list_products;
use crate::services::{ServiceError, Services};

/// `?notice=` codes this page understands (a fixed map: arbitrary text is never echoed).
const NOTICES: &[(&str, &str)] = &[(
    "revoked",
    "The enrollment token is revoked: no device can enroll with it; devices enrolled with it keep working.",
)];

/// The service's bounds, in the form's units.
const MAX_USES: i64 = 10_000_000;
const MAX_HOURS: i64 = 366 * 24;

/// The create form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    product: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    expires_hours: String,
    #[serde(default)]
    csrf: String,
}

impl Default for TokenForm {
    fn default() -> Self {
        Self {
            product: String::new(),
            name: String::new(),
            tags: String::new(),
            max_uses: DEFAULT_MAX_USES.to_string(),
            expires_hours: (DEFAULT_EXPIRY_SECONDS / 3600).to_string(),
            csrf: String::new(),
        }
    }
}

fn number(raw: &str, max: i64, what: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("Enter {what} as a whole number from 1 to {max}.")),
    }
}

impl TokenForm {
    /// The token to create, or what is wrong with the form.
    fn parse(&self, errors: &mut FieldErrors) -> Option<CreateEnrollmentToken> {
        if self.product.trim().is_empty() {
            errors.add("product", "Choose the product its devices belong to.");
        }
        let name = self.name.trim();
        if name.len() > 128 {
            errors.add("name", "At most 128 characters.");
        }
        let tags = parse_tag_field(&self.tags).map_err(|e| errors.add("tags", e)).ok();
        let max_uses =
            number(&self.max_uses, MAX_USES, "how many devices may enroll").map_err(|e| errors.add("max_uses", e));
        let hours =
            number(&self.expires_hours, MAX_HOURS, "the lifetime in hours").map_err(|e| errors.add("expires_hours", e));
        Some(CreateEnrollmentToken {
            product: self.product.trim().to_owned(),
            name: (!name.is_empty()).then(|| name.to_owned()),
            tags: tags?,
            expires_in_seconds: Some(hours.ok()? * 3600),
            max_uses: Some(max_uses.ok()?),
        })
        .filter(|_| errors.is_empty())
    }
}

struct TokenRow {
    id: i64,
    name: String,
    prefix: String,
    product: String,
    tags: String,
    uses: i64,
    max_uses: i64,
    expires: String,
    expires_in: String,
    state: &'static str,
    badge: &'static str,
    active: bool,
}

fn row(t: TokenSummary, now: i64) -> TokenRow {
    let token = t.token;
    let (state, badge) = match () {
        _ if token.revoked_at.is_some() => ("revoked", "badge-bad"),
        _ if token.expires_at <= now => ("expired", "badge-muted"),
        _ if token.uses >= token.max_uses => ("used up", "badge-muted"),
        _ => ("active", "badge-ok"),
    };
    let tags: Vec<String> = serde_json::from_str(&token.tags).unwrap_or_default();
    TokenRow {
        id: token.id,
        name: token.name,
        prefix: token.token_prefix,
        product: t.product,
        tags: tags.join(" "),
        uses: token.uses,
        max_uses: token.max_uses,
        expires: when(token.expires_at),
        expires_in: countdown(token.expires_at - now),
        active: state == "active",
        state,
        badge,
    }
}

/// A token just created: its secret, shown on this one answer.
struct Created {
    secret: String,
    name: String,
}

#[derive(Template)]
#[template(path = "ui/enrollment_tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    products: Vec<String>,
    form: TokenForm,
    errors: FieldErrors,
    message: Option<String>,
    notice: Option<&'static str>,
    created: Option<Created>,
}

async fn render_list(svc: &Services, user: &UiUser, page: Shown, status: StatusCode) -> Result<HttpResponse, UiError> {
    let now = svc.now_secs();
    let tokens = enrollment_token_summaries(svc).await?.into_iter().map(|t| row(t, now)).collect();
    let products = list_products(svc).await?.into_iter().map(|p| p.name).collect();
    let body = TokensPage {
        layout: Layout::of(user, "tokens"),
        tokens,
        products,
        form: page.form,
        errors: page.errors,
        message: page.message,
        notice: page.notice,
        created: page.created,
    }
    .render()?;
    // The answer that carries a secret must not be kept by any cache.
    Ok(HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// What the list page shows besides the tokens.
#[derive(Default)]
struct Shown {
    form: TokenForm,
    errors: FieldErrors,
    message: Option<String>,
    notice: Option<&'static str>,
    created: Option<Created>,
}

/// GET /ui/enrollment-tokens
pub async fn list(svc: web::Data<Services>, user: UiUser, q: web::Query<NoticeQuery>) -> Result<HttpResponse, UiError> {
    let notice = q.text(NOTICES);
    render_list(&svc, &user, Shown { notice, ..Shown::default() }, StatusCode::OK).await
}

/// POST /ui/enrollment-tokens: answers 200 with the secret, shown once.
pub async fn create(
    svc: web::Data<Services>,
    user: UiUser,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    let Some(input) = form.parse(&mut errors) else {
        let shown = Shown { form, errors, message: Some("The token was not created.".into()), ..Shown::default() };
        return render_list(&svc, &user, shown, StatusCode::BAD_REQUEST).await;
    };
    let (status, message) = match create_enrollment_token(&svc, &user.0.caller(), input).await {
        Ok((row, secret)) => {
            let shown = Shown { created: Some(Created { secret, name: row.name }), ..Shown::default() };
            return render_list(&svc, &user, shown, StatusCode::OK).await;
        }
        Err(ServiceError::NotFound { code: "unknown_product", message }) => {
            errors.add("product", "Choose one of the products.");
            (StatusCode::BAD_REQUEST, message)
        }
        Err(ServiceError::Invalid { message, .. } | ServiceError::Conflict { message, .. }) => {
            (StatusCode::BAD_REQUEST, message)
        }
        Err(e) => return Err(e.into()),
    };
    render_list(&svc, &user, Shown { form, errors, message: Some(message), ..Shown::default() }, status).await
}

#[derive(Template)]
#[template(path = "ui/enrollment_tokens_revoke.html")]
struct RevokePage {
    layout: Layout,
    token: TokenRow,
    message: Option<String>,
}

fn token_id(raw: &str) -> Result<i64, UiError> {
    raw.parse().map_err(|_| UiError::NotFound(format!("No enrollment token has id {raw:?}.")))
}

async fn render_revoke(
    svc: &Services,
    user: &UiUser,
    id: i64,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let token = row(enrollment_token_summary(svc, id).await?, svc.now_secs());
    Ok(html(status, RevokePage { layout: Layout::of(user, "tokens"), token, message }.render()?))
}

/// GET /ui/enrollment-tokens/{id}/revoke: the confirmation page.
pub async fn confirm(svc: web::Data<Services>, user: UiUser, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    user.require(Permission::ManageRollouts)?;
    render_revoke(&svc, &user, token_id(&path)?, None, StatusCode::OK).await
}

/// The confirmation form (CSRF token only).
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
}

/// POST /ui/enrollment-tokens/{id}/revoke
pub async fn revoke(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<String>,
    form: web::Form<ConfirmForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let id = token_id(&path)?;
    match revoke_enrollment_token(&svc, &user.0.caller(), id).await {
        Ok(()) => {
            Ok(HttpResponse::SeeOther().insert_header((LOCATION, "/ui/enrollment-tokens?notice=revoked")).finish())
        }
        Err(ServiceError::Conflict { message, .. }) => {
            render_revoke(&svc, &user, id, Some(message), StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/enrollment-tokens", [(Method::GET, web::to(list)), (Method::POST, web::to(create))]))
        .service(resource(
            "/enrollment-tokens/{id}/revoke",
            [(Method::GET, web::to(confirm)), (Method::POST, web::to(revoke))],
        ));
}

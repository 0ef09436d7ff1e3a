//! Approving and yanking a release from the UI: a confirmation page that says what will happen
//! (or why it cannot happen now), and the POST that calls the same services as
//! `POST /api/v1/products/{product}/releases/{version}/{approve|yank}`.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::super::pages::{CsrfForm, Layout, when};
use super::super::session::{UiError, UiUser, html, urlencode};
use crate::db::entities::{product, release};
use crate::services::auth::Permission;
use crate::services::catalog::release_rollouts;
use crate::services::products::{MANUFACTURER_SIGNED, get_product};
use crate::services::publish_release::get_release;
use crate::services::release_review::{approve_release, yank_release};
use crate::services::{ServiceError, Services};

/// What a release page may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// A second person approves it for rollouts.
    Approve,
    /// It is withdrawn from the image repository.
    Yank,
}

impl Review {
    /// The action's name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Yank => "yank",
        }
    }

    fn permission(self) -> Permission {
        match self {
            Self::Approve => Permission::ManageRollouts,
            Self::Yank => Permission::Withdraw,
        }
    }
}

/// Why `review` cannot be done to `release` by `user` now, in words for the confirmation page
/// and the release page (which then shows the reason instead of the button). The services
/// check the same things again under the signing lock.
pub fn blocked(review: Review, user: &UiUser, product: &product::Model, release: &release::Model) -> Option<String> {
    let target = &release.target_name;
    if let (Some(by), Some(at)) = (&release.yanked_by, release.yanked_at) {
        return Some(format!("{target} was yanked by {by} on {}.", when(at)));
    }
    match review {
        Review::Approve => {
            if let (Some(by), Some(at)) = (&release.approved_by, release.approved_at) {
                Some(format!("{target} was approved by {by} on {}.", when(at)))
            } else if !product.requires_approval {
                Some(format!("Product {} does not ask for a second person's approval.", product.name))
            } else if release.published_by == user.0.caller().name {
                Some("You published this release: another release manager must approve it.".to_owned())
            } else {
                None
            }
        }
        Review::Yank if product.signing_mode == MANUFACTURER_SIGNED => Some(format!(
            "Product {} is manufacturer-signed: only its key can withdraw a release, on the machine that holds \
             it: patchgate release yank --product {} --version {} --key <the product key>.",
            product.name, product.name, release.version
        )),
        Review::Yank => None,
    }
}

#[derive(Template)]
#[template(path = "ui/release_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    product: String,
    product_path: String,
    version: String,
    version_path: String,
    target_name: String,
    action: &'static str,
    label: &'static str,
    danger: bool,
    effects: Vec<String>,
    blocked: Option<String>,
    refusal: Option<String>,
}

async fn confirm_page(
    svc: &Services,
    user: &UiUser,
    review: Review,
    product: product::Model,
    release: release::Model,
    refusal: Option<String>,
) -> Result<ConfirmPage, UiError> {
    let target = release.target_name.clone();
    let effects = match review {
        Review::Approve => vec![
            format!("Rollouts of {target} may be created from then on."),
            format!("You are recorded as its approver; {} published it.", release.published_by),
        ],
        Review::Yank => {
            let open: Vec<String> = release_rollouts(svc, &release)
                .await?
                .into_iter()
                .filter(|r| matches!(r.state.as_str(), "draft" | "running" | "paused" | "halted"))
                .map(|r| r.id)
                .collect();
            let rollouts = match open.len() {
                0 => "No rollout of it is open.".to_owned(),
                1 => format!("Its open rollout {} assigns it to no more devices.", open[0]),
                n => format!("Its {n} open rollouts ({}) assign it to no more devices.", open.join(", ")),
            };
            vec![
                format!(
                    "The {} role is signed again without {target}: from then on no device can verify it, so none \
                     can install it.",
                    product.name
                ),
                rollouts,
                "Every assignment of it that is not installed yet is withdrawn at the device's next report.".to_owned(),
                "Devices that already run it keep running it until a rollout moves them.".to_owned(),
                "Its rollback floor no longer counts toward the product's security floor.".to_owned(),
                "A yank cannot be undone.".to_owned(),
            ]
        }
    };
    Ok(ConfirmPage {
        layout: Layout::of(user, "products"),
        blocked: blocked(review, user, &product, &release),
        product_path: urlencode(&product.name),
        product: product.name,
        version_path: urlencode(&release.version),
        version: release.version,
        target_name: target,
        action: review.name(),
        label: match review {
            Review::Approve => "Approve",
            Review::Yank => "Yank",
        },
        danger: review == Review::Yank,
        effects,
        refusal,
    })
}

/// GET /ui/products/{product}/releases/{version}/{approve|yank}
pub async fn confirm(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    review: Review,
) -> Result<HttpResponse, UiError> {
    user.require(review.permission())?;
    let (product, version) = path.into_inner();
    let product = get_product(&svc, &product).await?;
    let release = get_release(&svc, &product, &version).await?;
    let page = confirm_page(&svc, &user, review, product, release, None).await?;
    Ok(html(StatusCode::OK, page.render()?))
}

/// POST /ui/products/{product}/releases/{version}/{approve|yank}
pub async fn apply(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
    review: Review,
) -> Result<HttpResponse, UiError> {
    user.may_change(review.permission(), &form.csrf)?;
    let (product, version) = path.into_inner();
    let caller = user.0.caller();
    let done = match review {
        Review::Approve => approve_release(&svc, &caller, &product, &version).await,
        Review::Yank => yank_release(&svc, &caller, &product, &version).await,
    };
    match done {
        Ok(row) => {
            let notice = if review == Review::Approve { "approved" } else { "yanked" };
            let target =
                format!("/ui/products/{}/releases/{}?notice={notice}", urlencode(&product), urlencode(&row.version));
            Ok(HttpResponse::SeeOther().insert_header((LOCATION, target)).finish())
        }
        Err(e @ (ServiceError::Conflict { .. } | ServiceError::Invalid { .. })) => {
            let status = crate::http::error::ApiError::status_of(&e);
            let product = get_product(&svc, &product).await?;
            let release = get_release(&svc, &product, &version).await?;
            let page = confirm_page(&svc, &user, review, product, release, Some(e.to_string())).await?;
            Ok(html(status, page.render()?))
        }
        Err(e) => Err(e.into()),
    }
}

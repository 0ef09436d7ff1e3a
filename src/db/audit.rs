//! Queries on `audit_log`.

use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, QueryOrder, QuerySelect, Set};

use super::entities::audit::{self, ActiveModel, Entity, Model};

/// One audit entry: who did what to which object, before and after (JSON).
pub struct NewAudit<'a> {
    /// Unix seconds.
    pub at: i64,
    /// Token or user name.
    pub actor: &'a str,
    /// e.g. `product.create`.
    pub action: &'a str,
    /// e.g. `product:pump-x1`.
    pub object: &'a str,
    /// State before, JSON.
    pub before: Option<String>,
    /// State after, JSON.
    pub after: Option<String>,
}

/// Appends an audit entry.
pub async fn audit_insert(db: &impl ConnectionTrait, new: NewAudit<'_>) -> Result<Model, DbErr> {
    ActiveModel {
        at: Set(new.at),
        actor: Set(new.actor.to_owned()),
        action: Set(new.action.to_owned()),
        object: Set(new.object.to_owned()),
        before: Set(new.before),
        after: Set(new.after),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The newest `limit` entries.
pub async fn audit_list_recent(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_desc(audit::Column::Id).limit(limit).all(db).await
}

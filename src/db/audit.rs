//! Queries on `audit_log`.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

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
    new_row(new).insert(db).await
}

fn new_row(new: NewAudit<'_>) -> ActiveModel {
    ActiveModel {
        at: Set(new.at),
        actor: Set(new.actor.to_owned()),
        action: Set(new.action.to_owned()),
        object: Set(new.object.to_owned()),
        before: Set(new.before),
        after: Set(new.after),
        ..Default::default()
    }
}

/// Appends many audit entries in one statement, in order.
pub async fn audit_insert_many(db: &impl ConnectionTrait, new: Vec<NewAudit<'_>>) -> Result<(), DbErr> {
    if new.is_empty() {
        return Ok(());
    }
    Entity::insert_many(new.into_iter().map(new_row)).exec_without_returning(db).await?;
    Ok(())
}

/// Which entries to list; all optional, combined with AND.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Only entries older than this id (keyset paging, newest first).
    pub before: Option<i64>,
    /// Actor equals.
    pub actor: Option<String>,
    /// Action starts with (`rollout.` for every rollout action).
    pub action_prefix: Option<String>,
    /// Object equals.
    pub object: Option<String>,
    /// Only entries at or after this time (Unix seconds).
    pub at_from: Option<i64>,
    /// Only entries before this time (Unix seconds).
    pub at_until: Option<i64>,
}

/// The newest `limit` entries matching `filter`, newest first.
pub async fn audit_list(db: &impl ConnectionTrait, filter: &AuditFilter, limit: u64) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find();
    if let Some(before) = filter.before {
        query = query.filter(audit::Column::Id.lt(before));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(audit::Column::Actor.eq(actor.clone()));
    }
    if let Some(prefix) = &filter.action_prefix {
        query = query.filter(audit::Column::Action.like(super::like_pattern("", prefix, "%")));
    }
    if let Some(object) = &filter.object {
        query = query.filter(audit::Column::Object.eq(object.clone()));
    }
    if let Some(from) = filter.at_from {
        query = query.filter(audit::Column::At.gte(from));
    }
    if let Some(until) = filter.at_until {
        query = query.filter(audit::Column::At.lt(until));
    }
    query.order_by_desc(audit::Column::Id).limit(limit).all(db).await
}

/// The newest `limit` entries.
pub async fn audit_list_recent(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<Model>, DbErr> {
    audit_list(db, &AuditFilter::default(), limit).await
}

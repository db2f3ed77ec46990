//! The collector's HTTP API: `GET /api/alerts` (paginated, filtered like the CLI),
//! `GET /api/alerts/{id}`, and `/metrics`. Read-only; plain HTTP meant for a private
//! address or an authenticating proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::alert::{AlertStatus, AlertType, Severity};
use crate::metrics::Metrics;
use crate::store::{AlertQuery, AlertStore, SqliteAlerts};

#[derive(Clone)]
struct Ctx {
    db: Arc<PathBuf>,
    metrics: Arc<Metrics>,
}

/// Query parameters of `GET /api/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    /// RFC 3339, a duration ago (`2h`) or Unix seconds.
    pub since: Option<String>,
    /// Lowest severity: info, low, medium, high, critical.
    pub severity: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub actor: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl AlertParams {
    /// The store query these parameters ask for, or what is wrong with them.
    pub fn query(&self) -> Result<AlertQuery, String> {
        let mut q = AlertQuery {
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0),
            actor_id: self.actor.clone(),
            ..AlertQuery::default()
        };
        if let Some(s) = &self.since {
            q.since_us = Some(parse_time(s)?);
        }
        if let Some(s) = &self.severity {
            q.min_severity =
                Some(Severity::parse(s).ok_or_else(|| format!("unknown severity `{s}`"))?);
        }
        if let Some(t) = &self.kind {
            q.kind = Some(AlertType::parse(t).ok_or_else(|| format!("unknown alert type `{t}`"))?);
        }
        if let Some(s) = &self.status {
            q.status = Some(match s.as_str() {
                "open" | "resolved" | "false_positive" => AlertStatus::parse(s),
                _ => return Err(format!("unknown status `{s}`")),
            });
        }
        Ok(q)
    }
}

/// A time as the CLI and the API take it: RFC 3339 (`2026-11-25T10:00:00Z`), a duration
/// ago (`2h`, `7d`) or Unix seconds; in microseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .map_err(|_| format!("{s:?} is before 1970"));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(crate::store::now_us() - d.as_micros() as i64);
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339, a duration ago (2h, 7d) or Unix seconds"
    ))
}

pub async fn serve(
    addr: SocketAddr,
    db: PathBuf,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving the API on {addr}"))?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/{id}", get(one))
        .route("/metrics", get(prometheus))
        .with_state(Ctx {
            db: Arc::new(db),
            metrics,
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(local)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn list(
    State(ctx): State<Ctx>,
    params: Result<Query<AlertParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let q = match params.query() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let db = ctx.db.clone();
    let res = tokio::task::spawn_blocking(move || {
        let store = SqliteAlerts::open(&db)?;
        store.alerts(&q).map(|(a, total)| (a, total, q))
    })
    .await;
    match res {
        Ok(Ok((alerts, total, q))) => {
            let next =
                (q.offset + alerts.len() < total as usize).then_some(q.offset + alerts.len());
            Json(serde_json::json!({
                "alerts": alerts,
                "total": total,
                "offset": q.offset,
                "limit": q.limit,
                "next_offset": next,
            }))
            .into_response()
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn one(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let db = ctx.db.clone();
    let res = tokio::task::spawn_blocking(move || SqliteAlerts::open(&db)?.alert(&id)).await;
    match res {
        Ok(Ok(Some(a))) => Json(a).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such alert".into()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn prometheus(State(ctx): State<Ctx>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}

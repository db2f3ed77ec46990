//! The collector's HTTP API and the web UI on it (see docs/ui.md): alerts (list, one,
//! feedback), actors and their activity, the endpoint inventory, agents and their
//! capture coverage, and `/metrics`. Everything but `/login` and the style sheet needs
//! the API token ([`crate::auth`]); `/metrics` too unless `api_open_metrics` is set.
//! Plain HTTP: listen on localhost (the default) or put a TLS proxy in front.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::alert::{AlertStatus, AlertType, Feedback, Severity};
use crate::auth::ApiToken;
use crate::config::CollectorConfig;
use crate::geo::Geo;
use crate::metrics::Metrics;
use crate::store::{
    AlertQuery, AlertStore, EndpointOrder, EndpointQuery, EventStore, SqliteAlerts, SqliteStore,
};

#[derive(Clone)]
struct Ctx {
    db: Arc<PathBuf>,
    metrics: Arc<Metrics>,
    token: ApiToken,
    config: Arc<CollectorConfig>,
    /// The detectors' databases, to place an actor's addresses.
    geo: Arc<Mutex<Geo>>,
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
        let ago = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        return Ok(crate::store::now_us().saturating_sub(ago));
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339, a duration ago (2h, 7d) or Unix seconds"
    ))
}

/// What the API and UI need besides the store.
pub struct ApiOptions {
    pub token: ApiToken,
    pub config: CollectorConfig,
    pub geo: Geo,
}

pub async fn serve(
    addr: SocketAddr,
    db: PathBuf,
    metrics: Arc<Metrics>,
    options: ApiOptions,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving the API on {addr}"))?;
    let local = listener.local_addr()?;
    let open_metrics = options.config.api_open_metrics;
    let ctx = Ctx {
        db: Arc::new(db),
        metrics,
        token: options.token,
        config: Arc::new(options.config),
        geo: Arc::new(Mutex::new(options.geo)),
    };
    let mut protected = axum::Router::new()
        .route("/", get(crate::ui::index))
        .route("/ui/{file}", get(crate::ui::asset))
        .route("/api/alerts", get(list))
        .route("/api/alerts/{id}", get(one))
        .route("/api/alerts/{id}/resolve", post(resolve))
        .route("/api/actors/{key}", get(actor))
        .route("/api/actors/{key}/activity", get(activity))
        .route("/api/endpoints", get(endpoints))
        .route("/api/agents", get(agents));
    let mut open = axum::Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/app.css", get(crate::ui::stylesheet));
    if open_metrics {
        open = open.route("/metrics", get(prometheus));
    } else {
        protected = protected.route("/metrics", get(prometheus));
    }
    let app = protected
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            require_token,
        ))
        .merge(open)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(ctx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(local)
}

/// How a request proved it holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Bearer,
    Session,
}

fn credential(token: &ApiToken, headers: &HeaderMap) -> Option<Credential> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        && token.is_token(t)
    {
        return Some(Credential::Bearer);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| crate::auth::cookie(c, crate::auth::COOKIE))
        .any(|v| token.is_session(v))
        .then_some(Credential::Session)
}

/// Lets through requests with the token; the API answers others 401, the UI sends
/// them to the login page. A browser's writes must be JSON (which another site cannot
/// send without CORS), on top of the SameSite cookie.
async fn require_token(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/metrics";
    match credential(&ctx.token, req.headers()) {
        Some(Credential::Session)
            if !matches!(*req.method(), Method::GET | Method::HEAD)
                && !req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json")) =>
        {
            error(
                StatusCode::FORBIDDEN,
                "writes from a browser session must be JSON".into(),
            )
        }
        Some(_) => next.run(req).await,
        None if api => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send `Authorization: Bearer TOKEN` (the token is in DATA/api_token)".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tapline\""),
            );
            r
        }
        None => (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response(),
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Errors axum answers by itself (a bad path, a wrong method) are JSON under `/api/` too.
async fn json_errors(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if api && (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut out = error(
            status,
            status.canonical_reason().unwrap_or("error").to_lowercase(),
        );
        for (k, v) in r.headers() {
            if k == header::ALLOW || k == header::WWW_AUTHENTICATE {
                out.headers_mut().insert(k.clone(), v.clone());
            }
        }
        return out;
    }
    r
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such resource: {}", req.uri().path()),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page() -> Response {
    crate::ui::login(None, StatusCode::OK)
}

async fn login(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // Behind a TLS proxy the cookie is marked Secure, so it never travels in clear.
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    match form {
        Ok(Form(f)) if f.token.len() <= 256 && ctx.token.is_token(&f.token) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, ctx.token.session_cookie(https)),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        _ => crate::ui::login(Some("That is not the token."), StatusCode::UNAUTHORIZED),
    }
}

async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, crate::auth::logout_cookie()),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    ApiError(status, message).into_response()
}

/// A 4xx or 5xx answer: `{"error": "what went wrong"}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Runs a blocking store read; store errors are 503 (the store is busy or broken,
/// the request was fine).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, e.body_text())
}

async fn list(
    State(ctx): State<Ctx>,
    params: Result<Query<AlertParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return bad_query(e),
    };
    let q = match params.query() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let db = ctx.db.clone();
    let res = blocking(move || {
        let store = SqliteAlerts::open(&db).map_err(unavailable)?;
        store
            .alerts(&q)
            .map(|(a, total)| (a, total, q))
            .map_err(unavailable)
    })
    .await;
    match res {
        Ok((alerts, total, q)) => {
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
        Err(e) => e.into_response(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128
}

async fn one(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return error(StatusCode::BAD_REQUEST, "bad alert id".into());
    }
    let db = ctx.db.clone();
    let res = blocking(move || {
        SqliteAlerts::open(&db)
            .and_then(|s| s.alert(&id))
            .map_err(unavailable)
    })
    .await;
    match res {
        Ok(Some(a)) => Json(a).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such alert".into()),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/alerts/{id}/resolve` with `{"false_positive": bool, "reason"?, "days"?}`:
/// what `tapline-collector alerts resolve` does.
async fn resolve(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<Feedback>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let feedback = match body {
        Ok(Json(f)) => f,
        Err(e) => return error(e.status(), e.body_text()),
    };
    if !valid_id(&id) {
        return error(StatusCode::BAD_REQUEST, "bad alert id".into());
    }
    if feedback.days == Some(0) {
        return error(StatusCode::BAD_REQUEST, "days must be at least 1".into());
    }
    let db = ctx.db.clone();
    let default_days = ctx.config.detect.suppress_days;
    let res = blocking(move || {
        let mut store = SqliteAlerts::open(&db).map_err(unavailable)?;
        crate::alert::resolve(
            &mut store,
            &id,
            &feedback,
            default_days,
            crate::store::now_us(),
        )
        .map_err(unavailable)
    })
    .await;
    match res {
        Ok(Some((alert, suppression))) => {
            crate::log!(
                "alert {} marked {} from the API",
                alert.id,
                alert.status.name()
            );
            Json(serde_json::json!({ "alert": alert, "suppression": suppression })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such alert".into()),
        Err(e) => e.into_response(),
    }
}

fn valid_actor_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 512 || key.chars().any(char::is_control) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "bad actor key".into()));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorParams {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/actors/{key}`: identities, addresses and countries per day, endpoints
/// (from the stored events), and the alerts on the actor with their scores (its risk
/// history).
async fn actor(
    State(ctx): State<Ctx>,
    Path(key): Path<String>,
    params: Result<Query<ActorParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return bad_query(e),
    };
    if let Err(e) = valid_actor_key(&key) {
        return e.into_response();
    }
    let times = (|| -> Result<_, String> {
        Ok((
            params.since.as_deref().map(parse_time).transpose()?,
            params.until.as_deref().map(parse_time).transpose()?,
        ))
    })();
    let (since, until) = match times {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let db = ctx.db.clone();
    let geo = ctx.geo.clone();
    let k = key.clone();
    let res = blocking(move || {
        let key = k;
        let store = SqliteStore::open_read_only(&db).map_err(unavailable)?;
        let view = {
            let mut geo = geo.lock().unwrap_or_else(|p| p.into_inner());
            crate::views::actor_view(&store, &mut geo, &key, since, until).map_err(unavailable)?
        };
        let alerts = SqliteAlerts::open(&db)
            .and_then(|s| {
                s.alerts(&AlertQuery {
                    actor_id: Some(key.clone()),
                    limit: 200,
                    ..AlertQuery::default()
                })
            })
            .map_err(unavailable)?;
        Ok((view, alerts))
    })
    .await;
    match res {
        Ok((None, (alerts, _))) if alerts.is_empty() => error(
            StatusCode::NOT_FOUND,
            "no events or alerts of this actor".into(),
        ),
        Ok((view, (alerts, total))) => {
            let risk: Vec<serde_json::Value> = alerts
                .iter()
                .rev()
                .map(|a| {
                    serde_json::json!({
                        "ts_us": a.first_seen_us,
                        "score": a.score,
                        "severity": a.severity,
                        "type": a.kind,
                        "alert_id": a.id,
                    })
                })
                .collect();
            let brief: Vec<serde_json::Value> = alerts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "id": a.id,
                        "type": a.kind,
                        "severity": a.severity,
                        "score": a.score,
                        "status": a.status,
                        "endpoint": a.endpoint,
                        "first_seen_us": a.first_seen_us,
                        "summary": a.explanation.summary,
                    })
                })
                .collect();
            let display = alerts.first().map(|a| &a.actor);
            Json(serde_json::json!({
                "key": key,
                "display": display,
                "activity": view,
                "alerts": brief,
                "alerts_total": total,
                "risk": risk,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityParams {
    around: Option<String>,
    hours: Option<u32>,
    step: Option<String>,
}

/// `GET /api/actors/{key}/activity?around=TIME&hours=24&step=hour|minute`.
async fn activity(
    State(ctx): State<Ctx>,
    Path(key): Path<String>,
    params: Result<Query<ActivityParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return bad_query(e),
    };
    if let Err(e) = valid_actor_key(&key) {
        return e.into_response();
    }
    let Some(around) = params.around.as_deref() else {
        return error(
            StatusCode::BAD_REQUEST,
            "`around` is required: RFC 3339, a duration ago or Unix seconds".into(),
        );
    };
    let around = match parse_time(around) {
        // Event times are held to 1970-2106 (as the detectors hold them).
        Ok(t) if (0..=i64::from(u32::MAX) * 1_000_000).contains(&t) => t,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`around` is outside 1970-2106".into(),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let step = match params.step.as_deref().map(crate::views::Step::parse) {
        None => crate::views::Step::Hour,
        Some(Some(s)) => s,
        Some(None) => return error(StatusCode::BAD_REQUEST, "step is hour or minute".into()),
    };
    let hours = params.hours.unwrap_or(match step {
        crate::views::Step::Hour => 48,
        crate::views::Step::Minute => 2,
    });
    if hours == 0 || hours > step.max_hours() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("hours is 1 to {} at this step", step.max_hours()),
        );
    }
    let db = ctx.db.clone();
    let res = blocking(move || {
        let store = SqliteStore::open_read_only(&db).map_err(unavailable)?;
        crate::views::activity(&store, &key, around, hours, step).map_err(unavailable)
    })
    .await;
    match res {
        Ok(a) => Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointParams {
    method: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /api/endpoints`: the inventory with each endpoint's sensitivity.
async fn endpoints(
    State(ctx): State<Ctx>,
    params: Result<Query<EndpointParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return bad_query(e),
    };
    let order = match p.sort.as_deref() {
        None | Some("events") => EndpointOrder::Events,
        Some("first_seen") => EndpointOrder::FirstSeen,
        Some("template") => EndpointOrder::Template,
        Some(s) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown sort `{s}`: events, first_seen or template"),
            );
        }
    };
    if p.method.as_ref().is_some_and(|m| m.len() > 16)
        || p.q.as_ref().is_some_and(|q| q.len() > 256)
    {
        return error(StatusCode::BAD_REQUEST, "filter too long".into());
    }
    let q = EndpointQuery {
        method: p.method.filter(|m| !m.is_empty()),
        contains: p.q.filter(|q| !q.is_empty()),
        order,
        limit: p.limit.unwrap_or(200).clamp(1, 1000),
        offset: p.offset.unwrap_or(0).min(1 << 30),
    };
    let db = ctx.db.clone();
    let overrides = ctx.config.detect.sensitivity.clone();
    let res = blocking(move || {
        let store = SqliteStore::open_read_only(&db).map_err(unavailable)?;
        store.endpoints(&q).map(|r| (r, q)).map_err(unavailable)
    })
    .await;
    match res {
        Ok(((rows, total), q)) => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let traits = crate::score::EndpointTraits {
                        events: r.events.min(u64::from(u32::MAX)) as u32,
                        personal: 0,
                    };
                    let (sensitivity, why) =
                        crate::score::sensitivity(&r.method, &r.template, &traits, &overrides);
                    let days = ((r.last_us - r.first_us) as f64 / 86_400e6).max(1.0 / 24.0);
                    serde_json::json!({
                        "method": r.method,
                        "template": r.template,
                        "first_us": r.first_us,
                        "last_us": r.last_us,
                        "events": r.events,
                        "events_per_day": (r.events as f64 / days).round(),
                        "sensitivity": (sensitivity * 100.0).round() / 100.0,
                        "sensitivity_reasons": why,
                    })
                })
                .collect();
            let next = (q.offset + list.len() < total as usize).then_some(q.offset + list.len());
            Json(serde_json::json!({
                "endpoints": list,
                "total": total,
                "offset": q.offset,
                "limit": q.limit,
                "next_offset": next,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /api/agents`: each agent's connection, delivery, lag and capture coverage.
async fn agents(State(ctx): State<Ctx>) -> Response {
    let db = ctx.db.clone();
    let res = blocking(move || {
        SqliteStore::open_read_only(&db)
            .and_then(|s| s.agents())
            .map_err(unavailable)
    })
    .await;
    match res {
        Ok(rows) => {
            let now = crate::store::now_us();
            let list: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|r| {
                    let lag_s = r.last_event_us.map(|t| ((now - t) / 1_000_000).max(0));
                    let seen_s = ((now - r.last_seen) / 1_000_000).max(0);
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    v["lag_s"] = serde_json::json!(lag_s);
                    v["last_seen_ago_s"] = serde_json::json!(seen_s);
                    v["dropped_frames"] =
                        serde_json::json!(r.coverage.as_ref().map(|c| c.dropped()));
                    v
                })
                .collect();
            Json(serde_json::json!({ "agents": list })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn prometheus(State(ctx): State<Ctx>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}

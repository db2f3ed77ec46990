//! The web UI's files, compiled into the binary (`collector/ui/`): one page of plain
//! HTML, CSS and JavaScript that reads the JSON API, with charts drawn as inline SVG.
//! Nothing is built or fetched at install time.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const CHART_JS: &str = include_str!("../ui/chart.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const LOGIN: &str = include_str!("../ui/login.html");

fn file(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

pub async fn stylesheet() -> Response {
    file(APP_CSS, "text/css; charset=utf-8")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file(APP_JS, "text/javascript; charset=utf-8"),
        "chart.js" => file(CHART_JS, "text/javascript; charset=utf-8"),
        "app.css" => file(APP_CSS, "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The login page, with a message after a wrong token.
pub fn login(message: Option<&str>, status: StatusCode) -> Response {
    let note = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        LOGIN.replace("<!--MESSAGE-->", &note),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

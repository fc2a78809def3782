//! `GET /`: the node's web page, one self-contained HTML file (inline CSS and JS, nothing
//! loaded from elsewhere, no build step). It holds no data and needs no token to load; every
//! API call it makes sends the operator token the user gives it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::AppState;

/// The page.
pub const INDEX_HTML: &str = include_str!("web/index.html");

/// The page's own rules for the browser: it loads nothing from elsewhere, talks only to this
/// node, and may not be framed (its buttons answer approvals).
const INDEX_CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, INDEX_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

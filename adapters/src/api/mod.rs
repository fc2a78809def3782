//! The `/v1` API and the node's other routes, one file per resource, each a `router()`;
//! [`router`] merges them with the layers every route shares (JSON errors, the request
//! deadline, the body limit). `docs/openapi.json` documents every route in [`ROUTES`] (a test
//! keeps the two in step).

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod cluster;
pub mod events;
pub mod health;
pub mod policy;
pub mod pools;
pub mod steps;
pub mod web;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::auth::Operator;
use crate::http::{deadline, error, AppState};

/// The API's OpenAPI document (kept in the repository as `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every route the node serves, as written in the OpenAPI document.
pub const ROUTES: [&str; 29] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    "/v1/agents",
    "/v1/agents/{id}",
    "/v1/agents/{id}/steps",
    "/v1/agents/{id}/steps/{step}",
    "/v1/agents/{id}/steps/{step}/outcome",
    "/v1/agents/{id}/halt",
    "/v1/agents/{id}/resume",
    "/v1/agents/{id}/heartbeat",
    "/v1/pools",
    "/v1/pools/{path}",
    "/v1/approvals",
    "/v1/approvals/{id}",
    "/v1/policy",
    "/v1/events",
    "/v1/audit",
    "/v1/audit/keys",
    "/v1/cluster",
    "/v1/cluster/prepare-offline",
    "/proxy/{tool}",
    "/proxy/{tool}/{path}",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/mcp",
];

/// Every route, with the shared layers: plain-text framework errors become JSON, a request
/// longer than the deadline gets 408, a body over `max_body_bytes` gets 413.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(health::router())
        .merge(web::router())
        .merge(agents::router())
        .merge(steps::router())
        .merge(pools::router())
        .merge(cluster::router())
        .merge(approvals::router())
        .merge(policy::router())
        .merge(events::router())
        .merge(audit::router())
        .merge(crate::proxy::tool::router())
        .merge(crate::proxy::llm::router())
        .merge(crate::proxy::mcp::router())
        .route("/v1/openapi.json", get(openapi))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(
            crate::http::body::refuse_other_charsets,
        ))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(
            crate::http::body::close_if_unread,
        ))
        .with_state(state)
}

async fn openapi(_: Operator) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_valid_json_and_names_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for route in ROUTES {
            assert!(
                doc["paths"].get(route).is_some(),
                "{route} is missing from docs/openapi.json"
            );
        }
        let documented = doc["paths"].as_object().unwrap().len();
        let served: std::collections::BTreeSet<&str> = ROUTES.iter().copied().collect();
        assert_eq!(
            documented,
            served.len(),
            "docs/openapi.json documents routes the node does not serve"
        );
    }
}

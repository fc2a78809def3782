//! The enforcement proxy: the one door from agents to their tools and models, so no agent can
//! skip the check. [`tool`] serves `ANY /proxy/{tool}/...`; the LLM and MCP routes build on
//! the same parts: [`forward`] (the outbound client and header hygiene), [`settle`] (every
//! forwarded step settled exactly once), [`parked`] (retries of approved requests).
//!
//! Upstreams come from the node's config (`upstreams:`, with credentials that never leave the
//! node); a policy tool's `upstream:` names one of them, or is a plain `http(s)://` URL
//! (forwarded without added headers). Each upstream admits at most its `max_in_flight`
//! requests at once; past that the proxy answers 503 `upstream_busy` before deciding anything.

pub mod forward;
pub mod gate;
pub mod halts;
pub mod judge;
pub mod llm;
pub mod mcp;
pub mod orphans;
pub mod parked;
pub mod settle;
pub mod tool;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warden_actors::policy::model::ToolDef;
use warden_actors::ActionClass;
use warden_supervisor::Swarm;

use crate::config::{NodeConfig, Price, Upstream, UpstreamKind};
use crate::http::error::ApiError;
use crate::limits::{UPSTREAM_IN_FLIGHT_MAX_DEFAULT, UPSTREAM_TIMEOUT_MS_DEFAULT};

/// True for the paths the proxy serves.
pub fn is_proxied(path: &str) -> bool {
    path.starts_with("/proxy/")
        || matches!(
            path,
            "/v1/chat/completions" | "/v1/responses" | "/v1/messages"
        )
}

/// Marks an answer that is an upstream's own (the node's error rewriting leaves it alone).
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

/// One upstream, ready to forward to.
pub struct Route {
    /// Its name in the config (or its URL, for an upstream a policy names by URL).
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// What it speaks.
    pub kind: UpstreamKind,
    /// Headers added to every forwarded request (its credentials).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its credentials' forms, looked for in its answers' headers.
    pub secrets: forward::Secrets,
    /// Deadline for its answer's head.
    pub timeout: Duration,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Chat Completions requests also get `max_tokens` (the config's `write_max_tokens`).
    pub write_max_tokens: bool,
}

impl Route {
    fn new(u: &Upstream) -> Result<Self, String> {
        let headers = u
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("upstream `{}`: {k:?} is not a header name", u.name))?;
                let mut value = HeaderValue::from_str(v).map_err(|_| {
                    format!(
                        "upstream `{}`: header {k} has a value that is not valid in a header",
                        u.name
                    )
                })?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            name: u.name.clone(),
            url: u.url.clone(),
            kind: u.kind,
            secrets: forward::Secrets::new(&headers)
                .map_err(|e| format!("upstream `{}`: {e}", u.name))?,
            headers,
            timeout: Duration::from_millis(u.timeout_ms),
            in_flight: Arc::new(Semaphore::new(u.max_in_flight)),
            max_in_flight: u.max_in_flight,
            write_max_tokens: u.write_max_tokens,
        })
    }

    /// An in-flight slot, held until the answer is done; 503 `upstream_busy` when all are
    /// taken (nothing was decided or charged then).
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                format!(
                    "upstream `{}` already has {} requests in flight; retry shortly",
                    self.name, self.max_in_flight
                ),
            )
        })
    }

    /// Records how long the upstream took to start answering.
    pub fn observe(&self, took: Duration) {
        metrics::histogram!("warden_proxy_upstream_duration_seconds", "upstream" => self.name.clone())
            .record(took.as_secs_f64());
    }
}

/// The parked requests, swept every [`parked::SWEEP_EVERY`] on the current runtime.
fn start_sweep(swarm: &Swarm) -> Arc<parked::Parked> {
    let parked = Arc::new(parked::Parked::default());
    let (p, swarm) = (parked.clone(), swarm.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(parked::SWEEP_EVERY);
        loop {
            every.tick().await;
            p.sweep(&swarm, crate::limits::APPROVED_RETRY_WINDOW).await;
        }
    });
    parked
}

/// The proxy's state, shared by its routes.
pub struct Proxy {
    /// The outbound clients (one per thread).
    pub client: forward::Clients,
    routes: HashMap<String, Arc<Route>>,
    by_url: DashMap<String, Arc<Route>>,
    /// Model prices, by model name.
    pub prices: HashMap<String, Price>,
    /// Requests parked for approval, awaiting their retry.
    pub parked: Arc<parked::Parked>,
    /// Halt watches of agents with live streams.
    pub halts: halts::HaltWatch,
    /// Sessions with the MCP upstreams, by name.
    mcp_sessions: DashMap<String, Arc<mcp::upstream::Session>>,
    /// Largest request body read, bytes.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    swarm: Swarm,
}

impl Proxy {
    /// The proxy of a node with `config`, governing `swarm`.
    ///
    /// # Errors
    /// An upstream header that is not a valid HTTP header.
    pub fn new(config: &NodeConfig, swarm: Swarm) -> Result<Self, String> {
        let routes = config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), Arc::new(Route::new(u)?))))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            client: forward::Clients,
            routes,
            by_url: DashMap::new(),
            prices: config
                .prices
                .iter()
                .map(|p| (p.model.clone(), p.clone()))
                .collect(),
            parked: start_sweep(&swarm),
            halts: halts::HaltWatch::start(&swarm),
            mcp_sessions: DashMap::new(),
            max_body_bytes: config.max_body_bytes,
            body_timeout: Duration::from_millis(config.request_timeout_ms),
            swarm,
        })
    }

    /// The configured upstreams of a kind, in name order.
    pub fn routes_of(&self, kind: UpstreamKind) -> Vec<Arc<Route>> {
        let mut out: Vec<Arc<Route>> = self
            .routes
            .values()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The session with MCP upstream `name`.
    pub fn mcp_session(&self, name: &str) -> Arc<mcp::upstream::Session> {
        self.mcp_sessions
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The configured upstream `name`.
    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).cloned()
    }

    /// Where a tool's calls go, and its action class, from the policy's registry.
    ///
    /// # Errors
    /// 404 `unknown_tool` (not in the registry: nothing is decided), 404 `no_upstream` (the
    /// registry gives it none), 502 `unknown_upstream` (it names an upstream the node's config
    /// does not have).
    pub fn tool_route(&self, tool: &str) -> Result<(Arc<Route>, ActionClass), ApiError> {
        let (action, upstream) = self
            .registry(tool, |def| (def.action, def.upstream.clone()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_tool",
                    format!("the policy's registry has no tool `{tool}`; nothing was decided"),
                )
            })?;
        let upstream = upstream.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_upstream",
                format!("tool `{tool}` has no `upstream` in the policy's registry; the proxy cannot forward it"),
            )
        })?;
        let route = match self.routes.get(upstream) {
            Some(r) => r.clone(),
            None if upstream.starts_with("http://") || upstream.starts_with("https://") => {
                self.url_route(upstream)
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "unknown_upstream",
                    format!("tool `{tool}` names upstream `{upstream}`, which the node's config does not have"),
                ))
            }
        };
        if route.kind != UpstreamKind::Http {
            // An LLM or MCP upstream is reached through its own route, which bounds, meters
            // and judges what the tool proxy cannot (a model's cost, its tool calls).
            let door = match route.kind {
                UpstreamKind::OpenAi => "/v1/chat/completions or /v1/responses",
                UpstreamKind::Anthropic => "/v1/messages",
                _ => "/mcp",
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "wrong_api",
                format!("tool `{tool}`'s upstream `{upstream}` is not a plain HTTP tool; call it through {door}"),
            ));
        }
        Ok((route, action))
    }

    /// What `f` reads off the registry entry of `tool` in the policy in force, if it has one.
    fn registry<R>(&self, tool: &str, f: impl FnOnce(&ToolDef) -> R) -> Option<R> {
        let set = self.swarm.policy_set()?;
        let def = set.doc().tools.iter().find(|t| &*t.name == tool)?;
        Some(f(def))
    }

    /// The route of an upstream a policy names by URL (no added headers, default timeout).
    fn url_route(&self, url: &str) -> Arc<Route> {
        self.by_url
            .entry(url.to_string())
            .or_insert_with(|| {
                let u = Upstream {
                    name: url.to_string(),
                    url: url.to_string(),
                    kind: UpstreamKind::Http,
                    headers: Vec::new(),
                    timeout_ms: UPSTREAM_TIMEOUT_MS_DEFAULT,
                    max_in_flight: UPSTREAM_IN_FLIGHT_MAX_DEFAULT,
                    write_max_tokens: false,
                };
                Arc::new(Route::new(&u).expect("no headers to refuse"))
            })
            .clone()
    }

    /// A tool's action class in the registry, if it is listed.
    pub fn tool_action(&self, tool: &str) -> Option<ActionClass> {
        self.registry(tool, |def| def.action)
    }

    /// The policy's name of a tool called `name`: `mcp.<server>.<tool>` for a tool the MCP
    /// gateway lists as `<server>__<tool>`, else `name` itself.
    pub fn step_tool(&self, name: &str) -> String {
        match mcp::split_name(&self.routes_of(UpstreamKind::Mcp), name) {
            Some((route, tool)) => format!("mcp.{}.{tool}", route.name),
            None => name.to_string(),
        }
    }

    /// True when the registry lists `tool` with `key` among its declared args.
    pub fn tool_declares(&self, tool: &str, key: &str) -> bool {
        self.registry(tool, |def| {
            def.args
                .as_ref()
                .is_some_and(|a| a.iter().any(|k| k == key))
        })
        .unwrap_or(false)
    }

    /// The metric label of a tool: its name when the registry has it (a bounded set), else
    /// `unknown` (a caller cannot mint label values).
    pub fn tool_label(&self, tool: &str) -> String {
        if self.registry(tool, |_| ()).is_some() {
            tool.to_string()
        } else {
            "unknown".to_string()
        }
    }
}

//! Talking to a running node as its operator: the connection flags shared by `warden agents`
//! and `warden approvals`, and the one HTTP client of the binary.
//!
//! The client is deliberately small (JSON in, JSON out, the node's error message on failure)
//! so that the typed client of the `/v1` API can replace it in this one place.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// How long one request to the node may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the node (a full agent listing can be large).
const ANSWER_BYTES_MAX: u64 = 256 << 20;

/// Where the node is, how to prove you are its operator, and how to print its answers.
#[derive(clap::Args, Debug)]
pub struct Remote {
    /// The node's URL.
    #[arg(
        long,
        env = "WARDEN_NODE",
        default_value = "http://127.0.0.1:7700",
        global = true,
        help_heading = "Node"
    )]
    pub node: String,
    /// The operator token (see DATA_DIR/operator.token on the node).
    #[arg(
        long,
        env = "WARDEN_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Node"
    )]
    pub token: Option<String>,
    /// Print the node's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A connection to one node with the operator token.
pub struct Client {
    http: ureq::Agent,
    /// The node's URL as given (for messages).
    node: String,
    /// The node's URL without a trailing slash.
    base: String,
    /// `Bearer <operator token>`.
    auth: String,
}

impl Client {
    /// A client for the node `remote` names; fails when no operator token was given.
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let token = remote.token.as_deref().context(
            "no operator token: pass --token or set WARDEN_OPERATOR_TOKEN (the node keeps it in DATA_DIR/operator.token)",
        )?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(Client {
            http,
            node: remote.node.clone(),
            base: remote.node.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
        })
    }

    /// `GET path` (path and query, e.g. `/v1/agents?state=halted`).
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let sent = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .call();
        self.answer("GET", path, sent)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .send_json(body);
        self.answer("POST", path, sent)
    }

    /// The node's JSON answer, or an error: the node unreachable, or its status (4xx, 5xx)
    /// with the message of its `{"error": {"code", "message"}}` body.
    fn answer(
        &self,
        method: &str,
        path: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut resp = sent.with_context(|| format!("cannot reach the node at {}", self.node))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(ANSWER_BYTES_MAX)
            .read_to_string()
            .with_context(|| format!("reading the node's answer to {method} {path}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let msg = value["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("the node answered {status}: {msg}");
        }
        Ok(value)
    }
}

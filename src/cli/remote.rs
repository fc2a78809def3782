//! Talking to a running node as its operator: the connection flags shared by `warden agents`
//! and `warden approvals`, over the typed client of the `/v1` API.

use anyhow::Context;
use serde_json::Value;
use warden::adapters::client::{self, Body};

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

/// A connection to one node with the operator token, over the typed client of the `/v1` API
/// ([`warden::adapters::client`]).
pub struct Client(client::Client);

impl Client {
    /// A client for the node `remote` names; fails when no operator token was given.
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let token = remote.token.as_deref().context(
            "no operator token: pass --token or set WARDEN_OPERATOR_TOKEN (the node keeps it in DATA_DIR/operator.token)",
        )?;
        Ok(Client(client::Client::new(remote.node.clone(), token)))
    }

    /// `GET path` (path and query, e.g. `/v1/agents?state=halted`): the node's JSON answer,
    /// or an error naming the node unreachable, or its status and message.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.0.ok("GET", path, Body::None)?.body)
    }

    /// `POST path` with a body of the API's wire types
    /// ([`warden::adapters::http::wire`]).
    pub fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Value> {
        Ok(self.0.ok("POST", path, Body::json(body))?.body)
    }
}

//! Who may call what. Agents authenticate with the token they got at registration and act
//! only as themselves; every operator endpoint needs the operator token. Tokens are
//! `Authorization: Bearer <token>`; the node keeps only their BLAKE3 digests (and journals the
//! digest with the registration, so tokens survive a restart).
//!
//! Handlers state what they need by taking an extractor: [`Operator`], [`AgentCaller`] (the
//! agent named by the path's `{id}`, with its own token) or [`AgentOrOperator`].

use std::path::Path;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use dashmap::DashMap;
use warden_actors::AgentId;

use super::error::ApiError;
use super::AppState;
use crate::limits::{OPERATOR_TOKEN_LEN_MIN, TOKEN_RANDOM_BYTES};

/// The node's tokens: the operator's, and each agent's digest.
pub struct Auth {
    operator: String,
    /// agent -> BLAKE3 digest of its token (tokens themselves are never stored).
    agents: DashMap<AgentId, String>,
    /// digest -> agent, so telling a known caller from a stranger is one lookup, not a scan.
    owners: DashMap<String, AgentId>,
}

impl Auth {
    /// Tokens with the given operator token and no agents yet.
    pub fn new(operator: String) -> Self {
        Self {
            operator,
            agents: DashMap::new(),
            owners: DashMap::new(),
        }
    }

    /// Records an agent's token digest (at registration, and at recovery from the journal).
    pub fn insert_digest(&self, agent: AgentId, digest: String) {
        self.agents.insert(agent.clone(), digest.clone());
        self.owners.insert(digest, agent);
    }

    /// The agent whose token `token` is, if any (the proxy's callers name no agent in the
    /// path: the token is who they are).
    pub fn agent_of_token(&self, token: &str) -> Option<AgentId> {
        self.owners
            .get(&token_digest(token))
            .map(|a| a.value().clone())
    }

    /// True when `token` is the operator token.
    fn is_operator(&self, token: &str) -> bool {
        same(token, &self.operator)
    }

    /// The operator, or 401.
    pub fn operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if self.is_operator(t) => Ok(()),
            _ => Err(unauthorized()),
        }
    }

    /// The agent `id` itself (or, with `operator_too`, the operator). Unknown tokens learn
    /// nothing, not even whether the agent exists (401); known callers are told whether the
    /// agent is missing (404, operator only) or simply not theirs (403).
    pub fn agent(
        &self,
        headers: &HeaderMap,
        id: &AgentId,
        operator_too: bool,
        exists: impl FnOnce() -> bool,
    ) -> Result<(), ApiError> {
        let token = bearer(headers).ok_or_else(unauthorized)?;
        let operator = self.is_operator(token);
        if operator_too && operator {
            return Ok(());
        }
        let digest = token_digest(token);
        if self
            .agents
            .get(id)
            .is_some_and(|t| same(&digest, t.value()))
        {
            return Ok(());
        }
        if !operator && !self.owners.contains_key(&digest) {
            Err(unauthorized())
        } else if operator && !exists() {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                format!("no agent {id}"),
            ))
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token may not act as agent {id}"),
            ))
        }
    }
}

/// The request carries the operator token.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.operator(&parts.headers).map(|()| Operator)
    }
}

/// The agent named by the path's `{id}`, calling with its own token.
pub struct AgentCaller(pub AgentId);

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_agent(parts, state).await?;
        state.auth.agent(&parts.headers, &id, false, || {
            state.swarm.agent(&id).is_some()
        })?;
        Ok(AgentCaller(id))
    }
}

/// The agent a proxy request comes from, known by its token alone: `Authorization: Bearer
/// <token>` (OpenAI's clients send their API key so) or `x-api-key: <token>` (Anthropic's).
/// A token that is no agent's gets 401 `unauthorized`, the operator's included: the operator
/// takes no steps; so does a request naming two tokens (either header twice, or the two
/// headers with different tokens): which agent it is must not depend on which one is read.
pub struct TokenAgent(pub AgentId);

impl FromRequestParts<AppState> for TokenAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        proxy_token(&parts.headers)?
            .and_then(|t| state.auth.agent_of_token(t))
            .map(TokenAgent)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send the agent's token as `Authorization: Bearer <token>` or `x-api-key: <token>`",
                )
            })
    }
}

/// The agent named by the path's `{id}` with its own token, or the operator.
pub struct AgentOrOperator(pub AgentId);

impl FromRequestParts<AppState> for AgentOrOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_agent(parts, state).await?;
        state.auth.agent(&parts.headers, &id, true, || {
            state.swarm.agent(&id).is_some()
        })?;
        Ok(AgentOrOperator(id))
    }
}

/// The path's `{id}` as an agent id (400 `bad_agent_id` when it is not one).
async fn path_agent(parts: &mut Parts, state: &AppState) -> Result<AgentId, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let raw = params
        .iter()
        .find_map(|(k, v)| (k == "id").then(|| v.to_string()))
        .ok_or_else(|| ApiError::internal("route without an {id} parameter"))?;
    agent_id(&raw)
}

/// Parses an agent id from the API (400 `bad_agent_id`).
pub fn agent_id(raw: &str) -> Result<AgentId, ApiError> {
    AgentId::new(raw).map_err(|e| ApiError::bad_request("bad_agent_id", e.to_string()))
}

/// The one token a proxy request names, if any; 401 when it names two.
fn proxy_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let ambiguous = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the request names more than one token (`Authorization` or `x-api-key` twice, or the two with different tokens); send the agent's token once",
        )
    };
    let once = |name: header::HeaderName| -> Result<Option<&str>, ApiError> {
        let mut all = headers.get_all(name).iter();
        let first = all.next();
        if all.next().is_some() {
            return Err(ambiguous());
        }
        Ok(first.and_then(|v| v.to_str().ok()))
    };
    let bearer = once(header::AUTHORIZATION)?.and_then(bearer_token);
    let key = once(header::HeaderName::from_static("x-api-key"))?;
    match (bearer, key) {
        (Some(a), Some(k)) if a != k => Err(ambiguous()),
        (a, k) => Ok(a.or(k)),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of `Bearer <token>`; the scheme's name is compared without case (RFC 9110
/// §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token: send Authorization: Bearer <token>",
    )
}

/// A new random token: [`TOKEN_RANDOM_BYTES`] bytes from the OS, as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    warden_actors::ids::hex(&bytes)
}

/// The hex BLAKE3 digest of a token: the node keeps and journals digests, never tokens.
pub fn token_digest(token: &str) -> String {
    warden_actors::ids::hex(blake3::hash(token.as_bytes()).as_bytes())
}

/// Why the operator token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token given or kept is unusable.
    #[error("{0}")]
    Refused(String),
    /// The token file could not be read or made.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The operator token and where it came from (for the start-up line): `given` (the config or
/// `WARDEN_OPERATOR_TOKEN`) if any, else `DATA_DIR/operator.token`, made (mode 0600) if absent.
/// A kept file readable by others, or a short token, is refused, never silently replaced.
pub fn operator_token(
    given: Option<&str>,
    data_dir: &Path,
) -> Result<(String, String), TokenError> {
    if let Some(t) = given {
        check_len(t, "the operator token")?;
        return Ok((
            t.to_string(),
            "WARDEN_OPERATOR_TOKEN or the config file".into(),
        ));
    }
    let path = data_dir.join("operator.token");
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| TokenError::Io { what, path, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            check_private(&path).map_err(io("reading"))??;
            let t = t.trim().to_string();
            check_len(&t, &path.display().to_string()).map_err(|_| {
                TokenError::Refused(format!(
                    "{} holds a token shorter than {OPERATOR_TOKEN_LEN_MIN} characters or with characters other than visible ASCII; remove the file to get a new one",
                    path.display()
                ))
            })?;
            Ok((t, path.display().to_string()))
        }
        // Only a missing file is created; any other read failure is an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token();
            write_private(data_dir, &path, &token).map_err(io("creating"))?;
            Ok((token, format!("{} (new)", path.display())))
        }
        Err(e) => Err(io("reading")(e)),
    }
}

fn check_len(t: &str, what: &str) -> Result<(), TokenError> {
    match token_problem(t) {
        Some(problem) => Err(TokenError::Refused(format!("{what} {problem}"))),
        None => Ok(()),
    }
}

/// What is wrong with an operator token chosen by hand, if anything: shorter than
/// [`OPERATOR_TOKEN_LEN_MIN`], or holding a character other than visible ASCII (a token of
/// spaces passes a length check but guesses in one try; a space or a control character
/// does not survive an `Authorization` header intact).
pub fn token_problem(t: &str) -> Option<String> {
    if t.len() < OPERATOR_TOKEN_LEN_MIN {
        return Some(format!(
            "is {} characters long; use at least {OPERATOR_TOKEN_LEN_MIN}",
            t.len()
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("holds a space, a control character or a character outside ASCII; use letters, digits and punctuation".into());
    }
    None
}

/// Refuses a token file other users may read.
pub(crate) fn check_private(path: &Path) -> std::io::Result<Result<(), TokenError>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Ok(Err(TokenError::Refused(format!(
                "{} is readable by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            ))));
        }
    }
    Ok(Ok(()))
}

/// Creates the data directory (0700) and the token file (0600, never overwriting one).
pub(crate) fn write_private(dir: &Path, path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        dirs.mode(0o700);
        open.mode(0o600);
    }
    dirs.create(dir)?;
    let mut file = open.open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()
}

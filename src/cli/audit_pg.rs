//! `warden audit query --postgres URL [--node NAME] [filters]`: the entries a node exported to
//! PostgreSQL (docs/export.md), printed as `warden audit query DIR` prints them.

use anyhow::Context;
use warden::adapters::export::postgres;
use warden::supervisor::audit::Filter;

/// The URL itself, or the value of the variable `env:NAME` names.
fn url_of(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix("env:") {
        Some(name) => std::env::var(name)
            .with_context(|| format!("--postgres env:{name}: the variable {name} is not set")),
        None => Ok(arg.to_string()),
    }
}

/// Prints the matching rows as JSON lines (their count on standard error). An unreachable
/// database or a refused URL is an error (exit non-zero); the URL is never printed.
pub fn query(url: &str, node: Option<&str>, filter: &Filter) -> anyhow::Result<()> {
    let url = url_of(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    super::audit::print_lines(|out| {
        rt.block_on(postgres::query(&url, node, filter, out))
            .context("audit query --postgres")
    })
}

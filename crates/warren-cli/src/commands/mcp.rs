//! `warren mcp`: the MCP server over stdio. stdout carries the protocol, so nothing else may
//! write there: no log output is set up, and errors go to stderr.

use std::process::ExitCode;

use crate::client::ClientOpts;

pub async fn run(opts: ClientOpts) -> anyhow::Result<ExitCode> {
    let key = crate::client::api_key(&opts)?;
    let http = crate::client::http_client()?;
    warren_mcp::serve_stdio(http, &opts.url, key).await?;
    Ok(ExitCode::SUCCESS)
}

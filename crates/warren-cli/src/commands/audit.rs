//! `warren audit`: the audit trail of the caller's organization (needs an admin key).

use std::process::ExitCode;

use serde_json::Value;

use crate::client::Client;
use crate::client::ClientOpts;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only events of this sandbox.
    #[arg(long)]
    sandbox: Option<String>,
    /// Only this action (e.g. execute, files.write, sandbox.create, key.rotate).
    #[arg(long)]
    action: Option<String>,
    /// Only events at or after this time (RFC 3339 or unix seconds).
    #[arg(long)]
    since: Option<String>,
    /// How many events at most.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print raw JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.opts)?;
    let mut query = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("sandbox_id", &a.sandbox),
        ("action", &a.action),
        ("since", &a.since),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", enc(v)));
        }
    }
    let page = client
        .call(
            reqwest::Method::GET,
            &format!("/v1/audit?{}", query.join("&")),
            None,
        )
        .await?;
    let events = page["data"].as_array().cloned().unwrap_or_default();
    if a.json {
        for e in &events {
            println!("{e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<25} {:<22} {:<20} {:<18} {:<22} {:>7} {:>6}",
        "AT", "ACTION", "SANDBOX", "KEY", "OUTCOME", "BYTES", "MS"
    );
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for e in &events {
        println!(
            "{:<25} {:<22} {:<20} {:<18} {:<22} {:>7} {:>6}",
            s(&e["at"]),
            s(&e["action"]),
            s(&e["sandbox_id"]),
            s(&e["key_id"]),
            s(&e["outcome"]),
            e["input_bytes"]
                .as_i64()
                .map_or("-".into(), |b| b.to_string()),
            e["duration_ms"].as_i64().unwrap_or(0)
        );
    }
    if page["has_more"].as_bool() == Some(true) {
        eprintln!("(more events: raise --limit or narrow with --since/--action)");
    }
    Ok(ExitCode::SUCCESS)
}

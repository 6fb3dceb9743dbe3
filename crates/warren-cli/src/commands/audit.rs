//! `warren audit`: the audit trail of the caller's organization (needs an admin key).

use std::process::ExitCode;

use warren_wire::control::AuditPage;

use crate::client::{Client, ClientOpts, NO_BODY};

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
    let page: AuditPage = client
        .call(
            reqwest::Method::GET,
            &format!("/v1/audit?{}", query.join("&")),
            NO_BODY,
        )
        .await?;
    if a.json {
        for e in &page.data {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<25} {:<22} {:<20} {:<18} {:<22} {:>7} {:>6}",
        "AT", "ACTION", "SANDBOX", "KEY", "OUTCOME", "BYTES", "MS"
    );
    for e in &page.data {
        println!(
            "{:<25} {:<22} {:<20} {:<18} {:<22} {:>7} {:>6}",
            e.at,
            e.action,
            e.sandbox_id.as_deref().unwrap_or("-"),
            e.key_id.as_deref().unwrap_or("-"),
            e.outcome,
            e.input_bytes.map_or("-".into(), |b| b.to_string()),
            e.duration_ms
        );
    }
    if page.has_more {
        eprintln!("(more events: raise --limit or narrow with --since/--action)");
    }
    Ok(ExitCode::SUCCESS)
}

//! `warren template build`: builds a template from a Dockerfile-like recipe through the same API
//! the SDKs use, uploading COPY sources and showing the build's log and progress as it runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::client::ClientOpts;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Template name.
    name: String,
    /// Recipe: FROM (an image or a local template), RUN, COPY [--chown=uid:gid] [--chmod=mode],
    /// ENV, WORKDIR, USER, CMD — one per line, `\` continues a line, `#` starts a comment.
    #[arg(short = 'f', long, default_value = "Dockerfile")]
    file: PathBuf,
    /// Directory COPY sources are relative to (default: the recipe's directory).
    #[arg(long)]
    context: Option<PathBuf>,
    /// Replace an existing template of that name.
    #[arg(long)]
    update: bool,
    /// Run every step again instead of re-using cached layers.
    #[arg(long)]
    skip_cache: bool,
    #[arg(long, default_value_t = 2)]
    cpu: u32,
    #[arg(long, default_value_t = 2048)]
    memory_mb: u32,
    #[arg(long, default_value_t = 10)]
    disk_gb: u32,
    /// Isolation tier of the template's sandboxes (namespaces, gvisor, microvm; default: the server's).
    #[arg(long)]
    isolation: Option<String>,
}

/// The recipe's lines with continuations joined and comments dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// `["a", "b"]` (exec form) or plain text (shell form) as one shell string.
fn shell_form(rest: &str) -> String {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(words) => words.join(" "),
        Err(_) => rest.to_owned(),
    }
}

struct Recipe {
    from: String,
    steps: Vec<Value>,
    /// COPY steps' sources, by position in `steps`.
    copies: Vec<(usize, Vec<String>)>,
}

fn parse(text: &str) -> anyhow::Result<Recipe> {
    let mut from = None;
    let mut steps = Vec::new();
    let mut copies = Vec::new();
    for (i, line) in logical_lines(text).into_iter().enumerate() {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        let n = i + 1;
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => from = Some(rest.split_whitespace().next().unwrap_or("").to_owned()),
            "RUN" => steps.push(json!({ "type": "RUN", "args": [shell_form(rest)] })),
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(char::is_whitespace))
                    .with_context(|| format!("line {n}: ENV needs KEY=VALUE"))?;
                steps
                    .push(json!({ "type": "ENV", "args": [k.trim(), v.trim().trim_matches('"')] }));
            }
            "WORKDIR" => steps.push(json!({ "type": "WORKDIR", "args": [rest] })),
            "USER" => steps.push(json!({ "type": "USER", "args": [rest] })),
            "CMD" => steps.push(json!({ "type": "CMD", "args": [shell_form(rest)] })),
            "COPY" => {
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                let mut step = json!({ "type": "COPY" });
                words.retain(|w| {
                    if let Some(o) = w.strip_prefix("--chown=") {
                        step["owner"] = o.into();
                        false
                    } else if let Some(m) = w.strip_prefix("--chmod=") {
                        step["permissions"] = m.into();
                        false
                    } else {
                        true
                    }
                });
                if words.len() < 2 {
                    bail!("line {n}: COPY needs a source and a destination");
                }
                let dest = words.pop().unwrap_or_default();
                let sources: Vec<String> = words.iter().map(|s| (*s).to_owned()).collect();
                step["args"] = json!([sources.join(","), dest]);
                copies.push((steps.len(), sources));
                steps.push(step);
            }
            other => bail!("line {n}: unsupported instruction {other}"),
        }
    }
    Ok(Recipe {
        from: from
            .filter(|f| !f.is_empty())
            .context("the recipe needs a FROM line")?,
        steps,
        copies,
    })
}

/// A gzip tarball of `sources` (relative to `context`), paths kept relative to it.
fn context_tarball(context: &Path, sources: &[String]) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for src in sources {
        let rel = src.trim_end_matches('/');
        let path = context.join(rel);
        if path.is_dir() {
            tar.append_dir_all(if rel.is_empty() { "." } else { rel }, &path)
        } else {
            tar.append_path_with_name(&path, rel)
        }
        .with_context(|| format!("COPY source {}", path.display()))?;
    }
    Ok(tar.into_inner()?.finish()?)
}

pub async fn run(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.opts)?;
    let text =
        std::fs::read_to_string(&a.file).with_context(|| format!("read {}", a.file.display()))?;
    let mut recipe = parse(&text)?;
    let context = a.context.clone().unwrap_or_else(|| {
        a.file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| ".".into())
    });
    for (index, sources) in &recipe.copies {
        let bytes = context_tarball(&context, sources)?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let link = client
            .call(
                reqwest::Method::POST,
                "/v1/templates/files/upload-link",
                Some(json!({ "files_hash": hash, "content_length": bytes.len() })),
            )
            .await?;
        if link["present"] != true {
            let url = link["upload_url"].as_str().context("no upload_url")?;
            eprintln!("uploading {} ({} bytes)", sources.join(" "), bytes.len());
            client.put_bytes(url, bytes).await?;
        }
        recipe.steps[*index]["filesHash"] = hash.into();
    }
    let body = json!({
        "name": a.name, "from_image": recipe.from, "steps": recipe.steps, "cpu": a.cpu,
        "memory": a.memory_mb, "diskGB": a.disk_gb, "skipCache": a.skip_cache, "update": a.update,
        "isolation": a.isolation,
    });
    let started = client
        .call(reqwest::Method::POST, "/v1/templates/build", Some(body))
        .await?;
    let id = started["template_id"]
        .as_str()
        .context("no template_id")?
        .to_owned();
    let mut offset = 0u64;
    loop {
        let status = client
            .call(
                reqwest::Method::GET,
                &format!("/v1/templates/build/{id}/status"),
                None,
            )
            .await?;
        // Logs after status: once the status is final no line is added, so this read gets the
        // last ones (a fully cached build ends between two polls).
        let logs = client
            .call(
                reqwest::Method::GET,
                &format!("/v1/templates/build/{id}/logs?offset={offset}"),
                None,
            )
            .await?;
        print!("{}", logs["logs"].as_str().unwrap_or(""));
        offset = logs["offset"].as_u64().unwrap_or(offset);
        match status["status"].as_str() {
            Some("active") => {
                eprintln!("template {} ({id}) is active", a.name);
                return Ok(ExitCode::SUCCESS);
            }
            Some("failed") => {
                eprintln!(
                    "build failed: {}",
                    status["error_message"]
                        .as_str()
                        .unwrap_or("see the log above")
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprint!(
                        "\r[{:>3}%] {}\x1b[K\r",
                        status["progress"].as_u64().unwrap_or(0),
                        status["current_step"].as_str().unwrap_or("")
                    );
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dockerfile_subset_parses() {
        let r = super::parse(
            "# comment\nFROM base\nCOPY --chown=1000:1000 app/ x.txt /srv/\nRUN apt-get update && \\\n    echo done\nENV A=1\nENV B two words\nWORKDIR /srv\nCMD [\"python3\", \"-m\", \"http.server\"]\n",
        )
        .expect("parse");
        assert_eq!(r.from, "base");
        assert_eq!(r.steps[0]["args"][0], "app/,x.txt");
        assert_eq!(r.steps[0]["owner"], "1000:1000");
        assert_eq!(r.steps[1]["args"][0], "apt-get update &&  echo done");
        assert_eq!(r.steps[3]["args"][1], "two words");
        assert_eq!(r.steps[5]["args"][0], "python3 -m http.server");
        assert!(super::parse("RUN x").is_err());
    }
}

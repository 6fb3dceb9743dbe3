//! `warren template build`: builds a template from a Dockerfile-like recipe through the same API
//! the SDKs use, uploading COPY sources and showing the build's log and progress as it runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use warren_wire::control::{BuildLogs, BuildStarted, BuildStatus, UploadLink};

use crate::client::{Client, ClientOpts, NO_BODY};

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

/// One step of the build request, in the form both SDKs send (`type` and `args`).
#[derive(Debug, Default, Serialize)]
struct Step {
    #[serde(rename = "type")]
    kind: &'static str,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<String>,
    /// A COPY step's uploaded context.
    #[serde(rename = "filesHash", skip_serializing_if = "Option::is_none")]
    files_hash: Option<String>,
}

impl Step {
    fn new(kind: &'static str, args: Vec<String>) -> Self {
        Self {
            kind,
            args,
            ..Self::default()
        }
    }
}

struct Recipe {
    from: String,
    steps: Vec<Step>,
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
            "RUN" => steps.push(Step::new("RUN", vec![shell_form(rest)])),
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(char::is_whitespace))
                    .with_context(|| format!("line {n}: ENV needs KEY=VALUE"))?;
                let args = vec![k.trim().to_owned(), v.trim().trim_matches('"').to_owned()];
                steps.push(Step::new("ENV", args));
            }
            "WORKDIR" => steps.push(Step::new("WORKDIR", vec![rest.to_owned()])),
            "USER" => steps.push(Step::new("USER", vec![rest.to_owned()])),
            "CMD" => steps.push(Step::new("CMD", vec![shell_form(rest)])),
            "COPY" => {
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                let mut step = Step::new("COPY", Vec::new());
                words.retain(|w| {
                    if let Some(o) = w.strip_prefix("--chown=") {
                        step.owner = Some(o.to_owned());
                        false
                    } else if let Some(m) = w.strip_prefix("--chmod=") {
                        step.permissions = Some(m.to_owned());
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
                step.args = vec![sources.join(","), dest.to_owned()];
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
        let link: UploadLink = client
            .call(
                reqwest::Method::POST,
                "/v1/templates/files/upload-link",
                Some(&json!({ "files_hash": hash, "content_length": bytes.len() })),
            )
            .await?;
        if !link.present {
            eprintln!("uploading {} ({} bytes)", sources.join(" "), bytes.len());
            client.put_bytes(&link.upload_url, bytes).await?;
        }
        if let Some(step) = recipe.steps.get_mut(*index) {
            step.files_hash = Some(hash);
        }
    }
    let body = json!({
        "name": a.name, "from_image": recipe.from, "steps": recipe.steps, "cpu": a.cpu,
        "memory": a.memory_mb, "diskGB": a.disk_gb, "skipCache": a.skip_cache, "update": a.update,
        "isolation": a.isolation,
    });
    let started: BuildStarted = client
        .call(reqwest::Method::POST, "/v1/templates/build", Some(&body))
        .await?;
    let id = started.template_id;
    let mut offset = 0usize;
    loop {
        let status: BuildStatus = client
            .call(
                reqwest::Method::GET,
                &format!("/v1/templates/build/{id}/status"),
                NO_BODY,
            )
            .await?;
        // Logs after status: once the status is final no line is added, so this read gets the
        // last ones (a fully cached build ends between two polls).
        let logs: BuildLogs = client
            .call(
                reqwest::Method::GET,
                &format!("/v1/templates/build/{id}/logs?offset={offset}"),
                NO_BODY,
            )
            .await?;
        print!("{}", logs.logs);
        offset = logs.offset;
        match status.status.as_str() {
            "active" => {
                eprintln!("template {} ({id}) is active", a.name);
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => {
                eprintln!(
                    "build failed: {}",
                    status
                        .error_message
                        .as_deref()
                        .unwrap_or("see the log above")
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprint!(
                        "\r[{:>3}%] {}\x1b[K\r",
                        status.progress,
                        status.current_step.as_deref().unwrap_or("")
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
        assert_eq!(r.steps[0].args, ["app/,x.txt", "/srv/"]);
        assert_eq!(r.steps[0].owner.as_deref(), Some("1000:1000"));
        assert_eq!(r.steps[1].args, ["apt-get update &&  echo done"]);
        assert_eq!(r.steps[3].args, ["B", "two words"]);
        assert_eq!(r.steps[5].args, ["python3 -m http.server"]);
        assert!(super::parse("RUN x").is_err());
    }
}

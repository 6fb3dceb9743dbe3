//! The tools, named and shaped as in the official `hopx-mcp` so that prompts written for it work
//! unchanged: sandboxes, templates, code execution in its four modes, commands, processes, files,
//! environment, metrics and URLs. Each answers a JSON object; a failure is a tool error result
//! (`isError`) carrying `{"error": …}`, never a broken session.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Extensions, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{check_id, AgentCall, Api, ApiError};

type Env = Option<HashMap<String, String>>;

/// Warren's MCP server. Over stdio it acts with one API key; over HTTP with each request's.
#[derive(Clone)]
pub struct WarrenMcp {
    api: Arc<Api>,
    key: Option<String>,
    tool_router: ToolRouter<Self>,
}

impl WarrenMcp {
    /// `key`: the API key of every call (stdio), or None to take each HTTP request's own.
    pub fn new(api: Arc<Api>, key: Option<String>) -> Self {
        Self {
            api,
            key,
            tool_router: Self::tool_router(),
        }
    }

    fn key(&self, ext: &Extensions) -> Result<String, ApiError> {
        if let Some(parts) = ext.get::<http::request::Parts>() {
            return crate::request_key(&parts.headers)
                .ok_or_else(|| ApiError::Invalid("no API key on the request".into()));
        }
        self.key
            .clone()
            .ok_or_else(|| ApiError::Invalid("no API key configured".into()))
    }

    async fn control(
        &self,
        ext: &Extensions,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        self.api.control(&self.key(ext)?, method, path, body).await
    }

    async fn agent(
        &self,
        ext: &Extensions,
        id: &str,
        call: AgentCall<'_>,
    ) -> Result<Value, ApiError> {
        self.api.agent(&self.key(ext)?, id, call).await
    }

    /// Runs code in sandbox `id` through `/execute` (or `/execute/background`).
    async fn run_code(&self, ext: &Extensions, id: &str, run: &Execute) -> Result<Value, ApiError> {
        let mut body = json!({"code": run.code, "language": run.language, "timeout": run.timeout});
        if let Some(env) = &run.env {
            body["env"] = json!(env);
        }
        if let Some(dir) = &run.working_dir {
            body["working_dir"] = json!(dir);
        }
        if run.mode == "background" {
            if let Some(name) = &run.name {
                body["name"] = json!(name);
            }
            let mut started = self
                .agent(
                    ext,
                    id,
                    AgentCall::new(Method::POST, "/execute/background", Some(body)),
                )
                .await?;
            started["mode"] = json!("background");
            started["sandbox_id"] = json!(id);
            return Ok(started);
        }
        let call = AgentCall::new(Method::POST, "/execute", Some(body)).running_for(run.timeout);
        let out = self.agent(ext, id, call).await?;
        let exit_code = out["exit_code"].as_i64().unwrap_or(-1);
        let mut result = json!({
            "stdout": out["stdout"].as_str().unwrap_or(""),
            "stderr": out["stderr"].as_str().unwrap_or(""),
            "exit_code": exit_code,
            "execution_time": out["execution_time"],
            "success": out["success"].as_bool().unwrap_or(exit_code == 0),
            "mode": run.mode,
            "sandbox_id": id,
        });
        if run.mode == "rich" {
            result["rich_outputs"] = match &out["rich_outputs"] {
                Value::Array(a) => Value::Array(a.clone()),
                _ => json!([]),
            };
        }
        Ok(result)
    }

    /// The processes an agent lists at `path`, at most `max` of them.
    async fn processes(
        &self,
        ext: &Extensions,
        id: &str,
        path: &str,
        max: usize,
    ) -> Result<Value, ApiError> {
        let listed = self.agent(ext, id, AgentCall::get(path)).await?;
        Ok(truncated(
            list_of(&listed, "processes"),
            max,
            "processes",
            id,
        ))
    }

    /// `execute_code` and its older single-mode names.
    async fn execute(&self, ext: &Extensions, run: Execute) -> Result<Value, ApiError> {
        if !["isolated", "persistent", "rich", "background"].contains(&run.mode.as_str()) {
            return Err(ApiError::Invalid(format!(
                "mode must be one of isolated, persistent, rich, background (not {:?})",
                run.mode
            )));
        }
        if run.timeout == 0 {
            return Err(ApiError::Invalid("timeout must be positive".into()));
        }
        if let Some(id) = &run.sandbox_id {
            return self.run_code(ext, id, &run).await;
        }
        if run.mode != "isolated" {
            return Err(ApiError::Invalid(format!(
                "mode '{}' needs sandbox_id: create one with create_sandbox, or use mode='isolated'",
                run.mode
            )));
        }
        // Isolated: a sandbox of its own, removed again whatever the run did.
        let mut create = template_body(&run.template_name);
        create["timeout_seconds"] = json!(600);
        if let Some(region) = &run.region {
            create["region"] = json!(region);
        }
        let created = self
            .control(ext, Method::POST, "/v1/sandboxes", Some(create))
            .await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| ApiError::Invalid("the create answered no id".into()))?
            .to_owned();
        let result = self.run_code(ext, &id, &run).await;
        let key = self.key(ext)?;
        let _ = self
            .api
            .control(&key, Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
            .await;
        self.api.forget(&key, &id);
        result
    }
}

fn template_body(template: &str) -> Value {
    if !template.is_empty() && template.bytes().all(|b| b.is_ascii_digit()) {
        json!({"template_id": template})
    } else {
        json!({"template_name": template})
    }
}

/// The tool's answer: its object, or `{"result": …}` for anything else.
fn answer(result: Result<Value, ApiError>) -> CallToolResult {
    match result {
        Ok(Value::Object(o)) => CallToolResult::structured(Value::Object(o)),
        Ok(other) => CallToolResult::structured(json!({ "result": other })),
        Err(e) => CallToolResult::structured_error(e.to_json()),
    }
}

/// Keeps the first `max` items of `items`, saying whether more were left out.
fn truncated(items: &Value, max: usize, key: &str, sandbox_id: &str) -> Value {
    let all = items.as_array().cloned().unwrap_or_default();
    let total = all.len();
    let cut = max > 0 && total > max;
    let kept: Vec<Value> = if cut {
        all.into_iter().take(max).collect()
    } else {
        all
    };
    let mut out = Map::new();
    out.insert("count".into(), json!(kept.len()));
    out.insert(key.into(), Value::Array(kept));
    out.insert("truncated".into(), json!(cut));
    out.insert("total".into(), json!(total));
    out.insert("sandbox_id".into(), json!(sandbox_id));
    Value::Object(out)
}

fn check_path_part(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!("not a {what}: {value:?}")))
    }
}

/// The URL at which port `port` of a sandbox whose agent is at `public_host` is reached: the
/// `{port}-{id}.{domain}` form of wildcard mode (`warren serve --wildcard-domain`).
fn preview_url(public_host: &str, id: &str, port: u16) -> Option<String> {
    let (scheme, host) = public_host.split_once("://")?;
    let host = host.trim_end_matches('/');
    let label_end = host.find('.')?;
    let (first, domain) = host.split_at(label_end);
    let sandbox = first.split_once('-').map_or(first, |(_, rest)| rest);
    (sandbox == id).then(|| format!("{scheme}://{port}-{id}{domain}/"))
}

// ---------- parameters ----------

fn default_limit() -> u32 {
    100
}
fn default_template_limit() -> usize {
    10
}
fn default_fields() -> Option<String> {
    Some("id,name,description,category,language".into())
}
fn default_mode() -> String {
    "isolated".into()
}
fn default_language() -> String {
    "python".into()
}
fn default_timeout() -> u64 {
    30
}
fn default_background_timeout() -> u64 {
    300
}
fn default_template() -> String {
    "code-interpreter".into()
}
fn default_workspace() -> String {
    "/workspace".into()
}
fn default_true() -> bool {
    true
}
fn default_processes() -> usize {
    100
}
fn default_system_processes() -> usize {
    200
}
fn default_files() -> usize {
    1000
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ListSandboxes {
    /// At most this many sandboxes (default 100).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Only sandboxes in this status: running, paused, stopped.
    pub status: Option<String>,
    /// Only sandboxes of this region.
    pub region: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct CreateSandbox {
    /// Template name (e.g. "code-interpreter") or id, from list_templates.
    pub template_id: String,
    /// Region to place the sandbox in.
    pub region: Option<String>,
    /// Seconds until the sandbox is removed.
    pub timeout_seconds: Option<u64>,
    /// Whether the sandbox may reach the internet (default: on).
    pub internet_access: Option<bool>,
    /// Environment variables of every command and run in the sandbox.
    pub env_vars: Env,
    /// Persistent volumes to mount (Warren extension; create them with create_volume).
    pub volumes: Option<Vec<MountVolume>>,
}

#[derive(Deserialize, serde::Serialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct MountVolume {
    /// The volume's name.
    pub name: String,
    /// Where the sandbox sees it: an absolute path such as /data.
    pub path: String,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct CreateVolume {
    /// Letters, digits, '_' and '-'; unique among your volumes.
    pub name: String,
    /// Its size in MB (default 10240); writes past it fail with ENOSPC.
    pub size_mb: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct VolumeRef {
    /// The volume's name or id.
    pub name: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SandboxRef {
    /// The sandbox id (from create_sandbox or list_sandboxes).
    pub id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SetTimeout {
    /// The sandbox id.
    pub id: String,
    /// New timeout in seconds, counted from now.
    pub timeout_seconds: u64,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ListTemplates {
    /// At most this many templates (default 10; 0 for all).
    #[serde(default = "default_template_limit")]
    pub limit: usize,
    /// Comma-separated fields to keep, or "all".
    #[serde(default = "default_fields")]
    pub fields: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct TemplateRef {
    /// Template name.
    pub name: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct InSandbox {
    /// The sandbox id.
    pub sandbox_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Preview {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The port a service in the sandbox listens on.
    pub port: u16,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Execute {
    /// The code to run.
    pub code: String,
    /// isolated (a new sandbox, removed after), persistent (in sandbox_id), rich (persistent,
    /// with plots and tables), background (in sandbox_id, returns a process id).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The sandbox to run in; required by every mode but isolated.
    pub sandbox_id: Option<String>,
    /// python, javascript, bash or go.
    #[serde(default = "default_language")]
    pub language: String,
    /// Seconds the run may take (default 30).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Environment variables of this run only.
    pub env: Env,
    /// Directory to run in.
    pub working_dir: Option<String>,
    /// Name of a background process.
    pub name: Option<String>,
    /// Template of the sandbox an isolated run creates.
    #[serde(default = "default_template")]
    pub template_name: String,
    /// Region of the sandbox an isolated run creates.
    pub region: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ExecuteIn {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The code to run.
    pub code: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    pub env: Env,
    pub working_dir: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ExecuteBackground {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The code to run.
    pub code: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_background_timeout")]
    pub timeout: u64,
    pub env: Env,
    pub working_dir: Option<String>,
    /// Name of the background process.
    pub name: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ExecuteIsolated {
    /// The code to run.
    pub code: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    pub env: Env,
    #[serde(default = "default_template")]
    pub template_name: String,
    pub region: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Processes {
    /// The sandbox id.
    pub sandbox_id: String,
    /// At most this many processes (default 100).
    #[serde(default = "default_processes")]
    pub max_results: usize,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SystemProcesses {
    /// The sandbox id.
    pub sandbox_id: String,
    /// At most this many processes (default 200).
    #[serde(default = "default_system_processes")]
    pub max_results: usize,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct KillProcess {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The background process id (from execute_code in background mode).
    pub process_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct RunCommand {
    /// The sandbox id.
    pub sandbox_id: String,
    /// A shell command line.
    pub command: String,
    /// Seconds it may take (default 30).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Directory to run in (default /workspace).
    #[serde(default = "default_workspace")]
    pub working_dir: String,
    /// Environment variables of this command only.
    pub env: Env,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct RunCommandBackground {
    /// The sandbox id.
    pub sandbox_id: String,
    /// A shell command line.
    pub command: String,
    /// Seconds it may run (default 300).
    #[serde(default = "default_background_timeout")]
    pub timeout: u64,
    /// Directory to run in (default /workspace).
    pub working_dir: Option<String>,
    pub env: Env,
    /// Name of the process.
    pub name: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct FilePath {
    /// The sandbox id.
    pub sandbox_id: String,
    /// Absolute path in the sandbox.
    pub path: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct FileWrite {
    /// The sandbox id.
    pub sandbox_id: String,
    /// Absolute path in the sandbox.
    pub path: String,
    /// Text to write (the file is replaced).
    pub content: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct FileList {
    /// The sandbox id.
    pub sandbox_id: String,
    /// Directory to list (default /workspace).
    #[serde(default = "default_workspace")]
    pub path: String,
    /// At most this many entries (default 1000).
    #[serde(default = "default_files")]
    pub max_results: usize,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct EnvSet {
    /// The sandbox id.
    pub sandbox_id: String,
    /// Variables to set.
    pub env_vars: HashMap<String, String>,
    /// Merge into the current variables (default) or replace them all.
    #[serde(default = "default_true")]
    pub merge: bool,
}

// ---------- tools ----------

#[tool_router]
impl WarrenMcp {
    #[tool(description = "GET /health: whether the Warren control plane answers.")]
    async fn health(&self) -> CallToolResult {
        let url = "/health";
        answer(self.api.control("", Method::GET, url, None).await)
    }

    #[tool(description = "GET /v1/sandboxes: list your sandboxes (id, status, template, expiry).")]
    async fn list_sandboxes(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ListSandboxes>,
    ) -> CallToolResult {
        let mut path = format!("/v1/sandboxes?limit={}", p.limit);
        for (name, value) in [("status", &p.status), ("region", &p.region)] {
            if let Some(v) = value {
                if let Err(e) = check_path_part(name, v) {
                    return answer(Err(e));
                }
                path.push_str(&format!("&{name}={v}"));
            }
        }
        answer(
            self.control(&ext, Method::GET, &path, None)
                .await
                .map(|mut list| {
                    list["count"] = json!(list["data"].as_array().map_or(0, Vec::len));
                    list
                }),
        )
    }

    #[tool(
        description = "POST /v1/sandboxes: create a sandbox from a template (list_templates \
        names them); its `id` is the sandbox_id of every other tool."
    )]
    async fn create_sandbox(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<CreateSandbox>,
    ) -> CallToolResult {
        let mut body = template_body(&p.template_id);
        if let Some(r) = p.region {
            body["region"] = json!(r);
        }
        if let Some(t) = p.timeout_seconds {
            body["timeout_seconds"] = json!(t);
        }
        if let Some(i) = p.internet_access {
            body["internet_access"] = json!(i);
        }
        if let Some(env) = p.env_vars {
            body["env_vars"] = json!(env);
        }
        if let Some(volumes) = p.volumes {
            body["volumes"] = json!(volumes);
        }
        answer(
            self.control(&ext, Method::POST, "/v1/sandboxes", Some(body))
                .await
                .map(|s| {
                    json!({
                        "id": s["id"], "status": s["status"], "template_id": s["template_id"],
                        "template_name": s["template_name"], "region": s["region"],
                        "created_at": s["created_at"], "timeout_seconds": s["timeout_seconds"],
                        "expires_at": s["expires_at"],
                    })
                }),
        )
    }

    #[tool(
        description = "GET /v1/volumes: your persistent volumes (name, size), which \
        create_sandbox mounts with `volumes`."
    )]
    async fn list_volumes(&self, ext: Extensions) -> CallToolResult {
        answer(self.control(&ext, Method::GET, "/v1/volumes", None).await)
    }

    #[tool(
        description = "POST /v1/volumes: create a persistent volume: files that outlive \
        sandboxes and are shared by every sandbox that mounts it."
    )]
    async fn create_volume(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<CreateVolume>,
    ) -> CallToolResult {
        let mut body = json!({"name": p.name});
        if let Some(size) = p.size_mb {
            body["size_mb"] = json!(size);
        }
        answer(
            self.control(&ext, Method::POST, "/v1/volumes", Some(body))
                .await,
        )
    }

    #[tool(
        description = "DELETE /v1/volumes/{name}: delete a volume and its files (refused \
        while a sandbox mounts it)."
    )]
    async fn delete_volume(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<VolumeRef>,
    ) -> CallToolResult {
        if let Err(e) = check_path_part("name", &p.name) {
            return answer(Err(e));
        }
        let path = format!("/v1/volumes/{}", p.name);
        answer(
            self.control(&ext, Method::DELETE, &path, None)
                .await
                .map(|_| json!({"status": "deleted", "name": p.name})),
        )
    }

    #[tool(
        description = "GET /v1/sandboxes/{id}: a sandbox's status, template, resources and expiry."
    )]
    async fn get_sandbox(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<SandboxRef>,
    ) -> CallToolResult {
        if let Err(e) = check_id(&p.id) {
            return answer(Err(e));
        }
        answer(
            self.control(&ext, Method::GET, &format!("/v1/sandboxes/{}", p.id), None)
                .await
                .map(|mut s| {
                    if let Some(o) = s.as_object_mut() {
                        o.remove("auth_token");
                    }
                    s
                }),
        )
    }

    #[tool(description = "DELETE /v1/sandboxes/{id}: remove a sandbox and everything in it.")]
    async fn delete_sandbox(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<SandboxRef>,
    ) -> CallToolResult {
        if let Err(e) = check_id(&p.id) {
            return answer(Err(e));
        }
        let done = self
            .control(
                &ext,
                Method::DELETE,
                &format!("/v1/sandboxes/{}", p.id),
                None,
            )
            .await;
        if let Ok(key) = self.key(&ext) {
            self.api.forget(&key, &p.id);
        }
        answer(done.map(|_| json!({"status": "deleted", "id": p.id})))
    }

    #[tool(
        description = "PUT /v1/sandboxes/{id}/timeout: extend or shorten a sandbox's life \
        (seconds from now)."
    )]
    async fn update_sandbox_timeout(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<SetTimeout>,
    ) -> CallToolResult {
        if let Err(e) = check_id(&p.id) {
            return answer(Err(e));
        }
        let body = json!({"timeout_seconds": p.timeout_seconds});
        let path = format!("/v1/sandboxes/{}/timeout", p.id);
        answer(
            self.control(&ext, Method::PUT, &path, Some(body))
                .await
                .map(|r| {
                    json!({"id": p.id, "timeout_seconds": p.timeout_seconds, "status": "updated",
                   "expires_at": r["expires_at"]})
                }),
        )
    }

    #[tool(description = "POST /v1/sandboxes/{id}/resume: resume a paused sandbox.")]
    async fn resume_sandbox(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<SandboxRef>,
    ) -> CallToolResult {
        if let Err(e) = check_id(&p.id) {
            return answer(Err(e));
        }
        let path = format!("/v1/sandboxes/{}", p.id);
        let resumed = self
            .control(&ext, Method::POST, &format!("{path}/resume"), None)
            .await;
        match resumed {
            Ok(_) => answer(self.control(&ext, Method::GET, &path, None).await),
            Err(e) => answer(Err(e)),
        }
    }

    #[tool(description = "GET /v1/templates: the templates sandboxes are created from.")]
    async fn list_templates(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ListTemplates>,
    ) -> CallToolResult {
        answer(
            self.control(&ext, Method::GET, "/v1/templates", None)
                .await
                .map(|list| {
                    let mut data = list["data"].as_array().cloned().unwrap_or_default();
                    if p.limit > 0 {
                        data.truncate(p.limit);
                    }
                    let fields = p.fields.filter(|f| f != "all");
                    if let Some(fields) = &fields {
                        let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
                        for t in &mut data {
                            if let Some(o) = t.as_object_mut() {
                                o.retain(|k, _| keep.contains(&k.as_str()));
                            }
                        }
                    }
                    json!({"count": data.len(), "data": data, "_fields": fields})
                }),
        )
    }

    #[tool(description = "GET /v1/templates/{name}: a template's details (resources, language).")]
    async fn get_template(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<TemplateRef>,
    ) -> CallToolResult {
        if let Err(e) = check_path_part("template name", &p.name) {
            return answer(Err(e));
        }
        answer(
            self.control(
                &ext,
                Method::GET,
                &format!("/v1/templates/{}", p.name),
                None,
            )
            .await,
        )
    }

    #[tool(description = "Whether a sandbox's agent answers (GET /info).")]
    async fn ping_vm(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        answer(
            self.agent(&ext, &p.sandbox_id, AgentCall::get("/info"))
                .await
                .map(|i| {
                    json!({"status": "ok", "agent_version": i["agent_version"], "agent": i["agent"],
                   "features": i["features"], "uptime": i["uptime"]})
                }),
        )
    }

    #[tool(description = "GET /info: the sandbox agent's version and capabilities.")]
    async fn get_vm_info(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        answer(
            self.agent(&ext, &p.sandbox_id, AgentCall::get("/info"))
                .await,
        )
    }

    #[tool(
        description = "The public URL of a port in the sandbox (needs a server in wildcard mode)."
    )]
    async fn get_preview_url(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<Preview>,
    ) -> CallToolResult {
        let result = async {
            check_id(&p.sandbox_id)?;
            let host = self
                .api
                .public_host(&self.key(&ext)?, &p.sandbox_id)
                .await?;
            let url = preview_url(&host, &p.sandbox_id, p.port).ok_or_else(|| {
                ApiError::Invalid(
                    "this server gives sandboxes no per-port URLs: run it with --wildcard-domain"
                        .into(),
                )
            })?;
            Ok(json!({"preview_url": url, "port": p.port, "sandbox_id": p.sandbox_id}))
        };
        answer(result.await)
    }

    #[tool(description = "The URL of the sandbox's agent.")]
    async fn get_agent_url(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        let result = async {
            check_id(&p.sandbox_id)?;
            let host = self
                .api
                .public_host(&self.key(&ext)?, &p.sandbox_id)
                .await?;
            Ok(json!({"agent_url": host, "sandbox_id": p.sandbox_id}))
        };
        answer(result.await)
    }

    #[tool(
        description = "Run code. Modes: isolated (default: a new sandbox, removed after the \
        run), persistent (in sandbox_id; variables and files stay), rich (persistent, with plots \
        and tables as rich_outputs), background (in sandbox_id; returns a process_id). Languages: \
        python, javascript, bash, go."
    )]
    async fn execute_code(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<Execute>,
    ) -> CallToolResult {
        answer(self.execute(&ext, p).await)
    }

    #[tool(description = "Deprecated: execute_code with mode='persistent'.")]
    async fn execute_code_persistent(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ExecuteIn>,
    ) -> CallToolResult {
        answer(self.execute(&ext, in_sandbox(p, "persistent")).await)
    }

    #[tool(description = "Deprecated: execute_code with mode='rich'.")]
    async fn execute_code_rich(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ExecuteIn>,
    ) -> CallToolResult {
        answer(self.execute(&ext, in_sandbox(p, "rich")).await)
    }

    #[tool(description = "Deprecated: execute_code with mode='background'.")]
    async fn execute_code_background(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ExecuteBackground>,
    ) -> CallToolResult {
        let run = Execute {
            code: p.code,
            mode: "background".into(),
            sandbox_id: Some(p.sandbox_id),
            language: p.language,
            timeout: p.timeout,
            env: p.env,
            working_dir: p.working_dir,
            name: p.name,
            template_name: default_template(),
            region: None,
        };
        answer(self.execute(&ext, run).await)
    }

    #[tool(description = "Deprecated: execute_code with mode='isolated'.")]
    async fn execute_code_isolated(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<ExecuteIsolated>,
    ) -> CallToolResult {
        let run = Execute {
            code: p.code,
            mode: "isolated".into(),
            sandbox_id: None,
            language: p.language,
            timeout: p.timeout,
            env: p.env,
            working_dir: None,
            name: None,
            template_name: p.template_name,
            region: p.region,
        };
        answer(self.execute(&ext, run).await)
    }

    #[tool(description = "GET /execute/processes: the sandbox's background code runs.")]
    async fn execute_list_processes(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<Processes>,
    ) -> CallToolResult {
        answer(
            self.processes(&ext, &p.sandbox_id, "/execute/processes", p.max_results)
                .await,
        )
    }

    #[tool(description = "Stop a background code run (POST /execute/kill/{process_id}).")]
    async fn execute_kill_process(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<KillProcess>,
    ) -> CallToolResult {
        if let Err(e) = check_path_part("process id", &p.process_id) {
            return answer(Err(e));
        }
        let path = format!("/execute/kill/{}", p.process_id);
        let killed = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(Method::POST, &path, None),
            )
            .await;
        answer(killed.map(|_| json!({"status": "killed", "process_id": p.process_id})))
    }

    #[tool(description = "POST /commands/run: run a shell command and wait for its output.")]
    async fn run_command(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<RunCommand>,
    ) -> CallToolResult {
        let mut body = shell(&p.command, p.timeout, &p.working_dir);
        if let Some(env) = p.env {
            body["env"] = json!(env);
        }
        let call = AgentCall::new(Method::POST, "/commands/run", Some(body)).running_for(p.timeout);
        answer(self.agent(&ext, &p.sandbox_id, call).await.map(|r| {
            json!({"stdout": r["stdout"].as_str().unwrap_or(""), "stderr": r["stderr"].as_str().unwrap_or(""),
                   "exit_code": r["exit_code"], "sandbox_id": p.sandbox_id})
        }))
    }

    #[tool(
        description = "POST /commands/background: start a shell command and return its process_id."
    )]
    async fn run_command_background(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<RunCommandBackground>,
    ) -> CallToolResult {
        let dir = p.working_dir.unwrap_or_else(default_workspace);
        let mut body = shell(&p.command, p.timeout, &dir);
        if let Some(env) = p.env {
            body["env"] = json!(env);
        }
        if let Some(name) = p.name {
            body["name"] = json!(name);
        }
        let call = AgentCall::new(Method::POST, "/commands/background", Some(body));
        answer(self.agent(&ext, &p.sandbox_id, call).await.map(|r| {
            json!({"process_id": r["process_id"], "status": "running",
                   "message": format!("Background process started: {}", r["process_id"].as_str().unwrap_or(""))})
        }))
    }

    #[tool(description = "GET /processes: every process running in the sandbox.")]
    async fn list_processes(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<SystemProcesses>,
    ) -> CallToolResult {
        answer(
            self.processes(&ext, &p.sandbox_id, "/processes", p.max_results)
                .await,
        )
    }

    #[tool(description = "GET /files/read: a text file's content.")]
    async fn file_read(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FilePath>,
    ) -> CallToolResult {
        let query = [("path", p.path.as_str())];
        let read = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::get("/files/read").query(&query),
            )
            .await;
        answer(
            read.map(|r| json!({"path": p.path, "content": r["content"].as_str().unwrap_or("")})),
        )
    }

    #[tool(description = "POST /files/write: write a text file (replaced if it exists).")]
    async fn file_write(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FileWrite>,
    ) -> CallToolResult {
        let size = p.content.len();
        let body = json!({"path": p.path, "content": p.content, "mode": "0644"});
        let written = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(Method::POST, "/files/write", Some(body)),
            )
            .await;
        answer(written.map(|_| json!({"path": p.path, "size": size})))
    }

    #[tool(description = "GET /files/list: a directory's entries (name, path, size, is_dir, …).")]
    async fn file_list(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FileList>,
    ) -> CallToolResult {
        let query = [("path", p.path.as_str())];
        let listed = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::get("/files/list").query(&query),
            )
            .await;
        answer(listed.map(|l| {
            let mut out = truncated(list_of(&l, "files"), p.max_results, "files", &p.sandbox_id);
            out["path"] = json!(p.path);
            out
        }))
    }

    #[tool(description = "GET /files/exists: whether a file or directory exists.")]
    async fn file_exists(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FilePath>,
    ) -> CallToolResult {
        let query = [("path", p.path.as_str())];
        let found = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::get("/files/exists").query(&query),
            )
            .await;
        answer(
            found
                .map(|r| json!({"path": p.path, "exists": r["exists"].as_bool().unwrap_or(false)})),
        )
    }

    #[tool(description = "DELETE /files/remove: remove a file, or a directory with its contents.")]
    async fn file_remove(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FilePath>,
    ) -> CallToolResult {
        let query = [("path", p.path.as_str())];
        let call = AgentCall::new(Method::DELETE, "/files/remove", None).query(&query);
        let removed = self.agent(&ext, &p.sandbox_id, call).await;
        answer(removed.map(|_| json!({"status": "removed", "path": p.path})))
    }

    #[tool(description = "POST /files/mkdir: create a directory and its parents.")]
    async fn file_mkdir(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<FilePath>,
    ) -> CallToolResult {
        let body = json!({"path": p.path});
        let made = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(Method::POST, "/files/mkdir", Some(body)),
            )
            .await;
        answer(made.map(|_| json!({"status": "created", "path": p.path})))
    }

    #[tool(
        description = "GET /metrics/snapshot: the sandbox's CPU, memory, disk and process figures."
    )]
    async fn get_system_metrics(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        answer(
            self.agent(&ext, &p.sandbox_id, AgentCall::get("/metrics/snapshot"))
                .await,
        )
    }

    #[tool(description = "GET /env: the sandbox's environment variables (given to every run).")]
    async fn env_get(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        let env = self
            .agent(&ext, &p.sandbox_id, AgentCall::get("/env"))
            .await;
        answer(env.map(|e| json!({"env_vars": e["env_vars"]})))
    }

    #[tool(
        description = "Set the sandbox's environment variables: merged (PATCH /env, default) or \
        replacing all (PUT /env)."
    )]
    async fn env_set(&self, ext: Extensions, Parameters(p): Parameters<EnvSet>) -> CallToolResult {
        let names: Vec<String> = p.env_vars.keys().cloned().collect();
        let (method, body) = if p.merge {
            (
                Method::PATCH,
                json!({"env_vars": p.env_vars, "merge": true}),
            )
        } else {
            (Method::PUT, json!({"env_vars": p.env_vars}))
        };
        let set = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(method, "/env", Some(body)),
            )
            .await;
        answer(set.map(|_| {
            json!({"status": "success",
                   "message": format!("Successfully set {} environment variable(s)", names.len()),
                   "variables_set": names, "merge_mode": p.merge, "sandbox_id": p.sandbox_id})
        }))
    }

    #[tool(description = "Remove all of the sandbox's environment variables (PUT /env with none).")]
    async fn env_clear(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        let body = json!({"env_vars": {}});
        let cleared = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(Method::PUT, "/env", Some(body)),
            )
            .await;
        answer(cleared.map(|_| json!({"status": "cleared"})))
    }

    #[tool(description = "POST /cache/clear: clear the agent's execution cache.")]
    async fn cache_clear(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        let cleared = self
            .agent(
                &ext,
                &p.sandbox_id,
                AgentCall::new(Method::POST, "/cache/clear", None),
            )
            .await;
        answer(cleared.map(|_| json!({"status": "success"})))
    }

    #[tool(description = "GET /cache/stats: the agent's execution cache figures.")]
    async fn cache_stats(
        &self,
        ext: Extensions,
        Parameters(p): Parameters<InSandbox>,
    ) -> CallToolResult {
        answer(
            self.agent(&ext, &p.sandbox_id, AgentCall::get("/cache/stats"))
                .await,
        )
    }
}

/// A command line as the SDKs send it: bash -c, in `workdir`.
fn shell(command: &str, timeout: u64, workdir: &str) -> Value {
    json!({"command": "bash", "args": ["-c", command], "timeout": timeout, "workdir": workdir})
}

fn in_sandbox(p: ExecuteIn, mode: &str) -> Execute {
    Execute {
        code: p.code,
        mode: mode.into(),
        sandbox_id: Some(p.sandbox_id),
        language: p.language,
        timeout: p.timeout,
        env: p.env,
        working_dir: p.working_dir,
        name: None,
        template_name: default_template(),
        region: None,
    }
}

/// The list under `key` of an agent's answer, or the answer itself if it is a list.
fn list_of<'a>(answer: &'a Value, key: &str) -> &'a Value {
    if answer.is_array() {
        answer
    } else {
        &answer[key]
    }
}

const INSTRUCTIONS: &str = "Warren runs code in isolated sandboxes on its operator's machines. \
Quick, one-off runs: execute_code(code=..., mode='isolated'). Multi-step work: create_sandbox(\
template_id='code-interpreter'), then execute_code(sandbox_id=id, mode='persistent'), run_command, \
file_write/file_read; delete_sandbox when done (sandboxes also end at their timeout). Long runs: \
mode='background', then execute_list_processes.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WarrenMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_urls_follow_the_wildcard_form() {
        assert_eq!(
            preview_url("https://7777-abc123.sb.example.com", "abc123", 8080).as_deref(),
            Some("https://8080-abc123.sb.example.com/")
        );
        assert_eq!(preview_url("http://127.0.0.1:40000", "abc123", 8080), None);
    }

    #[test]
    fn numeric_templates_are_ids() {
        assert_eq!(template_body("628"), json!({"template_id": "628"}));
        assert_eq!(
            template_body("code-interpreter"),
            json!({"template_name": "code-interpreter"})
        );
    }

    #[test]
    fn path_parts_are_checked() {
        assert!(check_path_part("process id", "proc_1-a.b").is_ok());
        assert!(check_path_part("process id", "../admin").is_err());
        assert!(check_path_part("process id", "a/b").is_err());
        assert!(check_id("x y").is_err());
    }
}

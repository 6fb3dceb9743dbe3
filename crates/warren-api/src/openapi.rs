//! The OpenAPI 3.1 document of the control plane, served at `/openapi.json`.
//!
//! Schemas come from the wire types (`warren-wire`, `ToSchema`). The operations are described
//! here, one `#[utoipa::path]` item each, rather than on the handlers: one file then reads as the
//! API's table of contents, and the handlers stay about behaviour. That the two agree is checked
//! by the test below, which finds every route the router registers and fails on one the
//! document lacks or leaves without a description.

use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use warren_wire::control::{
    CloneVolume, CreateSandboxRequest, EgressPolicy, ErrorEnvelope, ErrorObject, ListPage,
    NewSecret, NewVolume, Sandbox, SandboxResources, SandboxUsage, SecretInfo, SecretList,
    SetTimeoutRequest, Snapshot, Template, TemplateResources, TokenResponse, VolumeInfo,
    VolumeList,
};
use warren_wire::e2b;

/// Operations that answer exactly like another one (the vendors' names for the same call):
/// (method, path, the path whose operation it copies).
const ALIASES: &[(HttpMethod, &str, &str)] = &[
    (
        HttpMethod::Post,
        "/v1/sandboxes/{id}/stop",
        "/v1/sandboxes/{id}/pause",
    ),
    (
        HttpMethod::Post,
        "/v1/sandboxes/{id}/start",
        "/v1/sandboxes/{id}/resume",
    ),
    (HttpMethod::Post, "/v2/sandboxes", "/sandboxes"),
    (
        HttpMethod::Post,
        "/v2/sandboxes/{id}/connect",
        "/sandboxes/{id}/connect",
    ),
    (
        HttpMethod::Get,
        "/v2/sandboxes/{id}/logs",
        "/sandboxes/{id}/logs",
    ),
];

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for (method, alias, of) in ALIASES {
            let op = doc.paths.paths.get(*of).and_then(|item| match method {
                HttpMethod::Get => item.get.clone(),
                _ => item.post.clone(),
            });
            if let Some(mut op) = op {
                // Operation ids must be unique.
                op.operation_id = op
                    .operation_id
                    .map(|id| format!("{id}_at_{}", alias.replace(['/', '{', '}'], "_")));
                doc.paths
                    .add_path_operation(*alias, vec![method.clone()], op);
            }
        }
        doc
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(document())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warren control plane",
        description = "Self-hosted, Hopx-compatible code-execution sandboxes. The `/v1/*` routes are \
            the Hopx control-plane API the official SDKs and CLI use (with Warren extensions: \
            isolation tiers, snapshots, egress lists, metadata); `/sandboxes` and `/v2/sandboxes` \
            are E2B's; `/v1/admin`, `/v1/audit` and `/v1/internal` are Warren's own. A sandbox's \
            agent API (code, commands, files) is served at its `public_host`, not here.",
        license(name = "Apache-2.0"),
    ),
    paths(
        health, openapi_json, metrics,
        create_sandbox, list_sandboxes, get_sandbox, delete_sandbox, pause_sandbox,
        resume_sandbox, set_sandbox_timeout, set_sandbox_network, get_sandbox_network, refresh_sandbox_token,
        put_secret, list_secrets, delete_secret, sandbox_usage,
        create_volume, list_volumes, get_volume, delete_volume, clone_volume,
        take_snapshot, list_snapshots, get_snapshot, delete_snapshot,
        list_templates, get_template, delete_template,
        upload_link, upload_context, build_template, build_status, build_logs,
        list_keys, create_key, revoke_key, rotate_key, audit_trail,
        list_nodes, drain_node, activate_node,
        node_join, node_heartbeat, node_audit, node_layer,
        e2b_create, e2b_list_v1, e2b_list_v2, e2b_get, e2b_kill, e2b_set_timeout, e2b_refresh,
        e2b_connect, e2b_pause, e2b_resume, e2b_metrics, e2b_logs, e2b_snapshots, e2b_fork,
        e2b_list_snapshots, e2b_delete_template, e2b_network, e2b_secret_create, e2b_secret_list,
        e2b_secret_get, e2b_secret_update, e2b_secret_delete, e2b_build_request,
        e2b_build_file, e2b_build_trigger, e2b_build_status, e2b_template_alias,
        e2b_volume_create, e2b_volume_list, e2b_volume_get, e2b_volume_delete,
        e2b_volume_stat, e2b_volume_chmod, e2b_volume_remove, e2b_volume_list_dir,
        e2b_volume_mkdir, e2b_volume_read, e2b_volume_write,
        mcp_post, mcp_get, mcp_delete,
    ),
    components(schemas(
        CreateSandboxRequest, EgressPolicy, NewSecret, SecretInfo, SecretList, NewVolume, CloneVolume, VolumeInfo, VolumeList, SandboxResources, Sandbox, ListPage<Sandbox>,
        ListPage<Template>, SetTimeoutRequest, TokenResponse, TemplateResources, Template,
        Snapshot, SandboxUsage, ErrorEnvelope, ErrorObject, Sandboxes, E2bError, e2b::Sandbox,
        e2b::ListedSandbox, e2b::SandboxDetail, e2b::NetworkConfig, e2b::Lifecycle,
        e2b::SnapshotRequest, e2b::SnapshotInfo, e2b::NewSecret, e2b::SecretUpdate, e2b::Secret,
        warren_wire::control::NetworkRule, warren_wire::control::NetworkTransform, e2b::ForkRequest, e2b::ForkResult, e2b::ForkError,
    )),
    modifiers(&Credentials),
    security(("api_key" = []), ("bearer" = [])),
    tags(
        (name = "sandboxes", description = "Sandboxes (Hopx API)"),
        (name = "volumes", description = "Persistent volumes of the tenant, the same as E2B's `/volumes` (Warren extension)"),
        (name = "secrets", description = "Credentials the host brokers: a sandbox holds a placeholder, and the egress proxy puts the value in its place only in HTTPS requests to the secret's hosts (Warren extension)"),
        (name = "snapshots", description = "Snapshots of running sandboxes and copies of them (Warren extension)"),
        (name = "templates", description = "Templates and their builds (Hopx API)"),
        (name = "admin", description = "API keys and the audit trail of an organization (admin keys)"),
        (name = "cluster", description = "Nodes of a cluster; /v1/internal is for `warren node` only"),
        (name = "e2b", description = "E2B's control-plane API over the same sandboxes"),
        (name = "system", description = "Health, metrics, this document"),
        (name = "mcp", description = "MCP (streamable HTTP) with the tools of hopx-mcp"),
    )
)]
struct ApiDoc;

/// API keys as `X-API-Key` (the SDKs) or `Authorization: Bearer` (builds, docs).
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answer to a create with `count` above 1.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Sandboxes {
    sandboxes: Vec<Sandbox>,
}

/// E2B's error body.
#[derive(ToSchema)]
#[allow(dead_code)]
struct E2bError {
    code: i32,
    message: String,
}

// ---------- system ----------

/// Whether the server can create sandboxes, which templates are built already, and the
/// server's `version` and the `commit` it was built from.
#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses((status = 200, description = "Serving", body = Object)))]
#[allow(dead_code)]
fn health() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

/// Prometheus metrics of the server and its sandboxes (admin key).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = "4XX", description = "Refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn metrics() {}

// ---------- sandboxes ----------

/// Create a sandbox from a template (or copies of a snapshot); answered once its agent is up.
/// With `count` above 1, all of them or none, as `{"sandboxes": [...]}`.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body(content = CreateSandboxRequest, description = "Empty means all defaults"),
    responses(
        (status = 201, description = "Created (with its agent token)", body = Sandbox),
        (status = 200, description = "`count` above 1", body = Sandboxes),
        (status = "4XX", description = "Bad input, unknown template, quota or rate limit", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn create_sandbox() {}

/// The caller's sandboxes, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100, at most 1000)"),
        ("status" = Option<String>, Query, description = "running, paused, stopped or deleted"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("region" = Option<String>, Query, description = "Only this region")),
    responses((status = 200, description = "A page", body = ListPage<Sandbox>),
        (status = "4XX", description = "Refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn list_sandboxes() {}

/// One sandbox (also a deleted one, with `status: deleted`).
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The sandbox", body = Sandbox),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn get_sandbox() {}

/// Stop a sandbox and remove everything it created.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "Deleted", body = Object),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn delete_sandbox() {}

/// Pause a running sandbox (memory and files kept; also `/stop`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "Paused", body = Sandbox),
        (status = "4XX", description = "Not found, not running, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn pause_sandbox() {}

/// Resume a paused sandbox (also `/start`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "Running", body = Sandbox),
        (status = "4XX", description = "Not found, not paused, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn resume_sandbox() {}

/// Set a sandbox's timeout, counted from now.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = SetTimeoutRequest,
    responses((status = 200, description = "The new expiry", body = Object),
        (status = "4XX", description = "Bad timeout, not found, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn set_sandbox_timeout() {}

/// Replace a sandbox's egress policy (Warren extension): the body is the create request's
/// `network`. New connections follow it at once; open ones it no longer allows are cut.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/network", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = EgressPolicy,
    responses((status = 200, description = "The policy now enforced", body = EgressPolicy),
        (status = "4XX", description = "A bad entry (named), a domain without `0.0.0.0/0` denied, not found, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn set_sandbox_network() {}

/// A sandbox's egress policy (Warren extension): what it was created with, its template's, or
/// the last one put; empty when internet access alone decides.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/network", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The policy enforced", body = EgressPolicy),
        (status = "4XX", description = "Not found", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn get_sandbox_network() {}

/// Store a secret, or replace its value and hosts. The value is write-only.
#[utoipa::path(post, path = "/v1/secrets", tag = "secrets",
    request_body = NewSecret,
    responses((status = 201, description = "Stored (the answer has no value)", body = SecretInfo),
        (status = "4XX", description = "A bad name, value or host (named)", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn put_secret() {}

/// The caller's secrets, without values.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets",
    responses((status = 200, description = "Secrets", body = SecretList)))]
#[allow(dead_code)]
fn list_secrets() {}

/// Delete a secret. Running sandboxes keep it until their policy is next set.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such secret", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn delete_secret() {}

/// Create a persistent volume of the tenant (the same volumes as E2B's `/volumes`).
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes",
    request_body = NewVolume,
    responses((status = 201, description = "Created", body = VolumeInfo),
        (status = 409, description = "The name is taken", body = ErrorEnvelope),
        (status = "4XX", description = "A bad name", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn create_volume() {}

/// The tenant's volumes.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses((status = 200, description = "Volumes", body = VolumeList)))]
#[allow(dead_code)]
fn list_volumes() {}

/// One volume, by id or name.
#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "Volume id or name")),
    responses((status = 200, description = "The volume", body = VolumeInfo),
        (status = 404, description = "No such volume", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn get_volume() {}

/// Delete a volume and its files.
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "Volume id or name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such volume", body = ErrorEnvelope),
        (status = 409, description = "Sandboxes mount it (named in the message)", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn delete_volume() {}

/// A new volume with a copy of this one's files (owners, modes, links kept). Sandboxes writing
/// to the source meanwhile may leave the copy with a file half-written, as any copy of a live
/// directory would.
#[utoipa::path(post, path = "/v1/volumes/{id}/clone", tag = "volumes",
    params(("id" = String, Path, description = "Volume id or name")),
    request_body = CloneVolume,
    responses((status = 201, description = "The copy", body = VolumeInfo),
        (status = 404, description = "No such volume", body = ErrorEnvelope),
        (status = 409, description = "The name is taken", body = ErrorEnvelope),
        (status = 507, description = "The files do not fit the size asked", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn clone_volume() {}

/// A new token for the sandbox's agent.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/token/refresh", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The token", body = TokenResponse),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn refresh_sandbox_token() {}

/// What a running or paused sandbox uses (CPU, memory, disk, processes), measured by its machine
/// from outside the sandbox (Warren extension).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/usage", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The usage", body = SandboxUsage),
        (status = "4XX", description = "Not found, not running or paused, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn sandbox_usage() {}

// ---------- snapshots ----------

/// Snapshot a running sandbox: its files (namespace tier), or the whole machine with its memory
/// (microVM tier); the sandbox runs on.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshot", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 201, description = "The snapshot", body = Snapshot),
        (status = "4XX", description = "Not found, not running, another tier, or over 100 snapshots", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn take_snapshot() {}

/// The caller's snapshots.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, description = "`data`: the snapshots", body = Object),
        (status = "4XX", description = "Refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn list_snapshots() {}

/// One snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, description = "The snapshot", body = Snapshot),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn get_snapshot() {}

/// Delete a snapshot and its layer (refused while copies of it run).
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, description = "Deleted", body = Object),
        (status = "4XX", description = "Not found, in use, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn delete_snapshot() {}

// ---------- templates ----------

/// Templates the caller can create sandboxes from.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    params(("category" = Option<String>, Query, description = "Only this category"),
        ("language" = Option<String>, Query, description = "Only this language")),
    responses((status = 200, description = "The templates", body = ListPage<Template>),
        (status = "4XX", description = "Refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn list_templates() {}

/// A template by name or id.
#[utoipa::path(get, path = "/v1/templates/{name_or_id}", tag = "templates",
    params(("name_or_id" = String, Path, description = "Template name or id")),
    responses((status = 200, description = "The template", body = Template),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn get_template() {}

/// Delete a template the caller built (built-in ones are refused).
#[utoipa::path(delete, path = "/v1/templates/{name_or_id}", tag = "templates",
    params(("name_or_id" = String, Path, description = "Template name or id")),
    responses((status = 200, description = "Deleted", body = Object),
        (status = "4XX", description = "Not found, public, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn delete_template() {}

/// Where to upload a build's COPY context (or that it is present already).
#[utoipa::path(post, path = "/v1/templates/files/upload-link", tag = "templates",
    request_body(content = Object, description = "`files_hash`, `content_length`"),
    responses((status = 200, description = "`present`, `upload_url`, `expires_at`", body = Object),
        (status = "4XX", description = "Bad input or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn upload_link() {}

/// Upload a COPY context (`.tar.gz`) to its one-time URL; the URL is the credential.
#[utoipa::path(put, path = "/v1/templates/files/upload/{token}", tag = "templates", security(()),
    params(("token" = String, Path, description = "From the upload link")),
    request_body(content = Vec<u8>, content_type = "application/gzip"),
    responses((status = 200, description = "Stored", body = Object),
        (status = "4XX", description = "Unknown or used link, wrong size or hash", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn upload_context() {}

/// Build a template from a base and steps (COPY, RUN, ENV, WORKDIR, USER, CMD).
#[utoipa::path(post, path = "/v1/templates/build", tag = "templates",
    request_body(content = Object, description = "`name`, `from_image` or a base template, `steps`, `start_cmd`, `ready_cmd`, resources; Warren extensions: `isolation`, and `network` (an egress policy, as on create, that sandboxes of this template get when their create names none)"),
    responses((status = 201, description = "`build_id`, `template_id`, `status`, `logs_url`", body = Object),
        (status = "4XX", description = "Bad recipe, name taken, or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn build_template() {}

/// A build's progress.
#[utoipa::path(get, path = "/v1/templates/build/{id}/status", tag = "templates",
    params(("id" = String, Path, description = "Build or template id")),
    responses((status = 200, description = "`status`, `progress`, `current_step`", body = Object),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn build_status() {}

/// A build's log from `offset` on.
#[utoipa::path(get, path = "/v1/templates/build/{id}/logs", tag = "templates",
    params(("id" = String, Path, description = "Build or template id"),
        ("offset" = Option<u64>, Query, description = "Where the previous read ended")),
    responses((status = 200, description = "`logs`, `offset`, `status`, `complete`", body = Object),
        (status = "4XX", description = "Not found or refused", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn build_logs() {}

// ---------- admin ----------

/// The organization's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, description = "`data`: the keys", body = Object),
        (status = "4XX", description = "Not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn list_keys() {}

/// Create an API key; the key is shown once, in this answer.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin",
    request_body(content = Object, description = "`name`, `role` (admin or member), `environment`, `expires_in_days`"),
    responses((status = 201, description = "The key", body = Object),
        (status = "4XX", description = "Bad input or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn create_key() {}

/// Revoke an API key.
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Revoked", body = Object),
        (status = "4XX", description = "Not found or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn revoke_key() {}

/// Replace an API key; the old one works for `grace_seconds` more.
#[utoipa::path(post, path = "/v1/admin/keys/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    request_body(content = Object, description = "`grace_seconds` (optional body)"),
    responses((status = 200, description = "The new key", body = Object),
        (status = "4XX", description = "Not found or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn rotate_key() {}

/// The organization's audit trail, newest first (admin key).
#[utoipa::path(get, path = "/v1/audit", tag = "admin",
    params(("sandbox_id" = Option<String>, Query, description = "Only this sandbox"),
        ("action" = Option<String>, Query, description = "Only this action, e.g. sandbox.create"),
        ("key_id" = Option<String>, Query, description = "Only this key"),
        ("since" = Option<String>, Query, description = "RFC 3339 time"),
        ("until" = Option<String>, Query, description = "RFC 3339 time"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "`data`: the events", body = Object),
        (status = "4XX", description = "Bad filter or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn audit_trail() {}

// ---------- cluster ----------

/// The cluster's nodes and their load (admin key).
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "cluster",
    responses((status = 200, description = "`data`: the nodes", body = Object),
        (status = "4XX", description = "Not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn list_nodes() {}

/// Place no more sandboxes on a node.
#[utoipa::path(post, path = "/v1/admin/nodes/{id}/drain", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, description = "Draining", body = Object),
        (status = "4XX", description = "Not found or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn drain_node() {}

/// Place sandboxes on a node again.
#[utoipa::path(post, path = "/v1/admin/nodes/{id}/activate", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, description = "Active", body = Object),
        (status = "4XX", description = "Not found or not an admin key", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn activate_node() {}

/// A `warren node` joins with the cluster's join secret.
#[utoipa::path(post, path = "/v1/internal/nodes/join", tag = "cluster", security(()),
    request_body = Object,
    responses((status = 200, description = "The node's id and credentials", body = Object),
        (status = "4XX", description = "Wrong secret or bad input", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn node_join() {}

/// A node's heartbeat: its load and its sandboxes' states (node credentials).
#[utoipa::path(post, path = "/v1/internal/nodes/heartbeat", tag = "cluster", security(()),
    request_body = Object,
    responses((status = 200, description = "Accepted", body = Object),
        (status = "4XX", description = "Unknown node or bad input", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn node_heartbeat() {}

/// Audit events a node recorded (node credentials).
#[utoipa::path(post, path = "/v1/internal/nodes/audit", tag = "cluster", security(()),
    request_body = Object,
    responses((status = 200, description = "Stored", body = Object),
        (status = "4XX", description = "Unknown node or bad input", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn node_audit() {}

/// A built template's layer as a tar stream, for a node that lacks it (node credentials).
#[utoipa::path(get, path = "/v1/internal/layers/{key}", tag = "cluster", security(()),
    params(("key" = String, Path, description = "Layer key")),
    responses((status = 200, description = "The layer", body = Vec<u8>, content_type = "application/x-tar"),
        (status = "4XX", description = "Unknown node or layer", body = ErrorEnvelope)))]
#[allow(dead_code)]
fn node_layer() {}

// ---------- E2B ----------

/// Create a sandbox (E2B; also `POST /v2/sandboxes`).
#[utoipa::path(post, path = "/sandboxes", tag = "e2b",
    request_body(content = Object, description = "`templateID`, `timeout`, `autoPause`, `metadata`, `envVars`, `network`"),
    responses((status = 201, description = "Created", body = e2b::Sandbox),
        (status = "4XX", description = "Bad input, unknown template, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_create() {}

/// Running sandboxes (E2B v1 list).
#[utoipa::path(get, path = "/sandboxes", tag = "e2b",
    responses((status = 200, description = "The sandboxes", body = Vec<e2b::ListedSandbox>),
        (status = "4XX", description = "Refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_list_v1() {}

/// Sandboxes by state and metadata, a page at a time (E2B v2 list).
#[utoipa::path(get, path = "/v2/sandboxes", tag = "e2b",
    params(("state" = Option<String>, Query, description = "running and/or paused"),
        ("metadata" = Option<String>, Query, description = "URL-encoded key=value pairs"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("nextToken" = Option<String>, Query, description = "From the previous page's x-next-token")),
    responses((status = 200, description = "The sandboxes", body = Vec<e2b::ListedSandbox>),
        (status = "4XX", description = "Refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_list_v2() {}

/// One sandbox (E2B).
#[utoipa::path(get, path = "/sandboxes/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The sandbox", body = e2b::SandboxDetail),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_get() {}

/// Kill a sandbox (E2B).
#[utoipa::path(delete, path = "/sandboxes/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 204, description = "Killed"),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_kill() {}

/// Set a sandbox's timeout (E2B).
#[utoipa::path(post, path = "/sandboxes/{id}/timeout", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Object, description = "`timeout` in seconds"),
    responses((status = 204, description = "Set"),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_set_timeout() {}

/// Extend a sandbox's life (E2B).
#[utoipa::path(post, path = "/sandboxes/{id}/refreshes", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Object, description = "`duration` in seconds"),
    responses((status = 204, description = "Extended"),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_refresh() {}

/// Connect to a sandbox, resuming it if paused (E2B; also `/v2/...`).
#[utoipa::path(post, path = "/sandboxes/{id}/connect", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Object, description = "`timeout` in seconds"),
    responses((status = 200, description = "Running", body = e2b::Sandbox),
        (status = 201, description = "Resumed", body = e2b::Sandbox),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_connect() {}

/// Pause a sandbox (E2B).
#[utoipa::path(post, path = "/sandboxes/{id}/pause", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 204, description = "Paused"),
        (status = "4XX", description = "Not found, not running, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_pause() {}

/// Resume a sandbox (E2B).
#[utoipa::path(post, path = "/sandboxes/{id}/resume", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Object, description = "`timeout`, `autoPause`"),
    responses((status = 201, description = "Resumed", body = e2b::Sandbox),
        (status = "4XX", description = "Not found, not paused, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_resume() {}

/// A sandbox's CPU, memory and disk figures now, measured from outside it, as one sample (E2B).
#[utoipa::path(get, path = "/sandboxes/{id}/metrics", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id"),
        ("start" = Option<i64>, Query, description = "Unix seconds: no sample if after now"),
        ("end" = Option<i64>, Query, description = "Unix seconds: no sample if before now")),
    responses((status = 200, description = "The figures", body = Vec<Object>),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_metrics() {}

/// A sandbox's logs (E2B; also `/v2/...`; Warren keeps none: empty).
#[utoipa::path(get, path = "/sandboxes/{id}/logs", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The logs", body = Object),
        (status = "4XX", description = "Not found or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_logs() {}

/// E2B's `create_snapshot`: the sandbox's file system (namespace tier) or whole machine with its
/// memory (microVM tier); the sandbox runs on. Its id starts sandboxes as a template does.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = e2b::SnapshotRequest, description = "name, memory"),
    responses((status = 201, description = "The snapshot", body = e2b::SnapshotInfo),
        (status = "4XX", description = "Not found, not running, another tier, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_snapshots() {}

/// E2B's `fork`: one snapshot, then `count` copies started each on its own; the snapshot is
/// removed once no copy runs from it.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = e2b::ForkRequest, description = "timeout, count"),
    responses((status = 201, description = "One result per copy", body = Vec<e2b::ForkResult>),
        (status = "4XX", description = "Not found, not running, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_fork() {}

/// E2B's `list_snapshots`: the organization's snapshots, oldest first (`x-next-token` pages).
#[utoipa::path(get, path = "/snapshots", tag = "e2b",
    params(("sandboxID" = Option<String>, Query, description = "Only those of this sandbox"),
        ("name" = Option<String>, Query, description = "Only this name or id"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("nextToken" = Option<String>, Query, description = "The x-next-token of the previous page")),
    responses((status = 200, description = "The snapshots", body = Vec<e2b::SnapshotInfo>),
        (status = "4XX", description = "Refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_list_snapshots() {}

/// E2B's `delete_snapshot` (a template delete): snapshot ids only (another id: 404); 409 while
/// copies run from it.
#[utoipa::path(delete, path = "/templates/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 204, description = "Deleted"),
        (status = "4XX", description = "Not found, in use, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_delete_template() {}

/// Replace a running sandbox's whole egress config (E2B): `allowOut`, `denyOut`, `dnsServers`,
/// `allow_internet_access`; omitted fields are cleared.
#[utoipa::path(put, path = "/sandboxes/{id}/network", tag = "e2b",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = e2b::NetworkConfig,
    responses((status = 204, description = "Replaced"),
        (status = "4XX", description = "A bad entry, not found, or refused", body = E2bError)))]
#[allow(dead_code)]
fn e2b_network() {}

/// Store a new secret (E2B). The value is write-only; a sandbox's `network.rules` use it as
/// `${e2b.secrets.NAME}` in headers set for a host.
#[utoipa::path(post, path = "/secrets", tag = "e2b",
    request_body = e2b::NewSecret,
    responses((status = 201, description = "Created, without the value", body = e2b::Secret),
        (status = 409, description = "The name is in use", body = E2bError),
        (status = "4XX", description = "Bad input", body = E2bError)))]
#[allow(dead_code)]
fn e2b_secret_create() {}

/// The caller's secrets by name, a page at a time (E2B).
#[utoipa::path(get, path = "/secrets", tag = "e2b",
    params(("limit" = Option<u32>, Query, description = "Page size"),
        ("nextToken" = Option<String>, Query, description = "From the previous page's x-next-token")),
    responses((status = 200, description = "The secrets, without values", body = Vec<e2b::Secret>)))]
#[allow(dead_code)]
fn e2b_secret_list() {}

/// One secret, by id or name (E2B).
#[utoipa::path(get, path = "/secrets/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Secret id or name")),
    responses((status = 200, description = "The secret, without its value", body = e2b::Secret),
        (status = 404, description = "No such secret", body = E2bError)))]
#[allow(dead_code)]
fn e2b_secret_get() {}

/// A secret's next value (its version counts up) and, when given, new metadata (E2B).
#[utoipa::path(post, path = "/secrets/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Secret id or name")),
    request_body = e2b::SecretUpdate,
    responses((status = 200, description = "Updated", body = e2b::Secret),
        (status = 404, description = "No such secret", body = E2bError)))]
#[allow(dead_code)]
fn e2b_secret_update() {}

/// Delete a secret (E2B). Running sandboxes keep it until their network is next set.
#[utoipa::path(delete, path = "/secrets/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Secret id or name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such secret", body = E2bError)))]
#[allow(dead_code)]
fn e2b_secret_delete() {}

/// Ask for a template build (E2B's `Template.build`): `{name, cpuCount, memoryMB,
/// minFreeDiskMb}`; the caller's own template of that name is rebuilt. Tags other than
/// `default` are refused.
#[utoipa::path(post, path = "/v3/templates", tag = "e2b",
    responses((status = 202, description = "`{templateID, buildID, public, names, tags, aliases}`"),
        (status = 409, description = "A built-in name, or a build in progress", body = E2bError),
        (status = "4XX", description = "Bad input", body = E2bError)))]
#[allow(dead_code)]
fn e2b_build_request() {}

/// Where to upload a COPY step's context (a tar, gzipped or not, PUT without credentials).
#[utoipa::path(get, path = "/templates/{id}/files/{hash}", tag = "e2b",
    params(("id" = String, Path, description = "Template id of a requested build"),
        ("hash" = String, Path, description = "The SDK's hash of the files (hex)")),
    responses((status = 201, description = "`{present: false, url}`"),
        (status = 404, description = "No build of the template was asked for", body = E2bError)))]
#[allow(dead_code)]
fn e2b_build_file() {}

/// Start a requested build with its steps (`fromImage` or `fromTemplate`, `steps`, `force`,
/// `startCmd`, `readyCmd`, `fromImageRegistry`); it runs in the background.
#[utoipa::path(post, path = "/v2/templates/{id}/builds/{build}", tag = "e2b",
    params(("id" = String, Path, description = "Template id"),
        ("build" = String, Path, description = "Build id")),
    responses((status = 202, description = "Started"),
        (status = 404, description = "No such requested build", body = E2bError),
        (status = "4XX", description = "Bad steps or base", body = E2bError)))]
#[allow(dead_code)]
fn e2b_build_trigger() {}

/// A build's status and its log entries from `logsOffset` (at most 100 per answer).
#[utoipa::path(get, path = "/templates/{id}/builds/{build}/status", tag = "e2b",
    params(("id" = String, Path, description = "Template id"),
        ("build" = String, Path, description = "Build id"),
        ("logsOffset" = Option<u32>, Query, description = "Entries already read"),
        ("limit" = Option<u32>, Query, description = "Most entries to return (100)"),
        ("level" = Option<String>, Query, description = "Lowest level: debug, info, warn, error")),
    responses((status = 200, description = "`{templateID, buildID, status, logEntries, logs, reason?}`"),
        (status = 404, description = "No such build", body = E2bError)))]
#[allow(dead_code)]
fn e2b_build_status() {}

/// Whether a template name (or E2B's name of a built-in one) is a template the caller can use.
#[utoipa::path(get, path = "/templates/aliases/{alias}", tag = "e2b",
    params(("alias" = String, Path, description = "Template name")),
    responses((status = 200, description = "`{templateID, public}`"),
        (status = 404, description = "No such template", body = E2bError)))]
#[allow(dead_code)]
fn e2b_template_alias() {}

/// Create a volume (E2B): `{name}` → `{volumeID, name, token}` (a taken name: 400, as on E2B).
#[utoipa::path(post, path = "/volumes", tag = "e2b",
    responses((status = 201, description = "`{volumeID, name, token}`"),
        (status = "4XX", description = "A bad or taken name", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_create() {}

/// The caller's volumes (E2B): `[{volumeID, name}]`.
#[utoipa::path(get, path = "/volumes", tag = "e2b",
    responses((status = 200, description = "Volumes")))]
#[allow(dead_code)]
fn e2b_volume_list() {}

/// One volume with a new token for its content API (E2B).
#[utoipa::path(get, path = "/volumes/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Volume id or name")),
    responses((status = 200, description = "`{volumeID, name, token}`"),
        (status = 404, description = "No such volume", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_get() {}

/// Delete a volume and its files (E2B).
#[utoipa::path(delete, path = "/volumes/{id}", tag = "e2b",
    params(("id" = String, Path, description = "Volume id or name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such volume", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_delete() {}

/// An entry of a volume, not following a symlink (content API: the volume's token as
/// `Authorization: Bearer`; every path stays beneath the volume).
#[utoipa::path(get, path = "/volumecontent/{id}/path", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "Path in the volume")),
    responses((status = 200, description = "`VolumeEntryStat`"),
        (status = 404, description = "No such path", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_stat() {}

/// Set an entry's `uid`, `gid`, `mode` (content API).
#[utoipa::path(patch, path = "/volumecontent/{id}/path", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "Path in the volume")),
    responses((status = 200, description = "`VolumeEntryStat`"),
        (status = 404, description = "No such path", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_chmod() {}

/// Remove a file, a symlink, or a directory with everything in it (not the root).
#[utoipa::path(delete, path = "/volumecontent/{id}/path", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "Path in the volume")),
    responses((status = 204, description = "Removed"),
        (status = 404, description = "No such path", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_remove() {}

/// The entries of a directory, `depth` levels down (1 to 10).
#[utoipa::path(get, path = "/volumecontent/{id}/dir", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "Directory"),
        ("depth" = Option<u32>, Query, description = "Levels (1)")),
    responses((status = 200, description = "`[VolumeEntryStat]`"),
        (status = 404, description = "No such directory", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_list_dir() {}

/// Make a directory (`force`: with its missing parents).
#[utoipa::path(post, path = "/volumecontent/{id}/dir", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "Directory"),
        ("uid" = Option<u32>, Query, description = "Owner"), ("gid" = Option<u32>, Query, description = "Group"),
        ("mode" = Option<u32>, Query, description = "Mode"), ("force" = Option<bool>, Query, description = "Make parents")),
    responses((status = 201, description = "`VolumeEntryStat`"),
        (status = 409, description = "It exists", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_mkdir() {}

/// A file's bytes.
#[utoipa::path(get, path = "/volumecontent/{id}/file", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "File")),
    responses((status = 200, description = "The bytes (application/octet-stream)"),
        (status = 404, description = "No such file", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_read() {}

/// Write a file from the body (`force`: replace an existing one; else 409).
#[utoipa::path(put, path = "/volumecontent/{id}/file", tag = "e2b", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id"),
        ("path" = String, Query, description = "File"),
        ("uid" = Option<u32>, Query, description = "Owner"), ("gid" = Option<u32>, Query, description = "Group"),
        ("mode" = Option<u32>, Query, description = "Mode"), ("force" = Option<bool>, Query, description = "Replace")),
    responses((status = 201, description = "`VolumeEntryStat`"),
        (status = 409, description = "It exists", body = E2bError)))]
#[allow(dead_code)]
fn e2b_volume_write() {}

// ---------- MCP ----------

/// An MCP JSON-RPC message (streamable HTTP transport): the tools of hopx-mcp (docs/mcp.md).
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = Object, description = "A JSON-RPC message"),
    responses((status = 200, description = "JSON or an event stream", body = Object),
        (status = 202, description = "Accepted (a notification)"),
        (status = "4XX", description = "No or a bad API key, or a bad message", body = Object)))]
#[allow(dead_code)]
fn mcp_post() {}

/// The server-to-client event stream of an MCP session.
#[utoipa::path(get, path = "/mcp", tag = "mcp",
    responses((status = 200, description = "An event stream", body = String, content_type = "text/event-stream"),
        (status = "4XX", description = "No or a bad API key, or no session", body = Object)))]
#[allow(dead_code)]
fn mcp_get() {}

/// End an MCP session.
#[utoipa::path(delete, path = "/mcp", tag = "mcp",
    responses((status = 200, description = "Ended"),
        (status = "4XX", description = "No or a bad API key, or no session", body = Object)))]
#[allow(dead_code)]
fn mcp_delete() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) the router registers, read from the files that register them.
    fn routed() -> BTreeSet<(String, String)> {
        let sources = [
            include_str!("routes/mod.rs"),
            include_str!("routes/mcp.rs"),
            include_str!("e2b/mod.rs"),
        ];
        let mut found = BTreeSet::new();
        for src in sources {
            for call in src.split(".route").skip(1) {
                // `.route("/path", get(..)...)` or `.route_service("/path", ...)`.
                let Some(start) = call.find('"') else {
                    continue;
                };
                let rest = &call[start + 1..];
                let Some(end) = rest.find('"') else { continue };
                let path = rest[..end].to_owned();
                if !path.starts_with('/') {
                    continue;
                }
                // The call's own text: up to the end of the chain (`;`) or of the function.
                let body = &rest[end..];
                let body = &body[..[body.find(';'), body.find("\n}")]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(body.len())];
                let methods: Vec<&str> = ["get", "post", "put", "delete", "patch"]
                    .into_iter()
                    .filter(|m| {
                        body.contains(&format!("({m}("))
                            || body.contains(&format!(" {m}("))
                            || body.contains(&format!(".{m}("))
                    })
                    .collect();
                if call.starts_with("_service") {
                    // The MCP service answers POST, GET and DELETE.
                    for m in ["post", "get", "delete"] {
                        found.insert((m.to_owned(), path.clone()));
                    }
                }
                for m in methods {
                    found.insert((m.to_owned(), path.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_described() {
        let doc = document();
        let routes = routed();
        assert!(
            routes.len() > 50,
            "found only {} routes: {routes:?}",
            routes.len()
        );
        for (method, path) in &routes {
            let item = doc
                .paths
                .paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is routed but not in the OpenAPI document"));
            let op = match method.as_str() {
                "get" => &item.get,
                "post" => &item.post,
                "put" => &item.put,
                "delete" => &item.delete,
                _ => &item.patch,
            };
            let op = op
                .as_ref()
                .unwrap_or_else(|| panic!("{method} {path} is routed but not documented"));
            let described = op.summary.as_deref().is_some_and(|s| !s.is_empty())
                || op.description.as_deref().is_some_and(|s| !s.is_empty());
            assert!(described, "{method} {path} has no description");
        }
        // And nothing is documented that is not routed.
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                if op.is_some() {
                    assert!(
                        routes.contains(&(method.to_owned(), path.clone())),
                        "{method} {path} is documented but not routed"
                    );
                }
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_schemas() {
        let json = serde_json::to_value(document()).expect("serializable");
        assert!(json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        assert!(json["components"]["schemas"]["Sandbox"]["properties"]["public_host"].is_object());
    }
}

//! A small HTTP client for the control plane and for a sandbox's agent (via its `public_host`).

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_wire::agent::UploadResponse;
use warren_wire::control::{Sandbox, TokenResponse};

/// Where a client command finds the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Control-plane URL.
    #[arg(
        long,
        env = "WARREN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (also read from HOPX_API_KEY).
    #[arg(long, env = "WARREN_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

/// An open WebSocket to a sandbox's agent.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// A sandbox's agent endpoint and token.
pub struct Agent {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// What an error answer says, in any of the shapes Warren answers with: the wire spec's envelope
/// (`message`), the agent's and E2B's (`message`), or a flat `error` string.
#[derive(Deserialize, Default)]
struct ErrorAnswer {
    message: Option<String>,
    error: Option<serde_json::Value>,
}

async fn check(res: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body: ErrorAnswer = res.json().await.unwrap_or_default();
    let flat = body
        .error
        .as_ref()
        .and_then(|e| e.as_str().map(str::to_owned));
    let msg = body
        .message
        .or(flat)
        .unwrap_or_else(|| "request failed".into());
    bail!("{msg} (HTTP {status})")
}

/// An extra CA the server's certificate chains to (a Warren-generated local CA): `WARREN_CA_CERT`,
/// else `SSL_CERT_FILE`, as PEM.
fn extra_ca_pem() -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) =
        std::env::var_os("WARREN_CA_CERT").or_else(|| std::env::var_os("SSL_CERT_FILE"))
    else {
        return Ok(None);
    };
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "read CA certificate {}",
            std::path::Path::new(&path).display()
        )
    })?;
    Ok(Some(pem))
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder();
    if let Some(pem) = extra_ca_pem()? {
        for cert in reqwest::Certificate::from_pem_bundle(&pem).context("parse CA certificate")? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

/// rustls settings for `wss://`: the public roots plus the extra CA, if any.
pub fn websocket_tls() -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem()? {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.context("parse CA certificate")?)?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The API key of a client command: --api-key / WARREN_API_KEY, else HOPX_API_KEY.
pub fn api_key(opts: &ClientOpts) -> anyhow::Result<String> {
    opts.api_key
        .clone()
        .or_else(|| std::env::var("HOPX_API_KEY").ok())
        .context("no API key: pass --api-key or set WARREN_API_KEY (or HOPX_API_KEY)")
}

impl Client {
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Self> {
        let key = api_key(opts)?;
        Ok(Self {
            http: http_client()?,
            base: opts.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// One call of the control plane's API, its answer read as `T` (a `warren-wire` shape, or
    /// `serde_json::Value` to print it as it came).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        check(res)
            .await?
            .json()
            .await
            .with_context(|| format!("unexpected answer to {path}"))
    }

    /// A call whose answer has no body (204).
    pub async fn call_no_answer(&self, method: reqwest::Method, path: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        check(res).await.map(drop)
    }

    /// PUTs bytes to a URL the server handed out (a one-time upload link; no credentials).
    pub async fn put_bytes(&self, url: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let res = self
            .http
            .put(url)
            .header("Content-Type", "application/gzip")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        check(res).await.map(drop)
    }

    /// Connects to a sandbox's agent: reads its public host and a fresh token.
    pub async fn agent(&self, id: &str) -> anyhow::Result<Agent> {
        let sb: Sandbox = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{id}"),
                NO_BODY,
            )
            .await?;
        let base = sb.public_host.trim_end_matches('/').to_owned();
        if sb.status != "running" || base.is_empty() {
            bail!("sandbox {id} is {}", sb.status);
        }
        let tok: TokenResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{id}/token/refresh"),
                NO_BODY,
            )
            .await?;
        Ok(Agent {
            http: self.http.clone(),
            base,
            token: tok.auth_token,
        })
    }
}

/// No request body (a `None` the compiler can type).
pub const NO_BODY: Option<&()> = None;

impl Agent {
    /// One call of the sandbox's agent, its answer read as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        self.raw(method, path, body)
            .await?
            .json()
            .await
            .with_context(|| format!("unexpected answer to {path}"))
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        check(req.send().await.context("cannot reach the sandbox")?).await
    }

    /// Opens a WebSocket to one of the agent's streaming endpoints (spec §6).
    pub async fn websocket(&self, path: &str) -> anyhow::Result<Socket> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}{path}",
            self.base
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut().insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse()?,
        );
        let connector = tokio_tungstenite::Connector::Rustls(websocket_tls()?);
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector))
                .await
                .with_context(|| format!("cannot open {url}"))?;
        Ok(socket)
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<UploadResponse> {
        let form = reqwest::multipart::Form::new()
            .text("path", path.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("upload"),
            );
        let res = self
            .http
            .post(format!("{}/files/upload", self.base))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await?;
        Ok(check(res).await?.json().await?)
    }
}

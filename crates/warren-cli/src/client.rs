//! A small HTTP client for the control plane and for a sandbox's agent (via its `public_host`).

use anyhow::{bail, Context};
use serde_json::Value;

use crate::commands::ClientOpts;

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

async fn check(res: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let msg = body
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| body.get("error").and_then(Value::as_str))
        .unwrap_or("request failed");
    bail!("{msg} (HTTP {status})")
}

impl Client {
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Self> {
        let key = opts
            .api_key
            .clone()
            .or_else(|| std::env::var("HOPX_API_KEY").ok())
            .context("no API key: pass --api-key or set WARREN_API_KEY (or HOPX_API_KEY)")?;
        Ok(Self {
            http: reqwest::Client::new(),
            base: opts.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        Ok(check(res).await?.json().await?)
    }

    /// Connects to a sandbox's agent: reads its public host and a fresh token.
    pub async fn agent(&self, id: &str) -> anyhow::Result<Agent> {
        let sb = self
            .call(reqwest::Method::GET, &format!("/v1/sandboxes/{id}"), None)
            .await?;
        let base = sb["public_host"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned();
        if sb["status"] != "running" || base.is_empty() {
            bail!(
                "sandbox {id} is {}",
                sb["status"].as_str().unwrap_or("unknown")
            );
        }
        let tok = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{id}/token/refresh"),
                None,
            )
            .await?;
        let token = tok["auth_token"]
            .as_str()
            .context("no token in refresh response")?
            .to_owned();
        Ok(Agent {
            http: self.http.clone(),
            base,
            token,
        })
    }
}

impl Agent {
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.raw(method, path, body).await?.json().await?)
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        check(req.send().await.context("cannot reach the sandbox")?).await
    }

    /// Opens a WebSocket to one of the agent's streaming endpoints (spec §6).
    pub async fn websocket(&self, path: &str) -> anyhow::Result<crate::stream::Socket> {
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
        let (socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .with_context(|| format!("cannot open {url}"))?;
        Ok(socket)
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
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

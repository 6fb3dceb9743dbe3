//! A control plane's calls to a node's API, each signed for that node with a short-lived token.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use warren_core::SandboxId;
use warren_wire::cluster::{
    BuildStepRequest, MeasuredUsage, NodeApiError, StartReply, StartRequest,
};

use crate::clock::now;
use crate::tokens::TokenSigner;

/// A node call failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("node {node} unreachable: {source}")]
    Unreachable {
        node: String,
        source: reqwest::Error,
    },
    /// The node answered with an error.
    #[error("node {node}: {message}")]
    Refused {
        node: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot sign a node call: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl RemoteError {
    /// The node says the sandbox is not running there.
    pub fn not_running(&self) -> bool {
        matches!(self, RemoteError::Refused { status: 404, .. })
    }
}

#[derive(Clone)]
pub struct RemoteNode {
    pub id: String,
    api_url: String,
    http: reqwest::Client,
    tokens: Arc<TokenSigner>,
}

impl RemoteNode {
    pub fn new(id: &str, api_url: &str, http: reqwest::Client, tokens: Arc<TokenSigner>) -> Self {
        Self {
            id: id.to_owned(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            http,
            tokens,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl serde::Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<reqwest::Response, RemoteError> {
        let token = self.tokens.node_call(&self.id, now())?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .map_err(|source| RemoteError::Unreachable {
                node: self.id.clone(),
                source,
            })?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let err: NodeApiError = res.json().await.unwrap_or(NodeApiError {
            code: "NODE_ERROR".into(),
            message: format!("status {status}"),
        });
        Err(RemoteError::Refused {
            node: self.id.clone(),
            status,
            code: err.code,
            message: err.message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, res: reqwest::Response) -> Result<T, RemoteError> {
        res.json().await.map_err(|source| RemoteError::Unreachable {
            node: self.id.clone(),
            source,
        })
    }

    pub async fn start(&self, req: &StartRequest) -> Result<StartReply, RemoteError> {
        // A start may wait for the node to prepare a template or fetch layers.
        let res = self
            .call(
                reqwest::Method::POST,
                "/node/v1/sandboxes",
                Some(req),
                Duration::from_secs(600),
            )
            .await?;
        self.json(res).await
    }

    pub async fn destroy(&self, id: &SandboxId) -> Result<(), RemoteError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/node/v1/sandboxes/{id}"),
            None::<&()>,
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    pub async fn pause(&self, id: &SandboxId) -> Result<(), RemoteError> {
        self.call(
            reqwest::Method::POST,
            &format!("/node/v1/sandboxes/{id}/pause"),
            None::<&()>,
            Duration::from_secs(60),
        )
        .await
        .map(drop)
    }

    /// The sandbox's usage as its node measures it.
    pub async fn usage(&self, id: &SandboxId) -> Result<MeasuredUsage, RemoteError> {
        let res = self
            .call(
                reqwest::Method::GET,
                &format!("/node/v1/sandboxes/{id}/usage"),
                None::<&()>,
                Duration::from_secs(10),
            )
            .await?;
        self.json(res).await
    }

    pub async fn resume(&self, id: &SandboxId) -> Result<(), RemoteError> {
        self.call(
            reqwest::Method::POST,
            &format!("/node/v1/sandboxes/{id}/resume"),
            None::<&()>,
            Duration::from_secs(60),
        )
        .await
        .map(drop)
    }

    /// Runs one RUN step of a build on the node, handing each output line to `line`; returns
    /// the step's exit code.
    pub async fn build_step(
        &self,
        req: &BuildStepRequest,
        mut line: impl FnMut(String),
    ) -> Result<i64, String> {
        let res = self
            .call(
                reqwest::Method::POST,
                "/node/v1/builds/steps",
                Some(req),
                Duration::from_secs(warren_node::build_step::RUN_TIMEOUT_SECS + 600),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("node {}: {e}", self.id))?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = buf.find('\n') {
                let l: String = buf.drain(..=nl).collect();
                let l = l.trim_end();
                if let Some(text) = l.strip_prefix("log ") {
                    line(text.to_owned());
                } else if let Some(code) = l.strip_prefix("exit ") {
                    return code
                        .parse()
                        .map_err(|_| format!("node {}: bad answer {l:?}", self.id));
                } else if let Some(why) = l.strip_prefix("fail ") {
                    return Err(why.to_owned());
                }
            }
        }
        Err(format!("node {} ended the step without a result", self.id))
    }

    /// A layer the node holds, as a tar stream.
    pub async fn layer(&self, key: &str) -> Result<reqwest::Response, RemoteError> {
        self.call(
            reqwest::Method::GET,
            &format!("/node/v1/layers/{key}"),
            None::<&()>,
            Duration::from_secs(3600),
        )
        .await
    }
}

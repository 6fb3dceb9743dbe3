//! A joined node, called over its API (`/node/v1/*`), each call signed for that node with a
//! short-lived token.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use warren_core::{SandboxId, Tier};
use warren_node::AgentLink;
use warren_runtime::{SandboxSpec, SnapshotTaken};
use warren_wire::cluster::{
    BuildStepRequest, MeasuredUsage, NodeApiError, SharedVolumeMount, StartReply, StartRequest,
};

use super::{AdoptOrder, HandOver, NodeCallError, NodeHandle, NodeStarted, StartOrder};
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

impl From<RemoteError> for NodeCallError {
    fn from(e: RemoteError) -> Self {
        match &e {
            RemoteError::Refused { status: 404, .. } => Self::NotRunning,
            RemoteError::Refused { code, message, .. } if code == "NO_SUCH_TIER" => {
                Self::NoSuchTier(message.clone())
            }
            RemoteError::Refused { code, message, .. } if code == "NOT_READY" => {
                Self::NotReady(message.clone())
            }
            _ => Self::Remote(e),
        }
    }
}

/// A build step on a joined node did not end with an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RemoteStepError {
    #[error(transparent)]
    Call(#[from] RemoteError),
    #[error("node {node}: {source}")]
    Broken {
        node: String,
        source: reqwest::Error,
    },
    #[error("node {node}: bad answer {line:?}")]
    BadAnswer { node: String, line: String },
    /// the node could not run the step; its words
    #[error("{0}")]
    Failed(String),
    #[error("node {node} ended the step without a result")]
    NoResult { node: String },
}

#[derive(Clone)]
pub struct RemoteNode {
    pub id: String,
    api_url: String,
    http: reqwest::Client,
    tokens: Arc<TokenSigner>,
    /// Whether it reported lately: a silent node is not waited for.
    reporting: bool,
    /// The tiers its last report named.
    tiers: Vec<Tier>,
}

impl RemoteNode {
    pub fn new(
        id: &str,
        api_url: &str,
        http: reqwest::Client,
        tokens: Arc<TokenSigner>,
        reporting: bool,
        tiers: Vec<Tier>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            http,
            tokens,
            reporting,
            tiers,
        }
    }

    fn reporting(&self) -> Result<(), NodeCallError> {
        if self.reporting {
            Ok(())
        } else {
            Err(NodeCallError::Silent {
                node: self.id.clone(),
            })
        }
    }

    fn only_local(&self, what: &str) -> NodeCallError {
        NodeCallError::Unsupported(format!(
            "{what} sandboxes on the control plane's own node; this one runs on node {}",
            self.id
        ))
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

    async fn start_call(&self, req: &StartRequest) -> Result<StartReply, RemoteError> {
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

    async fn destroy_call(&self, id: &SandboxId) -> Result<(), RemoteError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/node/v1/sandboxes/{id}"),
            None::<&()>,
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    async fn pause_call(&self, id: &SandboxId) -> Result<(), RemoteError> {
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
    async fn usage_call(&self, id: &SandboxId) -> Result<MeasuredUsage, RemoteError> {
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

    async fn idle_call(&self, idle_for: Duration) -> Result<Vec<SandboxId>, RemoteError> {
        let res = self
            .call(
                reqwest::Method::GET,
                &format!("/node/v1/idle?seconds={}", idle_for.as_secs()),
                None::<&()>,
                Duration::from_secs(30),
            )
            .await?;
        let ids: Vec<String> = self.json(res).await?;
        Ok(ids
            .iter()
            .filter_map(|i| SandboxId::parse(i).ok())
            .collect())
    }

    async fn resume_call(&self, id: &SandboxId) -> Result<(), RemoteError> {
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
    ) -> Result<i64, RemoteStepError> {
        let res = self
            .call(
                reqwest::Method::POST,
                "/node/v1/builds/steps",
                Some(req),
                Duration::from_secs(warren_node::build_step::RUN_TIMEOUT_SECS + 600),
            )
            .await?;
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| RemoteStepError::Broken {
                node: self.id.clone(),
                source,
            })?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = buf.find('\n') {
                let l: String = buf.drain(..=nl).collect();
                let l = l.trim_end();
                if let Some(text) = l.strip_prefix("log ") {
                    line(text.to_owned());
                } else if let Some(code) = l.strip_prefix("exit ") {
                    return code.parse().map_err(|_| RemoteStepError::BadAnswer {
                        node: self.id.clone(),
                        line: l.to_owned(),
                    });
                } else if let Some(why) = l.strip_prefix("fail ") {
                    return Err(RemoteStepError::Failed(why.to_owned()));
                }
            }
        }
        Err(RemoteStepError::NoResult {
            node: self.id.clone(),
        })
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

#[async_trait]
impl NodeHandle for RemoteNode {
    fn tiers(&self) -> Vec<Tier> {
        self.tiers.clone()
    }

    /// Placement judged its room from its reports.
    fn has_room(&self) -> Result<(), warren_node::NoRoom> {
        Ok(())
    }

    /// Its reports tell the control plane; no one asks the handle.
    fn sandboxes(&self) -> std::collections::BTreeSet<SandboxId> {
        std::collections::BTreeSet::new()
    }

    async fn start(&self, order: StartOrder) -> Result<NodeStarted, NodeCallError> {
        let ready = order
            .run
            .ready_probe()
            .map_err(|e| NodeCallError::Unsupported(e.to_string()))?;
        let req = StartRequest {
            id: order.id.to_string(),
            template_name: order.template_name,
            source: order.source,
            workdir: order.run.workdir,
            vcpu: order.resources.vcpu,
            memory_mb: order.resources.memory_mb,
            disk_mb: order.resources.disk_mb,
            internet_access: order.internet_access,
            egress: order.egress,
            secrets: order.secrets,
            env_vars: order.env_vars,
            tier: Some(order.tier.to_string()),
            owner: order.owner,
            start_cmd: order.run.start_cmd,
            ready,
            volumes: order
                .volumes
                .into_iter()
                .map(|v| SharedVolumeMount {
                    key: v.source.to_string_lossy().into_owned(),
                    path: v.target,
                    read_only: v.read_only,
                })
                .collect(),
        };
        let reply = self.start_call(&req).await?;
        Ok(NodeStarted {
            tier: reply.tier.parse().unwrap_or(order.tier),
            port: reply.port,
            handle: reply.handle,
            paused: false,
        })
    }

    async fn stop(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.reporting()?;
        Ok(self.destroy_call(id).await?)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.reporting()?;
        Ok(self.pause_call(id).await?)
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.reporting()?;
        Ok(self.resume_call(id).await?)
    }

    async fn idle_sandboxes(&self, idle_for: Duration) -> Result<Vec<SandboxId>, NodeCallError> {
        self.reporting()?;
        Ok(self.idle_call(idle_for).await?)
    }

    async fn pause_if_idle(
        &self,
        id: &SandboxId,
        idle_for: Duration,
    ) -> Result<bool, NodeCallError> {
        self.reporting()?;
        let res = self
            .call(
                reqwest::Method::POST,
                &format!(
                    "/node/v1/sandboxes/{id}/pause?if_idle_for={}",
                    idle_for.as_secs()
                ),
                None::<&()>,
                Duration::from_secs(60),
            )
            .await?;
        Ok(res.status() == reqwest::StatusCode::NO_CONTENT)
    }

    async fn usage(&self, id: &SandboxId) -> Result<MeasuredUsage, NodeCallError> {
        Ok(self.usage_call(id).await?)
    }

    async fn snapshot(
        &self,
        _: &SandboxId,
        _: &std::path::Path,
    ) -> Result<SnapshotTaken, NodeCallError> {
        Err(self.only_local("snapshots are taken of"))
    }

    async fn set_network(
        &self,
        id: &SandboxId,
        handle: &str,
        egress: Option<&warren_wire::control::EgressPolicy>,
        secrets: &[warren_wire::cluster::SecretBinding],
        internet_access: bool,
    ) -> Result<(), NodeCallError> {
        self.reporting()?;
        let body = warren_wire::cluster::NetworkUpdate {
            handle: handle.to_owned(),
            egress: egress.cloned(),
            internet_access,
            secrets: secrets.to_vec(),
        };
        self.call(
            reqwest::Method::PUT,
            &format!("/node/v1/sandboxes/{id}/network"),
            Some(&body),
            Duration::from_secs(30),
        )
        .await
        .map(drop)
        .map_err(NodeCallError::from)
    }

    async fn hand_over(&self, _: &SandboxId, _: HandOver) -> Result<(), NodeCallError> {
        Err(self.only_local("warm pools keep"))
    }

    /// Build steps on a joined node run whole there (`build_step`).
    async fn start_build(&self, _: SandboxSpec, _: &str) -> Result<AgentLink, NodeCallError> {
        Err(self.only_local("build sandboxes are"))
    }

    /// A joined node takes its own sandboxes over when it restarts.
    async fn adopt(&self, _: AdoptOrder) -> Result<NodeStarted, NodeCallError> {
        Err(self.only_local("restarts take over"))
    }

    async fn remove_leftovers(&self) {}
}

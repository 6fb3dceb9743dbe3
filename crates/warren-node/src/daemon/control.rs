//! The node's calls to the control plane: joining, heartbeats, audit records and fetching
//! layers. Control planes behind one load balancer share one store, so any of them answers.

use std::sync::RwLock;
use std::time::Duration;

use warren_wire::cluster::{
    AuditBatch, AuditRecord, HeartbeatResponse, JoinRequest, JoinResponse, NodeReport,
};

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// The control plane does not know this node's credential (it was removed, or the join
    /// secret is wrong).
    #[error("control plane refused the node ({status}): {body}")]
    Refused { status: u16, body: String },
}

pub struct ControlPlane {
    base: String,
    http: reqwest::Client,
    node_id: String,
    /// The node's credential, from the last join.
    key: RwLock<Option<String>>,
}

impl ControlPlane {
    pub fn new(base: &str, node_id: &str, ca: Option<&[u8]>) -> Result<Self, ControlError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        if let Some(pem) = ca {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: builder.build()?,
            node_id: node_id.to_owned(),
            key: RwLock::new(None),
        })
    }

    fn credential(&self) -> String {
        let key = self
            .key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        format!("{}:{key}", self.node_id)
    }

    async fn checked(res: reqwest::Response) -> Result<reqwest::Response, ControlError> {
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        Err(ControlError::Refused { status, body })
    }

    pub async fn join(
        &self,
        secret: &str,
        req: &JoinRequest,
    ) -> Result<JoinResponse, ControlError> {
        let res = self
            .http
            .post(format!("{}/v1/internal/nodes/join", self.base))
            .bearer_auth(secret)
            .json(req)
            .send()
            .await?;
        let joined: JoinResponse = Self::checked(res).await?.json().await?;
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(joined.node_key.clone());
        Ok(joined)
    }

    pub async fn heartbeat(&self, report: &NodeReport) -> Result<HeartbeatResponse, ControlError> {
        let res = self
            .http
            .post(format!("{}/v1/internal/nodes/heartbeat", self.base))
            .bearer_auth(self.credential())
            .timeout(Duration::from_secs(5))
            .json(report)
            .send()
            .await?;
        Ok(Self::checked(res).await?.json().await?)
    }

    pub async fn audit(&self, records: Vec<AuditRecord>) -> Result<(), ControlError> {
        let res = self
            .http
            .post(format!("{}/v1/internal/nodes/audit", self.base))
            .bearer_auth(self.credential())
            .json(&AuditBatch { records })
            .send()
            .await?;
        Self::checked(res).await?;
        Ok(())
    }

    /// A built template's layer, as a tar stream.
    pub async fn layer(&self, key: &str) -> Result<reqwest::Response, ControlError> {
        let res = self
            .http
            .get(format!("{}/v1/internal/layers/{key}", self.base))
            .bearer_auth(self.credential())
            .timeout(Duration::from_secs(3600))
            .send()
            .await?;
        Self::checked(res).await
    }
}

//! Nodes that joined the cluster, their last report, and settings every control plane shares.
//! A node's report (tiers, capacity, use, cached templates and layers) is opaque JSON here: the
//! control plane reads it, the store only keeps the newest.

use crate::row::{int, text};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    /// Where control planes reach the node's API.
    pub api_url: String,
    /// The host its sandboxes' `public_host` names.
    pub public_host: String,
    /// JSON object.
    pub labels: String,
    /// JSON of its last heartbeat.
    pub report: String,
    /// `active` or `draining`.
    pub state: String,
    pub joined_at: i64,
    /// Unix milliseconds.
    pub last_seen: i64,
    /// The CA its HTTPS certificate chains to, when not a public one (PEM).
    pub ca_pem: Option<String>,
}

const COLUMNS: &str =
    "id, name, api_url, public_host, labels, report, state, joined_at, last_seen, ca_pem";

impl Store {
    /// Registers a node (again, after a restart: same id, new credential). A node that joins
    /// again keeps its draining state.
    pub async fn join_node(&self, node: &NodeRecord, key_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, name, api_url, public_host, labels, report, state, key_hash, \
             joined_at, last_seen, ca_pem) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, api_url = excluded.api_url, \
             public_host = excluded.public_host, labels = excluded.labels, \
             report = excluded.report, key_hash = excluded.key_hash, \
             last_seen = excluded.last_seen, ca_pem = excluded.ca_pem",
        )
        .bind(&node.id)
        .bind(&node.name)
        .bind(&node.api_url)
        .bind(&node.public_host)
        .bind(&node.labels)
        .bind(&node.report)
        .bind(&node.state)
        .bind(key_hash)
        .bind(node.joined_at)
        .bind(node.last_seen)
        .bind(&node.ca_pem)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored hash of a node's credential.
    pub async fn node_key_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT key_hash FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| text(r, "key_hash")).transpose()
    }

    /// Records a heartbeat. False if the node is unknown (it must join again).
    pub async fn node_heartbeat(
        &self,
        id: &str,
        report: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET report = $1, last_seen = $2 WHERE id = $3")
            .bind(report)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_node_state(&self, id: &str, state: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET state = $1 WHERE id = $2")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// Forgets a node (`warren nodes remove`); its sandboxes' records stay.
    pub async fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The shared setting `name`: the stored value, or `value` stored now if there was none.
    /// Control planes starting together agree on whichever was stored first.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        text(&row, "value")
    }
}

fn node_from_row(r: &sqlx::any::AnyRow) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        id: text(r, "id")?,
        name: text(r, "name")?,
        api_url: text(r, "api_url")?,
        public_host: text(r, "public_host")?,
        labels: text(r, "labels")?,
        report: text(r, "report")?,
        state: text(r, "state")?,
        joined_at: int(r, "joined_at")?,
        last_seen: int(r, "last_seen")?,
        ca_pem: crate::row::opt_text(r, "ca_pem")?,
    })
}

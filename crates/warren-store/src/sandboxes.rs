use warren_core::{Resources, SandboxId, SandboxStatus, Tier};

use crate::row::{flag, int, opt_int, opt_text, text, tier, uint};
use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub template_id: String,
    pub template_name: String,
    pub status: SandboxStatus,
    pub resources: Resources,
    pub internet_access: bool,
    pub timeout_seconds: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub key_id: Option<String>,
    pub tenant: String,
    pub isolation: Tier,
    /// What the node needs to take a running sandbox over after a restart (opaque JSON of the
    /// runtime); None until it started, and again once it stopped.
    pub runtime_handle: Option<String>,
    /// Its listener's port in local mode, kept so that `public_host` survives a restart.
    pub listen_port: Option<u16>,
    /// Why it stopped, when the server stopped it rather than a user (it died, it expired).
    pub status_reason: Option<String>,
    /// The node that runs it; None for the control plane's own node.
    pub node_id: Option<String>,
    /// The region of that node.
    pub region: Option<String>,
    /// User metadata (E2B's `metadata`): a JSON object of strings.
    pub metadata: Option<String>,
    /// Egress beyond on/off: JSON of the allowed and denied CIDRs.
    pub egress: Option<String>,
    /// What happens at the timeout (E2B's autoPause, autoResume).
    pub on_timeout: OnTimeout,
    /// The snapshot it was created from.
    pub snapshot_id: Option<String>,
    /// The secrets it was given (JSON; see `NewSandbox::secret_bindings`).
    pub secret_bindings: Option<String>,
}

/// What happens at a sandbox's timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnTimeout {
    #[default]
    Kill,
    /// Paused, and waits for a `connect` (E2B's autoPause).
    Pause,
    /// Paused, and resumed by the next request that reaches it (E2B's autoResume).
    PauseUntilRequest,
}

impl OnTimeout {
    pub fn pauses(self) -> bool {
        self != Self::Kill
    }

    fn column(self) -> Option<&'static str> {
        match self {
            Self::Kill => None,
            Self::Pause => Some("pause"),
            Self::PauseUntilRequest => Some("pause,resume"),
        }
    }

    fn of_column(raw: Option<&str>) -> Self {
        match raw {
            Some("pause") => Self::Pause,
            Some("pause,resume") => Self::PauseUntilRequest,
            _ => Self::Kill,
        }
    }
}

#[derive(Clone, Copy)]
pub struct NewSandbox<'a> {
    pub id: &'a SandboxId,
    pub template_id: &'a str,
    pub template_name: &'a str,
    pub resources: Resources,
    pub internet_access: bool,
    pub timeout_seconds: Option<i64>,
    pub key_id: Option<&'a str>,
    pub tenant: &'a str,
    pub isolation: Tier,
    pub node_id: Option<&'a str>,
    pub region: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub egress: Option<&'a str>,
    pub on_timeout: OnTimeout,
    pub snapshot_id: Option<&'a str>,
    /// The secrets it was given: JSON of env var, secret name and placeholder (never values).
    pub secret_bindings: Option<&'a str>,
}

/// What a create sets on the warm sandbox it takes (see `claim_pooled_sandbox`).
pub struct ClaimPooled<'a> {
    pub tenant: &'a str,
    pub key_id: Option<&'a str>,
    pub timeout_seconds: Option<i64>,
    pub internet_access: bool,
    pub metadata: Option<&'a str>,
    pub on_timeout: OnTimeout,
}

pub struct SandboxPage {
    pub items: Vec<SandboxRecord>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str =
    "seq, id, template_id, template_name, status, vcpu, memory_mb, disk_mb, internet_access, \
     timeout_seconds, expires_at, created_at, key_id, tenant, isolation, runtime_handle, \
     listen_port, status_reason, node_id, region, metadata, egress, on_timeout, snapshot_id, \
     secret_bindings";

/// Statuses whose processes may exist.
const LIVE: &str = "('creating','running','paused')";

impl Store {
    pub async fn insert_sandbox(
        &self,
        s: NewSandbox<'_>,
        now: i64,
    ) -> Result<SandboxRecord, StoreError> {
        let expires_at = s.timeout_seconds.map(|t| now.saturating_add(t));
        bind_new(sqlx::query(&insert_sql(None)), &s, expires_at, now)
            .execute(&self.pool)
            .await?;
        Ok(new_record(&s, expires_at, now))
    }

    /// Records a new sandbox only if its tenant's live sandboxes, with it, stay within `quota`:
    /// the check and the insert are one step, so creates never queue on a lock of the control
    /// plane's to check quotas (SQLite runs one statement at a time; PostgreSQL's control planes
    /// take a per-tenant transaction lock). None: over quota, nothing recorded.
    pub async fn insert_sandbox_within(
        &self,
        s: NewSandbox<'_>,
        quota: Quota,
        now: i64,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let expires_at = s.timeout_seconds.map(|t| now.saturating_add(t));
        let sql = insert_sql(Some(&within_quota("$14", "$5", "$6", 23)));
        let query = bind_new(sqlx::query(&sql), &s, expires_at, now);
        let inserted = self.run_for_tenant(s.tenant, quota.bind(query)).await?;
        Ok((inserted.rows_affected() == 1).then(|| new_record(&s, expires_at, now)))
    }

    pub async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    pub async fn set_sandbox_status(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        // A live sandbox's reason (why it was paused) goes with the state it explained.
        let sql = if status.is_live() {
            "UPDATE sandboxes SET status = $1, status_reason = NULL, updated_at = $2 WHERE id = $3"
        } else {
            "UPDATE sandboxes SET status = $1, updated_at = $2 WHERE id = $3"
        };
        sqlx::query(sql)
            .bind(status.as_str())
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a running sandbox as paused, with why; false when it no longer runs (a request
    /// or a delete came first).
    pub async fn set_sandbox_paused_because(
        &self,
        id: &SandboxId,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET status = 'paused', status_reason = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'running'",
        )
        .bind(reason)
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that a sandbox ended (`status` is stopped, deleted or error), with the reason
    /// when the server rather than a user ended it. Its runtime handle is forgotten: nothing of
    /// it is left to take over.
    pub async fn end_sandbox(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET status = $1, status_reason = COALESCE($2, status_reason), \
             runtime_handle = NULL, updated_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a started sandbox as running, with what a restarted server needs to take it over.
    pub async fn set_sandbox_running(
        &self,
        id: &SandboxId,
        runtime_handle: &str,
        listen_port: Option<u16>,
        now: i64,
    ) -> Result<(), StoreError> {
        let running = Some(SandboxStatus::Running);
        self.update_runtime(id, running, runtime_handle, listen_port, now)
            .await
    }

    /// Records what a restarted server needs to take the running sandbox over.
    pub async fn record_sandbox_runtime(
        &self,
        id: &SandboxId,
        runtime_handle: &str,
        listen_port: Option<u16>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.update_runtime(id, None, runtime_handle, listen_port, now)
            .await
    }

    async fn update_runtime(
        &self,
        id: &SandboxId,
        status: Option<SandboxStatus>,
        runtime_handle: &str,
        listen_port: Option<u16>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET status = COALESCE($1, status), runtime_handle = $2, \
             listen_port = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(status.map(SandboxStatus::as_str))
        .bind(runtime_handle)
        .bind(listen_port.map(i64::from))
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Hands a warm (pooled) sandbox, recorded under `pool_tenant`, to its new owner: one
    /// conditional update, so a pooled sandbox is never given to two creates even by two control
    /// planes. Its creation time becomes `now`. None when it is no longer in the pool.
    pub async fn claim_pooled_sandbox(
        &self,
        id: &SandboxId,
        pool_tenant: &str,
        claim: ClaimPooled<'_>,
        quota: Quota,
        now: i64,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let expires_at = claim.timeout_seconds.map(|t| now.saturating_add(t));
        let sql = format!(
            "UPDATE sandboxes SET tenant = $1, key_id = $2, timeout_seconds = $3, expires_at = $4, \
             internet_access = $5, metadata = $6, on_timeout = $7, created_at = $8, updated_at = $8 \
             WHERE id = $9 AND tenant = $10 AND status = 'running' AND {}",
            within_quota("$1", "sandboxes.vcpu", "sandboxes.memory_mb", 11)
        );
        let query = sqlx::query(&sql)
            .bind(claim.tenant)
            .bind(claim.key_id)
            .bind(claim.timeout_seconds)
            .bind(expires_at)
            .bind(i64::from(claim.internet_access))
            .bind(claim.metadata)
            .bind(claim.on_timeout.column())
            .bind(now)
            .bind(id.as_str())
            .bind(pool_tenant);
        let done = self.run_for_tenant(claim.tenant, quota.bind(query)).await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_sandbox(id).await
    }

    /// Removes a sandbox's row: for warm sandboxes that ended without ever being anyone's
    /// (they are not history worth keeping).
    pub async fn forget_sandbox(&self, id: &SandboxId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the sandbox's egress policy (JSON; None: internet access alone decides).
    pub async fn set_sandbox_egress(
        &self,
        id: &SandboxId,
        egress: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET egress = $1, updated_at = $2 WHERE id = $3")
            .bind(egress)
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the sandbox to expire `timeout_seconds` from `now`.
    pub async fn set_sandbox_timeout(
        &self,
        id: &SandboxId,
        timeout_seconds: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET timeout_seconds = $1, expires_at = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(timeout_seconds)
        .bind(now.saturating_add(timeout_seconds))
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_sandbox_on_timeout(
        &self,
        id: &SandboxId,
        on_timeout: OnTimeout,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET on_timeout = $1, updated_at = $2 WHERE id = $3")
            .bind(on_timeout.column())
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes a sandbox's expiry away (a sandbox paused at its timeout waits to be resumed); its
    /// `timeout_seconds` stays, the timeout it gets again when a request resumes it.
    pub async fn clear_sandbox_expiry(&self, id: &SandboxId, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET expires_at = NULL, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Lists a tenant's sandboxes oldest first. Only live ones unless a status filter asks
    /// otherwise; only those of `region` when given.
    pub async fn list_sandboxes(
        &self,
        tenant: &str,
        status: Option<SandboxStatus>,
        region: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SandboxPage, StoreError> {
        let after: i64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit = i64::from(limit.clamp(1, 1000));
        let mut sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND seq > $2");
        let mut next = 3;
        match status {
            Some(_) => {
                sql.push_str(&format!(" AND status = ${next}"));
                next += 1;
            }
            None => sql.push_str(&format!(" AND status IN {LIVE}")),
        }
        if region.is_some() {
            sql.push_str(&format!(" AND region = ${next}"));
            next += 1;
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(tenant).bind(after);
        if let Some(s) = status {
            query = query.bind(s.as_str());
        }
        if let Some(r) = region {
            query = query.bind(r);
        }
        let rows = query.bind(limit + 1).fetch_all(&self.pool).await?;
        let more = rows.len() as i64 > limit;
        let page = &rows[..rows.len().min(limit as usize)];
        let next_cursor = match page.last() {
            Some(r) if more => Some(int(r, "seq")?.to_string()),
            _ => None,
        };
        let items = page
            .iter()
            .map(sandbox_from_row)
            .collect::<Result<_, _>>()?;
        Ok(SandboxPage { items, next_cursor })
    }

    /// Every sandbox whose processes may exist: what a restart takes over or cleans up.
    pub async fn live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE status IN {LIVE} ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    /// The live sandboxes of one node (`None`: the control plane's own).
    pub async fn live_sandboxes_on(
        &self,
        node_id: Option<&str>,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = match node_id {
            Some(node) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE status IN {LIVE} AND node_id = $1 ORDER BY seq"
                ))
                .bind(node)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE status IN {LIVE} AND node_id IS NULL ORDER BY seq"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(sandbox_from_row).collect()
    }

    /// Live sandboxes whose `expires_at` is at or before `now`.
    pub async fn expired_sandboxes(&self, now: i64) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE status IN {LIVE} \
             AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    /// The earliest `expires_at` among live sandboxes, so the reaper can sleep until then.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT MIN(expires_at) AS next FROM sandboxes WHERE status IN {LIVE}"
        ))
        .fetch_one(&self.pool)
        .await?;
        opt_int(&row, "next")
    }

    /// Live sandboxes of a tenant and the resources they hold: what quotas are checked against.
    pub async fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        // SUM of integers is NUMERIC in PostgreSQL: cast back to the shared 64-bit integer.
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(vcpu), 0) AS BIGINT) AS vcpu, \
             CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS mem \
             FROM sandboxes WHERE tenant = $1 AND status IN {LIVE}"
        ))
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        let count = |col| int(&row, col).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(TenantUsage {
            sandboxes: count("n")?,
            vcpu: count("vcpu")?,
            memory_mb: count("mem")?,
        })
    }
}

/// The record of a sandbox just inserted.
fn new_record(s: &NewSandbox<'_>, expires_at: Option<i64>, now: i64) -> SandboxRecord {
    SandboxRecord {
        id: s.id.clone(),
        template_id: s.template_id.to_owned(),
        template_name: s.template_name.to_owned(),
        status: SandboxStatus::Creating,
        resources: s.resources,
        internet_access: s.internet_access,
        timeout_seconds: s.timeout_seconds,
        expires_at,
        created_at: now,
        key_id: s.key_id.map(str::to_owned),
        tenant: s.tenant.to_owned(),
        isolation: s.isolation,
        runtime_handle: None,
        listen_port: None,
        status_reason: None,
        node_id: s.node_id.map(str::to_owned),
        region: s.region.map(str::to_owned),
        metadata: s.metadata.map(str::to_owned),
        egress: s.egress.map(str::to_owned),
        on_timeout: s.on_timeout,
        snapshot_id: s.snapshot_id.map(str::to_owned),
        secret_bindings: s.secret_bindings.map(str::to_owned),
    }
}
/// How many more live sandboxes, vCPUs and MB of memory a tenant may hold beyond the store's
/// count (its quotas less what the control plane counts elsewhere, e.g. build sandboxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub sandboxes: u64,
    pub vcpu: u64,
    pub memory_mb: u64,
}

impl Quota {
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        q.bind(big(self.sandboxes))
            .bind(big(self.vcpu))
            .bind(big(self.memory_mb))
    }
}

/// A condition that holds while the live sandboxes of the tenant named by parameter `tenant`,
/// with one more using `vcpu` and `memory` (parameters or columns), stay within the quota bound
/// as parameters `first`, `first + 1` and `first + 2` (`Quota::bind`).
fn within_quota(tenant: &str, vcpu: &str, memory: &str, first: u32) -> String {
    let live = format!("FROM sandboxes AS q WHERE q.tenant = {tenant} AND q.status IN {LIVE}");
    format!(
        "(SELECT COUNT(*) {live}) + 1 <= ${first} \
         AND (SELECT COALESCE(SUM(q.vcpu), 0) {live}) + {vcpu} <= ${} \
         AND (SELECT COALESCE(SUM(q.memory_mb), 0) {live}) + {memory} <= ${}",
        first + 1,
        first + 2
    )
}

impl Store {
    /// Runs a statement that checks `tenant`'s quota: on SQLite as it is (one statement at a
    /// time); on PostgreSQL in a transaction holding the tenant's lock, so checks of one tenant
    /// by several control planes never run side by side.
    async fn run_for_tenant<'q>(
        &self,
        tenant: &str,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<sqlx::any::AnyQueryResult, StoreError> {
        match self.backend {
            crate::Backend::Sqlite => Ok(query.execute(&self.pool).await?),
            crate::Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
                let done = query.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done)
            }
        }
    }
}

/// The sandbox insert; with a condition, only if it holds.
fn insert_sql(condition: Option<&str>) -> String {
    const COLUMNS: &str = "id, template_id, template_name, status, vcpu, memory_mb, disk_mb, \
         internet_access, timeout_seconds, expires_at, created_at, updated_at, key_id, tenant, isolation, \
         node_id, region, metadata, egress, on_timeout, snapshot_id, secret_bindings";
    const VALUES: &str =
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22";
    match condition {
        None => format!("INSERT INTO sandboxes ({COLUMNS}) VALUES ({VALUES})"),
        Some(c) => format!("INSERT INTO sandboxes ({COLUMNS}) SELECT {VALUES} WHERE {c}"),
    }
}

fn bind_new<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    s: &NewSandbox<'q>,
    expires_at: Option<i64>,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(s.id.as_str().to_owned())
        .bind(s.template_id)
        .bind(s.template_name)
        .bind(SandboxStatus::Creating.as_str())
        .bind(i64::from(s.resources.vcpu))
        .bind(i64::from(s.resources.memory_mb))
        .bind(i64::from(s.resources.disk_mb))
        .bind(i64::from(s.internet_access))
        .bind(s.timeout_seconds)
        .bind(expires_at)
        .bind(now)
        .bind(now)
        .bind(s.key_id)
        .bind(s.tenant)
        .bind(s.isolation.as_str())
        .bind(s.node_id)
        .bind(s.region)
        .bind(s.metadata)
        .bind(s.egress)
        .bind(s.on_timeout.column())
        .bind(s.snapshot_id)
        .bind(s.secret_bindings)
}

fn sandbox_from_row(r: &sqlx::any::AnyRow) -> Result<SandboxRecord, StoreError> {
    let id = text(r, "id")?;
    let status = text(r, "status")?;
    Ok(SandboxRecord {
        id: SandboxId::parse(&id).map_err(|_| StoreError::Corrupt(format!("sandbox id {id}")))?,
        template_id: text(r, "template_id")?,
        template_name: text(r, "template_name")?,
        status: SandboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox status {status}")))?,
        resources: Resources {
            vcpu: uint(r, "vcpu")?,
            memory_mb: uint(r, "memory_mb")?,
            disk_mb: uint(r, "disk_mb")?,
        },
        internet_access: flag(r, "internet_access")?,
        timeout_seconds: opt_int(r, "timeout_seconds")?,
        expires_at: opt_int(r, "expires_at")?,
        created_at: int(r, "created_at")?,
        key_id: opt_text(r, "key_id")?,
        tenant: text(r, "tenant")?,
        isolation: tier(r, "isolation")?,
        runtime_handle: opt_text(r, "runtime_handle")?,
        listen_port: opt_int(r, "listen_port")?.and_then(|p| u16::try_from(p).ok()),
        status_reason: opt_text(r, "status_reason")?,
        node_id: opt_text(r, "node_id")?,
        region: opt_text(r, "region")?,
        metadata: opt_text(r, "metadata")?,
        egress: opt_text(r, "egress")?,
        on_timeout: OnTimeout::of_column(opt_text(r, "on_timeout")?.as_deref()),
        snapshot_id: opt_text(r, "snapshot_id")?,
        secret_bindings: opt_text(r, "secret_bindings")?,
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    pub sandboxes: u64,
    pub vcpu: u64,
    pub memory_mb: u64,
}

impl Store {
    /// How many sandboxes are in each live state (`creating`, `running`, `paused`), for metrics.
    pub async fn count_live_sandboxes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM sandboxes WHERE status IN {LIVE} GROUP BY status"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((crate::row::text(r, "status")?, crate::row::int(r, "n")?)))
            .collect()
    }
}

//! Store behaviour against a real SQLite file.

use warren_core::{Resources, SandboxId, SandboxStatus};

use crate::{NewSandbox, Store};

const RES: Resources = Resources {
    vcpu: 1,
    memory_mb: 512,
    disk_mb: 1024,
};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    (dir, store)
}

async fn add(store: &Store, now: i64, timeout: Option<i64>) -> SandboxId {
    let id = SandboxId::generate();
    store
        .insert_sandbox(
            NewSandbox {
                id: &id,
                template_id: "2",
                template_name: "code-interpreter",
                resources: RES,
                internet_access: false,
                timeout_seconds: timeout,
                key_id: None,
            },
            now,
        )
        .await
        .expect("insert");
    store
        .set_sandbox_status(&id, SandboxStatus::Running, now)
        .await
        .expect("status");
    id
}

#[tokio::test]
async fn keys_are_stored_hashed_and_can_be_revoked() {
    let (dir, store) = store().await;
    let key = store.create_api_key("ci", 1).await.expect("create");
    assert!(store.find_key(&key.secret).await.expect("find").is_some());
    assert!(store
        .find_key("wrn_live_nonsense")
        .await
        .expect("find")
        .is_none());
    let db = std::fs::read(dir.path().join("warren.db")).expect("db file");
    let wal = std::fs::read(dir.path().join("warren.db-wal")).unwrap_or_default();
    let needle = key.secret.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext key found on disk"
        );
    }
    assert!(store.revoke_key(&key.record.id, 2).await.expect("revoke"));
    assert!(store.find_key(&key.secret).await.expect("find").is_none());
}

#[tokio::test]
async fn pages_cover_every_sandbox_exactly_once() {
    let (_dir, store) = store().await;
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(add(&store, i, None).await);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sandboxes(None, cursor.as_deref(), 3)
            .await
            .expect("list");
        seen.extend(page.items.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, all);
}

#[tokio::test]
async fn expiry_finds_only_due_live_sandboxes() {
    let (_dir, store) = store().await;
    let due = add(&store, 100, Some(10)).await;
    let later = add(&store, 100, Some(1000)).await;
    let _forever = add(&store, 100, None).await;
    let expired: Vec<_> = store
        .expired_sandboxes(110)
        .await
        .expect("expired")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(expired, vec![due.clone()]);
    assert_eq!(store.next_expiry().await.expect("next"), Some(110));
    store
        .set_sandbox_status(&due, SandboxStatus::Stopped, 111)
        .await
        .expect("stop");
    assert_eq!(store.next_expiry().await.expect("next"), Some(1100));
    store
        .set_sandbox_timeout(&later, 5, 200)
        .await
        .expect("timeout");
    let s = store
        .get_sandbox(&later)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(s.expires_at, Some(205));
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let store = Store::open(dir.path()).await.expect("open");
        add(&store, 5, None).await
    };
    let store = Store::open(dir.path()).await.expect("reopen");
    let s = store.get_sandbox(&id).await.expect("get").expect("present");
    assert_eq!(s.status, SandboxStatus::Running);
    assert_eq!(store.live_sandboxes().await.expect("live").len(), 1);
}

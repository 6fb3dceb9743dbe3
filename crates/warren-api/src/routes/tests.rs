//! The router as a client meets it, driven in-process with `oneshot` over a fake node: who may
//! call what, the error envelopes both SDK families parse, and what each protocol's create
//! refuses. No socket, no root.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use warren_store::{KeyEnvironment, KeySpec, Role};

use crate::nodes::NodeHandle;
use crate::testing::{Harness, Setup};

/// Sends one request through the whole app; the answer's status, JSON body and headers.
async fn call(
    h: &Harness,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value, HeaderMap) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or_default().to_owned()))
        .expect("request");
    let res = super::app(h.state.clone())
        .oneshot(req)
        .await
        .expect("an answer");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

/// `POST /v1/sandboxes` with the harness's key.
async fn create(h: &Harness, body: &str) -> (StatusCode, Value) {
    let (status, json, _) = call(
        h,
        Method::POST,
        "/v1/sandboxes",
        &[("x-api-key", &h.key)],
        Some(body),
    )
    .await;
    (status, json)
}

/// The hybrid envelope of the wire spec (§2.2): both SDKs find code, message and request id.
fn assert_envelope(body: &Value, headers: &HeaderMap, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["message"], body["message"], "{body}");
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-ID");
    assert_eq!(body["request_id"], id);
    assert_eq!(body["error"]["request_id"], id);
}

#[tokio::test]
async fn health_is_open_and_the_api_needs_a_key() {
    let h = Harness::new().await;
    let (status, body, _) = call(&h, Method::GET, "/health", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(body["isolation_tiers"], json!(["namespaces", "gvisor"]));

    let (status, body, headers) = call(&h, Method::GET, "/v1/sandboxes", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, &headers, "AUTHENTICATION_REQUIRED");

    let wrong = [("x-api-key", "wrn_live_0000000000000000")];
    let (status, body, headers) = call(&h, Method::GET, "/v1/sandboxes", &wrong, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, &headers, "INVALID_TOKEN");
}

#[tokio::test]
async fn a_key_is_accepted_as_x_api_key_or_bearer() {
    let h = Harness::new().await;
    let bearer = format!("Bearer {}", h.key);
    for headers in [
        [("x-api-key", h.key.as_str())],
        [("authorization", bearer.as_str())],
    ] {
        let (status, body, _) = call(&h, Method::GET, "/v1/sandboxes", &headers, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["data"].is_array(), "{body}");
    }
}

#[tokio::test]
async fn a_create_answers_with_its_token_and_the_sandbox_runs() {
    let h = Harness::new().await;
    h.builtin_ready("base");
    let (status, body) = create(&h, r#"{"template_name": "base", "timeout_seconds": 600}"#).await;
    assert!(status.is_success(), "{status} {body}");
    let id = body["id"].as_str().expect("id");
    assert_eq!(body["status"], "running");
    assert!(body["auth_token"].as_str().is_some_and(|t| !t.is_empty()));
    let expires = body["token_expires_at"].as_str().expect("token_expires_at");
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    assert_eq!(
        body["resources"]["vcpu"],
        json!(body["resources"]["vcpu"].as_u64().expect("vcpu"))
    );
    let sandbox = warren_core::SandboxId::parse(id).expect("an id");
    assert!(h.node.sandbox(&sandbox).is_some(), "started on the node");
}

#[tokio::test]
async fn create_mistakes_are_400s_that_name_the_field() {
    let h = Harness::new().await;
    h.builtin_ready("base");
    let cases = [
        (
            r#"{"template_name": "base", "timeout_seconds": 0}"#,
            "timeout_seconds",
        ),
        (
            r#"{"template_name": "base", "timeout_seconds": 99999999999}"#,
            "timeout_seconds",
        ),
        (
            r#"{"template_name": "base", "env_vars": {"A=B": "x"}}"#,
            "env_vars",
        ),
        (
            r#"{"template_name": "base", "isolation": "firecracker"}"#,
            "isolation tier",
        ),
        (
            r#"{"template_name": "base", "isolation": "microvm"}"#,
            "isolation tier",
        ),
        (r#"{"timeout_seconds": 60}"#, "template_name"),
        (
            // E2B's words, which name the list and the entry.
            r#"{"template_name": "base", "network": {"allow_out": ["not-an-ip/99"]}}"#,
            "invalid allowed domain \"not-an-ip/99\"",
        ),
        (r#"{"template_name": 7"#, "JSON"),
    ];
    for (body, names) in cases {
        let (status, json, headers) = call(
            &h,
            Method::POST,
            "/v1/sandboxes",
            &[("x-api-key", &h.key)],
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_envelope(&json, &headers, "INVALID_REQUEST");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains(&names.to_lowercase()),
            "{body}: {message:?} should name {names}"
        );
    }
    assert!(h.node.sandboxes().is_empty(), "nothing started");

    let (status, json) = create(&h, r#"{"template_name": "nope"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["message"], "Template not found: nope");
}

#[tokio::test]
async fn a_quota_refusal_carries_what_the_sdks_read() {
    let mut setup = Setup::default();
    setup.limits.max_sandboxes_per_tenant = 1;
    let h = Harness::with(setup).await;
    h.builtin_ready("base");
    let (status, _) = create(&h, r#"{"template_name": "base"}"#).await;
    assert!(status.is_success());
    let (status, body, headers) = call(
        &h,
        Method::POST,
        "/v1/sandboxes",
        &[("x-api-key", &h.key)],
        Some(r#"{"template_name": "base"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_envelope(&body, &headers, "RESOURCE_LIMIT_EXCEEDED");
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("limit")));
    let details = &body["error"]["details"];
    assert_eq!(
        (details["limit"].as_u64(), details["current"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(details["available"], 0);
}

#[tokio::test]
async fn another_organizations_sandbox_is_not_found() {
    let h = Harness::new().await;
    h.builtin_ready("base");
    let (_, body) = create(&h, r#"{"template_name": "base"}"#).await;
    let id = body["id"].as_str().expect("id").to_owned();
    let other = h
        .store
        .create_api_key(
            &KeySpec {
                name: "other",
                tenant: "globex",
                role: Role::Admin,
                environment: KeyEnvironment::Live,
                expires_at: None,
            },
            crate::clock::now(),
        )
        .await
        .expect("key");
    let path = format!("/v1/sandboxes/{id}");
    for method in [Method::GET, Method::DELETE] {
        let (status, body, headers) =
            call(&h, method, &path, &[("x-api-key", &other.secret)], None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&body, &headers, "RESOURCE_NOT_FOUND");
        assert_eq!(body["message"], "Sandbox not found");
    }
    let (status, _, _) = call(&h, Method::GET, &path, &[("x-api-key", &h.key)], None).await;
    assert_eq!(status, StatusCode::OK, "its owner still sees it");
}

#[tokio::test]
async fn e2b_calls_are_answered_in_e2bs_shapes() {
    let h = Harness::new().await;
    h.builtin_ready("base");
    let key = [("x-api-key", h.key.as_str())];
    let (status, body, _) = call(
        &h,
        Method::POST,
        "/sandboxes",
        &key,
        Some(r#"{"templateID": "base", "timeout": 60}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["sandboxID"].as_str().is_some());
    assert!(body["envdAccessToken"].as_str().is_some());

    let refusals = [
        (r#"{"templateID": "nope"}"#, StatusCode::NOT_FOUND, "nope"),
        (
            r#"{"templateID": "base", "timeout": 0}"#,
            StatusCode::BAD_REQUEST,
            "timeout",
        ),
        (
            r#"{"templateID": "base", "network": {"maskRequestHost": "x"}}"#,
            StatusCode::BAD_REQUEST,
            "network.maskRequestHost",
        ),
        (r#"{"templateID": "base""#, StatusCode::BAD_REQUEST, "JSON"),
    ];
    for (body, want, names) in refusals {
        let (status, json, _) = call(&h, Method::POST, "/sandboxes", &key, Some(body)).await;
        assert_eq!(status, want, "{body}: {json}");
        assert_eq!(json["code"], want.as_u16(), "E2B's numeric code: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| m.contains(names)),
            "{body}: {json}"
        );
        assert!(
            json.get("request_id").is_none(),
            "not the Hopx envelope: {json}"
        );
    }

    let (status, json, _) = call(&h, Method::GET, "/v2/sandboxes", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], 401);
}

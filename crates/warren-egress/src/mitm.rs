//! TLS to a host a sandbox has secrets for, terminated by the proxy with the node's CA: each
//! request must name the host the TLS server name named (no fronting another host through an
//! allowed one), the placeholders of secrets bound to that host are replaced by their values in
//! the request's headers, and the request goes on over TLS whose certificate the proxy checked.
//! Redirects are not followed: a client that follows one sends a new request, and a host the
//! secret is not bound to gets the placeholder.

use std::net::SocketAddrV4;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::http::{host_of, refusal, Body};
use crate::policy::Policy;
use crate::state::{Guarded, Shared};
use http_body_util::BodyExt;

struct Conn {
    shared: Arc<Shared>,
    sandbox: Arc<Guarded>,
    sni: String,
    dest: SocketAddrV4,
    upstream: Mutex<Option<SendRequest<Incoming>>>,
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    sandbox: Arc<Guarded>,
    stream: TcpStream,
    sni: String,
    dest: SocketAddrV4,
) {
    let Some(mitm) = shared.mitm.as_ref() else {
        return crate::state::reset(stream);
    };
    let cfg = match mitm.ca.server_config(&sni) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(name = %sni, error = %e, "egress proxy: cannot mint a certificate");
            return crate::state::reset(stream);
        }
    };
    let _ = stream.set_nodelay(true);
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await else {
        return;
    };
    let (live, mut cut) = shared.track(&sandbox, Some(sni.clone()), *dest.ip());
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        sandbox: sandbox.clone(),
        sni,
        dest,
        upstream: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::select! {
        _ = serving => {}
        _ = cut.wait_for(|c| *c) => {}
    }
    shared.untrack(&sandbox, live);
}

impl Conn {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let host = host_of(&req).unwrap_or_else(|| self.sni.clone());
        if host != self.sni {
            let verdict = crate::policy::Verdict {
                allowed: false,
                rule: format!("Host {host} differs from the TLS server name {}", self.sni),
            };
            self.shared
                .refused(&self.sandbox, Some(&host), self.dest, &verdict);
            return refusal(
                StatusCode::MISDIRECTED_REQUEST,
                format!("Warren egress: {}\n", verdict.rule),
            );
        }
        let policy = self.sandbox.policy();
        let verdict = policy.judge(Some(&host), *self.dest.ip());
        if !verdict.allowed {
            self.shared
                .refused(&self.sandbox, Some(&host), self.dest, &verdict);
            return refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "Warren egress: {host} is not allowed by this sandbox's network policy ({})\n",
                    verdict.rule
                ),
            );
        }
        let mut done = substitute(&policy, &host, req.headers_mut());
        done.extend(apply_rules(&policy, &host, req.headers_mut()));
        for used in done {
            self.shared
                .allowed(&self.sandbox, Some(&host), self.dest, used, (0, 0));
        }
        let mut upstream = self.upstream.lock().await;
        if upstream.as_ref().is_none_or(|s| s.is_closed()) {
            match self.dial().await {
                Ok(s) => *upstream = Some(s),
                Err(why) => {
                    return refusal(
                        StatusCode::BAD_GATEWAY,
                        format!("Warren egress: cannot reach {host}: {why}\n"),
                    )
                }
            }
        }
        let Some(sender) = upstream.as_mut() else {
            return refusal(StatusCode::BAD_GATEWAY, "no upstream".into());
        };
        match sender.send_request(req).await {
            Ok(resp) => resp.map(|b| b.boxed()),
            Err(e) => refusal(
                StatusCode::BAD_GATEWAY,
                format!("Warren egress: {host} failed: {e}\n"),
            ),
        }
    }

    /// TLS to the name itself, its certificate checked against the web's roots and the
    /// operator's (`--egress-upstream-ca`).
    async fn dial(&self) -> Result<SendRequest<Incoming>, String> {
        let mitm = self
            .shared
            .mitm
            .as_ref()
            .ok_or("no TLS interception here")?;
        let tcp = self
            .shared
            .dial(&self.sni, self.dest.port())
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from(self.sni.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(mitm.upstream.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// Replaces, in header values, the placeholders of secrets bound to `host`; returns what was
/// done for the audit trail (secret names, never values). A placeholder of a secret bound
/// elsewhere is left as it is, and recorded.
pub(crate) fn substitute(
    policy: &Policy,
    host: &str,
    headers: &mut hyper::HeaderMap,
) -> Vec<String> {
    let mut done = Vec::new();
    for (header, value) in headers.iter_mut() {
        let Ok(text) = value.to_str() else { continue };
        let mut replaced = text.to_owned();
        for s in policy.secrets.iter().filter(|s| !s.rule_only) {
            if !replaced.contains(&s.placeholder) {
                continue;
            }
            if s.bound_to(host) {
                replaced = replaced.replace(&s.placeholder, &s.value);
                done.push(format!("secret {} put in header {header}", s.name));
            } else {
                done.push(format!(
                    "secret {} placeholder sent unchanged (not bound to {host})",
                    s.name
                ));
            }
        }
        if replaced != text {
            match HeaderValue::from_str(&replaced) {
                Ok(v) => *value = v,
                // A value a header cannot carry (a newline): the placeholder stays.
                Err(_) => done.push(format!(
                    "header {header}: the secret's value cannot be sent in a header"
                )),
            }
        }
    }
    done
}

/// Sets the headers of the rules for `host` (replacing the sandbox's own), their secrets'
/// placeholders filled in; returns what was done for the audit trail (names, never values).
pub(crate) fn apply_rules(
    policy: &Policy,
    host: &str,
    headers: &mut hyper::HeaderMap,
) -> Vec<String> {
    let mut done = Vec::new();
    for rule in policy.rules_for(host) {
        for (name, template) in &rule.headers {
            let mut value = template.clone();
            let mut used = Vec::new();
            for s in policy.secrets.iter().filter(|s| s.bound_to(host)) {
                if value.contains(&s.placeholder) {
                    value = value.replace(&s.placeholder, &s.value);
                    used.push(s.name.as_str());
                }
            }
            let (Ok(n), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) else {
                done.push(format!(
                    "header {name}: the rule's value cannot be sent in a header"
                ));
                continue;
            };
            headers.insert(n, v);
            done.push(match used.is_empty() {
                true => format!("rule for {} set header {name}", rule.host),
                false => format!("secret {} put in header {name} by rule", used.join(", ")),
            });
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Brokered, Domain};

    fn policy(value: &str) -> Policy {
        Policy {
            secrets: vec![Brokered {
                name: "gh".into(),
                placeholder: "wrn_secret_abc".into(),
                value: value.into(),
                hosts: vec![Domain::Exact("api.test".into())],
                rule_only: false,
            }],
            ..Default::default()
        }
    }

    fn headers() -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer wrn_secret_abc"),
        );
        h.insert("x-other", HeaderValue::from_static("plain"));
        h
    }

    #[test]
    fn only_the_bound_host_gets_the_value_and_no_header_can_be_forged() {
        let mut h = headers();
        let done = substitute(&policy("s3cr3t"), "api.test", &mut h);
        assert_eq!(h["authorization"], "Bearer s3cr3t");
        assert_eq!(h["x-other"], "plain");
        assert_eq!(
            done,
            vec!["secret gh put in header authorization".to_owned()]
        );

        let mut h = headers();
        let done = substitute(&policy("s3cr3t"), "evil.test", &mut h);
        assert_eq!(h["authorization"], "Bearer wrn_secret_abc");
        assert!(done[0].contains("not bound to evil.test"), "{done:?}");

        // A value that would end the header line is not sent.
        let mut h = headers();
        substitute(&policy("x\r\nInjected: 1"), "api.test", &mut h);
        assert_eq!(h["authorization"], "Bearer wrn_secret_abc");
        assert!(h.get("injected").is_none());
    }

    #[test]
    fn rules_set_headers_and_their_secrets_only_there() {
        let mut p = policy("s3cr3t");
        p.secrets[0].placeholder = "${e2b.secrets.gh}".into();
        p.secrets[0].rule_only = true;
        p.rules = crate::policy::parse_rules([(
            "api.test",
            vec![("X-Api-Key", "key ${e2b.secrets.gh}")],
        )])
        .expect("valid");
        let mut h = hyper::HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("mine"));
        h.insert("x-echo", HeaderValue::from_static("${e2b.secrets.gh}"));
        let done = [
            substitute(&p, "api.test", &mut h),
            apply_rules(&p, "api.test", &mut h),
        ]
        .concat();
        assert_eq!(h["x-api-key"], "key s3cr3t");
        assert_eq!(
            h["x-echo"], "${e2b.secrets.gh}",
            "a rule's secret never fills the sandbox's own headers"
        );
        assert_eq!(
            done,
            vec!["secret gh put in header x-api-key by rule".to_owned()]
        );
        let mut h = hyper::HeaderMap::new();
        assert!(apply_rules(&p, "other.test", &mut h).is_empty());
        assert!(h.is_empty());
    }
}

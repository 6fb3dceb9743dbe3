//! A sandbox's egress rules as the node's host layer takes them (its policy and the secrets it
//! is given), and the trust the sandbox needs in the node's CA when secrets are brokered.

use std::collections::BTreeMap;

use warren_egress::policy::parse_hosts;
use warren_egress::{Brokered, Policy, PolicyError};
use warren_wire::agent::CommandRequest;
use warren_wire::cluster::SecretBinding;
use warren_wire::control::EgressPolicy;

use crate::agent_link::{AgentError, AgentLink};

/// The policy and the brokered secrets together; None when neither says anything.
pub fn rules(
    egress: Option<&EgressPolicy>,
    secrets: &[SecretBinding],
) -> Result<Option<Policy>, PolicyError> {
    let mut policy = match egress {
        Some(p) => parse(p)?,
        None => Policy::default(),
    };
    for s in secrets {
        policy.secrets.push(Brokered {
            name: s.name.clone(),
            placeholder: s.placeholder.clone(),
            value: s.value.clone(),
            hosts: parse_hosts(&s.hosts)?,
            rule_only: s.rule_only,
        });
    }
    Ok((!policy.is_empty()).then_some(policy))
}

/// A policy as the API takes it (lists and E2B's header rules), checked.
pub fn parse(p: &EgressPolicy) -> Result<Policy, PolicyError> {
    let mut policy = Policy::parse(&p.allow_out, &p.deny_out, &p.dns_servers)?;
    policy.rules = warren_egress::policy::parse_rules(p.rule_headers())?;
    Ok(policy)
}

/// Where the node's CA goes in the sandbox: its own file (Node.js takes extra CAs from one) and
/// appended to the system bundle, which OpenSSL, Python's ssl, curl and git read.
const CA_FILE: &str = "/usr/local/share/ca-certificates/warren-egress.crt";
const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Environment that points TLS clients with trust stores of their own (requests' certifi,
/// Node.js) at the bundle with the node's CA.
pub fn trust_env() -> BTreeMap<String, String> {
    [
        ("SSL_CERT_FILE", BUNDLE),
        ("REQUESTS_CA_BUNDLE", BUNDLE),
        ("CURL_CA_BUNDLE", BUNDLE),
        ("GIT_SSL_CAINFO", BUNDLE),
        ("NODE_EXTRA_CA_CERTS", CA_FILE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Puts the node's CA (PEM) in the sandbox's trust store, once.
pub async fn install_ca(agent: &AgentLink, pem: &str) -> Result<(), AgentError> {
    let script = format!(
        "set -e; [ -s {CA_FILE} ] && exit 0; mkdir -p /usr/local/share/ca-certificates /etc/ssl/certs; \
         printf '%s\\n' \"$WARREN_EGRESS_CA\" > {CA_FILE}; cat {CA_FILE} >> {BUNDLE}"
    );
    let out = agent
        .run_command(&CommandRequest {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            timeout: Some(30),
            workdir: Some("/".into()),
            env: Some([("WARREN_EGRESS_CA".to_owned(), pem.to_owned())].into()),
        })
        .await?;
    if out.success {
        Ok(())
    } else {
        Err(AgentError::Protocol(format!(
            "cannot install the egress CA: {}",
            out.stderr.trim()
        )))
    }
}

//! Checking the tokens a node is shown, with the control plane's public key only: sandbox
//! tokens (what the SDKs send to a sandbox's `public_host`) and the short-lived tokens a control
//! plane signs for each call to a node's API. Both are EdDSA (Ed25519) JWTs signed by the
//! control planes' shared key; a node holds no key that could make either.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Issuer of every Warren token.
pub const ISSUER: &str = "warren";

/// The claims of a sandbox token.
#[derive(Debug, Serialize, Deserialize)]
pub struct SandboxClaims {
    /// The sandbox id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    /// Id of the API key that obtained the token (for the audit trail); never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Set only on node-call tokens: a token with an audience is never a sandbox token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The claims of a control plane's call to one node's API.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeCallClaims {
    /// `warren-node:<node id>`.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
}

/// The audience of calls to node `node_id`.
pub fn node_audience(node_id: &str) -> String {
    format!("warren-node:{node_id}")
}

/// Verifies tokens with the control planes' public key (and, on a single machine upgraded from a
/// version that signed with a shared secret, that secret for tokens it issued then).
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    legacy_secret: Option<DecodingKey>,
}

impl TokenVerifier {
    /// From the 32 bytes of an Ed25519 public key.
    pub fn new(public_key: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_ed_der(public_key),
            legacy_secret: None,
        }
    }

    /// Also accepts HS256 tokens signed with `secret` (issued before keys were asymmetric).
    pub fn with_legacy_secret(mut self, secret: &[u8]) -> Self {
        self.legacy_secret = Some(DecodingKey::from_secret(secret));
        self
    }

    /// For a valid, unexpired token of `sandbox_id`: the id of the key that obtained it (if
    /// recorded). None for anything else, node-call tokens included.
    pub fn sandbox(&self, token: &str, sandbox_id: &str) -> Option<Option<String>> {
        self.sandbox_claims(token)
            .filter(|c| c.sub == sandbox_id)
            .map(|c| c.kid)
    }

    /// The sandbox a valid, unexpired sandbox token is for.
    pub fn sandbox_of(&self, token: &str) -> Option<String> {
        self.sandbox_claims(token).map(|c| c.sub)
    }

    fn sandbox_claims(&self, token: &str) -> Option<SandboxClaims> {
        let alg = jsonwebtoken::decode_header(token).ok()?.alg;
        let key = match alg {
            Algorithm::EdDSA => &self.key,
            Algorithm::HS256 => self.legacy_secret.as_ref()?,
            _ => return None,
        };
        let mut v = Validation::new(alg);
        v.set_issuer(&[ISSUER]);
        v.leeway = 0;
        // Sandbox tokens have no audience: one that has one is a node-call token.
        v.validate_aud = false;
        decode::<SandboxClaims>(token, key, &v)
            .ok()
            .map(|d| d.claims)
            .filter(|c| c.aud.is_none())
    }

    /// Whether `token` is a valid, unexpired call token for node `node_id`.
    pub fn node_call(&self, token: &str, node_id: &str) -> bool {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[node_audience(node_id)]);
        v.leeway = 5;
        decode::<NodeCallClaims>(token, &self.key, &v).is_ok()
    }
}

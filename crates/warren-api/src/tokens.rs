//! Sandbox access tokens, and the tokens control planes sign for their calls to nodes: EdDSA
//! (Ed25519) JWTs. The private key is shared by every control plane through the store (generated
//! by the first one to start) and never leaves them: nodes get the public key and can check
//! tokens but not make them. Tokens are bound to one sandbox id (or one node) and checked
//! outside the sandbox, by the node's proxy.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use warren_node::tokens::{node_audience, NodeCallClaims, SandboxClaims, TokenVerifier, ISSUER};
use warren_store::Store;

/// Both SDKs refresh when under an hour is left; 24 h matches their own examples.
pub const TOKEN_TTL_SECONDS: i64 = 24 * 3600;
/// A control plane's call to a node is signed for this long.
const NODE_CALL_TTL_SECONDS: i64 = 120;
/// The store setting holding the signing key (PKCS#8, base64).
const KEY_SETTING: &str = "token_signing_key";

pub struct TokenSigner {
    encoding: EncodingKey,
    verifier: TokenVerifier,
    public_key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("token signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] warren_store::StoreError),
}

impl TokenSigner {
    /// The key every control plane of `store` shares, made by the first to start. Tokens a
    /// single-machine server signed before with `data_dir/jwt.key` stay valid until they expire.
    pub async fn load(store: &Store, data_dir: &Path) -> Result<Self, TokenKeyError> {
        let fresh =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|e| TokenKeyError::Key(e.to_string()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let stored = store
            .setting_or_insert(KEY_SETTING, &b64.encode(fresh.as_ref()))
            .await?;
        let pkcs8 = b64
            .decode(stored.trim())
            .map_err(|e| TokenKeyError::Key(e.to_string()))?;
        let mut signer = Self::from_pkcs8(&pkcs8)?;
        if let Ok(secret) = std::fs::read(data_dir.join("jwt.key")) {
            if secret.len() >= 32 {
                signer.verifier = signer.verifier.with_legacy_secret(&secret);
            }
        }
        Ok(signer)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TokenKeyError> {
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| TokenKeyError::Key(e.to_string()))?;
        let public_key = pair.public_key().as_ref().to_vec();
        Ok(Self {
            encoding: EncodingKey::from_ed_der(pkcs8),
            verifier: TokenVerifier::new(&public_key),
            public_key,
        })
    }

    /// The public key (32 bytes, base64) nodes verify with.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public_key)
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Returns (token, expires_at).
    pub fn issue(
        &self,
        sandbox_id: &str,
        key_id: Option<&str>,
        now: i64,
    ) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let exp = now + TOKEN_TTL_SECONDS;
        let claims = SandboxClaims {
            sub: sandbox_id.to_owned(),
            exp,
            iat: now,
            iss: ISSUER.to_owned(),
            kid: key_id.map(str::to_owned),
            aud: None,
        };
        Ok((
            encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)?,
            exp,
        ))
    }

    /// A token for one call (or a minute of calls) to node `node_id`'s API.
    pub fn node_call(
        &self,
        node_id: &str,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = NodeCallClaims {
            aud: node_audience(node_id),
            exp: now + NODE_CALL_TTL_SECONDS,
            iat: now,
            iss: ISSUER.to_owned(),
        };
        encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
    }

    /// Whether `token` is valid, unexpired, and issued for `sandbox_id`.
    #[cfg(test)]
    pub fn verify(&self, token: &str, sandbox_id: &str) -> bool {
        self.verified_key(token, sandbox_id).is_some()
    }

    /// For a valid token of `sandbox_id`: the id of the key that obtained it (if recorded).
    #[cfg(test)]
    pub fn verified_key(&self, token: &str, sandbox_id: &str) -> Option<Option<String>> {
        self.verifier.sandbox(token, sandbox_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("key");
        TokenSigner::from_pkcs8(pkcs8.as_ref()).expect("signer")
    }

    #[test]
    fn a_token_opens_only_its_own_sandbox() {
        let signer = signer();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (tok, exp) = signer
            .issue("aaaaaaaaaaaaaaaaaa", Some("key_1"), now)
            .expect("issue");
        assert_eq!(exp, now + TOKEN_TTL_SECONDS);
        assert!(signer.verify(&tok, "aaaaaaaaaaaaaaaaaa"));
        assert_eq!(
            signer.verified_key(&tok, "aaaaaaaaaaaaaaaaaa"),
            Some(Some("key_1".to_owned()))
        );
        assert!(!signer.verify(&tok, "bbbbbbbbbbbbbbbbbb"));
        // A token names its sandbox (older E2B clients send it without the routing headers).
        assert_eq!(
            signer.verifier().sandbox_of(&tok).as_deref(),
            Some("aaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(signer.verifier().sandbox_of("not-a-token"), None);
        let (old, _) = signer
            .issue("aaaaaaaaaaaaaaaaaa", None, now - 2 * TOKEN_TTL_SECONDS)
            .expect("issue");
        assert!(
            !signer.verify(&old, "aaaaaaaaaaaaaaaaaa"),
            "expired token accepted"
        );
        assert_eq!(signer.verifier().sandbox_of(&old), None);
        assert!(
            !self::signer().verify(&tok, "aaaaaaaaaaaaaaaaaa"),
            "token from another key accepted"
        );
    }

    #[test]
    fn nodes_check_tokens_with_the_public_key_and_tell_the_kinds_apart() {
        let signer = signer();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let b64 = base64::engine::general_purpose::STANDARD;
        let public = b64.decode(signer.public_key_base64()).expect("b64");
        let node = TokenVerifier::new(&public);
        let (tok, _) = signer
            .issue("aaaaaaaaaaaaaaaaaa", None, now)
            .expect("issue");
        assert!(node.sandbox(&tok, "aaaaaaaaaaaaaaaaaa").is_some());
        let call = signer.node_call("n1", now).expect("call");
        assert!(node.node_call(&call, "n1"));
        assert!(
            !node.node_call(&call, "n2"),
            "a call token for another node"
        );
        assert!(
            node.sandbox(&call, "aaaaaaaaaaaaaaaaaa").is_none(),
            "a call token is no sandbox token"
        );
        assert!(
            !node.node_call(&tok, "n1"),
            "a sandbox token is no call token"
        );
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &SandboxClaims {
                sub: "aaaaaaaaaaaaaaaaaa".into(),
                exp: now + 60,
                iat: now,
                iss: ISSUER.into(),
                kid: None,
                aud: None,
            },
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .expect("hs256");
        assert!(
            node.sandbox(&hs, "aaaaaaaaaaaaaaaaaa").is_none(),
            "HS256 without the legacy secret"
        );
        let legacy = node.clone().with_legacy_secret(&[7u8; 32]);
        assert!(legacy.sandbox(&hs, "aaaaaaaaaaaaaaaaaa").is_some());
    }
}

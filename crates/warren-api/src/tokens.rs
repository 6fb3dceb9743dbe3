//! Sandbox access tokens: HS256 JWTs bound to one sandbox id. The signing key lives in the data
//! dir (mode 0600) and never enters a sandbox; tokens are checked by the host-side proxy.

use std::path::Path;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Both SDKs refresh when under an hour is left; 24 h matches their own examples.
pub const TOKEN_TTL_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: i64,
    iss: String,
    /// Id of the API key that obtained the token (for the audit trail); never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenSigner {
    /// Loads the key from `dir/jwt.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("jwt.key");
        let secret = match std::fs::read(&path) {
            Ok(s) if s.len() >= 32 => s,
            _ => {
                let s: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                std::io::Write::write_all(&mut f, &s)?;
                s.to_vec()
            }
        };
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        })
    }

    /// Returns (token, expires_at).
    pub fn issue(
        &self,
        sandbox_id: &str,
        key_id: Option<&str>,
        now: i64,
    ) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let exp = now + TOKEN_TTL_SECONDS;
        let claims = Claims {
            sub: sandbox_id.to_owned(),
            exp,
            iat: now,
            iss: "warren".to_owned(),
            kid: key_id.map(str::to_owned),
        };
        Ok((
            encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?,
            exp,
        ))
    }

    /// Whether `token` is valid, unexpired, and issued for `sandbox_id`.
    #[cfg(test)]
    pub fn verify(&self, token: &str, sandbox_id: &str) -> bool {
        self.verified_key(token, sandbox_id).is_some()
    }

    /// For a valid token of `sandbox_id`: the id of the key that obtained it (if recorded).
    pub fn verified_key(&self, token: &str, sandbox_id: &str) -> Option<Option<String>> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["warren"]);
        v.leeway = 0;
        decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .filter(|d| d.claims.sub == sandbox_id)
            .map(|d| d.claims.kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_its_own_sandbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = TokenSigner::load_or_create(dir.path()).expect("signer");
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
        let (old, _) = signer
            .issue("aaaaaaaaaaaaaaaaaa", None, now - 2 * TOKEN_TTL_SECONDS)
            .expect("issue");
        assert!(
            !signer.verify(&old, "aaaaaaaaaaaaaaaaaa"),
            "expired token accepted"
        );
        let other = TokenSigner::load_or_create(tempfile::tempdir().expect("tempdir").path())
            .expect("signer");
        assert!(
            !other.verify(&tok, "aaaaaaaaaaaaaaaaaa"),
            "token from another key accepted"
        );
        let again = TokenSigner::load_or_create(dir.path()).expect("reload");
        assert!(
            again.verify(&tok, "aaaaaaaaaaaaaaaaaa"),
            "key not persisted across restarts"
        );
    }
}

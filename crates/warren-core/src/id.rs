use std::fmt;

use rand::Rng;

/// A sandbox identifier: 18 characters of `[a-z0-9]`, DNS-label safe so it can appear in
/// `{port}-{id}.{domain}` host names and in file system paths without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

/// The string is not a well-formed sandbox id
#[derive(Debug, thiserror::Error)]
#[error("invalid sandbox id")]
pub struct InvalidId;

const ID_LEN: usize = 18;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl SandboxId {
    /// A fresh random id. 36^18 ≈ 2^93 possibilities: collisions are not a concern.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let id: String = (0..ID_LEN)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        Self(id)
    }

    /// Validates an id that came from outside (a URL, a Host header, a file name).
    /// Because ids reach the file system, anything but the exact alphabet is rejected.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = SandboxId::generate();
        assert_eq!(
            SandboxId::parse(id.as_str()).map(|p| p == id).ok(),
            Some(true)
        );
    }

    #[test]
    fn path_tricks_are_rejected() {
        for bad in [
            "../../../etc/passwd",
            "abc",
            "ABCDEFGHIJKLMNOPQR",
            "abcdefghijklmnop/.",
            "",
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}

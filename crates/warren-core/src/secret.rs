/// A value that must never reach a log: API keys, webhook secrets. `Debug` and `Display` print a
/// placeholder, so logging a struct that holds one cannot leak it; code that needs the value asks
/// for it by name with `expose`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_printed() {
        let s = super::Secret::new("wrn_live_abc");
        assert!(!format!("{s:?} {s}").contains("abc"));
        assert_eq!(s.expose(), "wrn_live_abc");
    }
}

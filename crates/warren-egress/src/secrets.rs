//! Credentials brokered on the host: the sandbox holds an opaque placeholder, and the proxy puts
//! the real value in its place only in requests to the hosts the secret is bound to, over TLS it
//! terminated itself (so it knows the name and has checked the upstream's certificate). Anywhere
//! else the placeholder goes out unchanged: useless to whoever receives it. The secret itself is
//! `policy::Brokered`.

/// A fresh placeholder: recognisable in logs and code, and as long as a real key so that a
/// client library's length checks pass.
pub fn placeholder() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("wrn_secret_{}", hex::encode(bytes))
}

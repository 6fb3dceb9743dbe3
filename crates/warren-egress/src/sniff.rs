//! What a sandbox's connection starts with, read without taking it off the socket (`peek`), so
//! that the proxy can judge it and then hand the untouched stream on.

use std::time::Duration;

use tls_parser::TlsMessageHandshake;
use tls_parser::{parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage};
use tokio::net::TcpStream;

/// The protocols the proxy understands, by their first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello, with its SNI when it names one.
    Tls { sni: Option<String> },
    /// An HTTP/1 request line (the proxy then reads every request's Host).
    Http,
    /// Anything else, or nothing before the deadline.
    Other,
}

/// A ClientHello fits one TLS record: 5 bytes of header and at most 16 KiB.
const MOST: usize = 5 + 16 * 1024;

/// Peeks until the opening is known. Waits at most `deadline` for bytes (a protocol whose server
/// speaks first sends none).
pub async fn opening(stream: &TcpStream, deadline: Duration) -> Opening {
    let mut buf = vec![0u8; MOST];
    let sniff = async {
        let mut last = 0;
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return Opening::Other,
                Ok(n) => n,
            };
            if let Some(found) = classify(&buf[..n]) {
                return found;
            }
            if n == MOST {
                return Opening::Other;
            }
            // peek returns at once while bytes wait: wait for more before looking again.
            if n == last {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            last = n;
        }
    };
    tokio::time::timeout(deadline, sniff)
        .await
        .unwrap_or(Opening::Other)
}

/// None: not enough bytes yet to tell.
pub fn classify(b: &[u8]) -> Option<Opening> {
    match b.first() {
        None => None,
        Some(0x16) => tls(b),
        Some(c) if c.is_ascii_uppercase() => http(b),
        Some(_) => Some(Opening::Other),
    }
}

fn tls(b: &[u8]) -> Option<Opening> {
    if b.len() < 5 {
        return None;
    }
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b.len() < 5 + len {
        return None;
    }
    let Ok((_, record)) = parse_tls_plaintext(&b[..5 + len]) else {
        return Some(Opening::Other);
    };
    for msg in record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let sni = hello
                .ext
                .and_then(|ext| parse_tls_extensions(ext).ok())
                .and_then(|(_, exts)| {
                    exts.into_iter().find_map(|e| match e {
                        TlsExtension::SNI(names) => names
                            .into_iter()
                            .find_map(|(_, n)| std::str::from_utf8(n).ok().map(str::to_owned)),
                        _ => None,
                    })
                });
            return Some(Opening::Tls { sni });
        }
    }
    Some(Opening::Other)
}

const METHODS: [&str; 9] = [
    "GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
];

fn http(b: &[u8]) -> Option<Opening> {
    for m in METHODS {
        let m = m.as_bytes();
        let n = m.len().min(b.len());
        if b[..n] == m[..n] {
            return (b.len() >= m.len()).then_some(Opening::Http);
        }
    }
    Some(Opening::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_other_bytes() {
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Opening::Http));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Opening::Other));
        assert_eq!(classify(&[0x16, 3, 1]), None);
    }
}

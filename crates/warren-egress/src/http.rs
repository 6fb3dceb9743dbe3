//! Plain HTTP through the proxy, judged per request: a kept-alive connection cannot name an
//! allowed Host first and another one next. A refused request gets a 403 that names the rule, so
//! the program (or the agent reading its output) sees why.

use std::net::SocketAddrV4;
use std::sync::Arc;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::state::{Guarded, Shared};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// The connection's current upstream: the name it was dialled for and its sender.
type Upstream = Mutex<Option<(String, SendRequest<Incoming>)>>;

struct Conn {
    proxy: Arc<Shared>,
    sandbox: Arc<Guarded>,
    dest: SocketAddrV4,
    live: u64,
    upstream: Upstream,
}

pub(crate) async fn serve(
    proxy: Arc<Shared>,
    sandbox: Arc<Guarded>,
    stream: TcpStream,
    dest: SocketAddrV4,
) {
    let (live, mut cut) = proxy.track(&sandbox, None, *dest.ip());
    let conn = Arc::new(Conn {
        proxy: proxy.clone(),
        sandbox: sandbox.clone(),
        dest,
        live,
        upstream: Mutex::new(None),
    });
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = serving => {}
        _ = cut.wait_for(|c| *c) => {}
    }
    proxy.untrack(&sandbox, live);
}

impl Conn {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let Some(name) = host_of(&req) else {
            return refusal(StatusCode::BAD_REQUEST, "the request names no Host".into());
        };
        let verdict = self.sandbox.policy().judge(Some(&name), *self.dest.ip());
        if !verdict.allowed {
            self.proxy
                .refused(&self.sandbox, Some(&name), self.dest, &verdict);
            return refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "Warren egress: {name} is not allowed by this sandbox's network policy ({})\n",
                    verdict.rule
                ),
            );
        }
        self.proxy.rename(&self.sandbox, self.live, &name);
        // Secrets are never put in plain HTTP; a placeholder sent this way goes out as it is.
        let policy = self.sandbox.policy();
        for s in &policy.secrets {
            let seen = req
                .headers()
                .values()
                .any(|v| v.to_str().is_ok_and(|t| t.contains(s.placeholder.as_str())));
            if seen {
                self.proxy.allowed(
                    &self.sandbox,
                    Some(&name),
                    self.dest,
                    format!("secret {} placeholder sent unchanged (plain HTTP)", s.name),
                    (0, 0),
                );
            }
        }
        let mut upstream = self.upstream.lock().await;
        let reuse = matches!(&*upstream, Some((n, s)) if *n == name && !s.is_closed());
        if !reuse {
            match self.dial(&name).await {
                Ok(sender) => *upstream = Some((name.clone(), sender)),
                Err(why) => {
                    return refusal(
                        StatusCode::BAD_GATEWAY,
                        format!("Warren egress: cannot reach {name}: {why}\n"),
                    )
                }
            }
            self.proxy
                .allowed(&self.sandbox, Some(&name), self.dest, verdict.rule, (0, 0));
        }
        let Some((_, sender)) = upstream.as_mut() else {
            return refusal(StatusCode::BAD_GATEWAY, "no upstream".into());
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        match sender.send_request(req).await {
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let server_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(a), Ok(b)) = (client_upgrade.await, server_upgrade.await) {
                            let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                        }
                    });
                }
                resp.map(|b| b.boxed())
            }
            Err(e) => refusal(
                StatusCode::BAD_GATEWAY,
                format!("Warren egress: {name} failed: {e}\n"),
            ),
        }
    }

    async fn dial(&self, name: &str) -> Result<SendRequest<Incoming>, String> {
        let stream = self
            .proxy
            .dial(name, self.dest.port())
            .await
            .map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }
}

/// The request's Host (or its absolute URI's), without a port, lower-cased.
pub(crate) fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw.as_str(),
    };
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

pub(crate) fn refusal(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    resp
}

//! The DNS filter that answers a sandbox under domain rules (its port-53 traffic is redirected
//! here): allowed names get their IPv4 addresses, everything else NXDOMAIN, so names outside the
//! policy carry no data out (DNS tunnelling) and learn nothing. AAAA, HTTPS and SVCB questions
//! get empty answers: sandboxes have no IPv6 route, and without HTTPS records clients do not try
//! ECH, whose outer SNI would hide the name the policy judges.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::policy::Verdict;
use crate::state::Shared;

const TTL: u32 = 30;

pub(crate) async fn serve(proxy: Arc<Shared>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "DNS filter: receive failed");
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else { continue };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let (proxy, socket) = (proxy.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(answer) = answer(&proxy, *peer.ip(), &query).await {
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
    }
}

async fn answer(proxy: &Shared, peer: Ipv4Addr, query: &Message) -> Option<Message> {
    let sandbox = proxy.sandbox(peer)?;
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    let Some(q) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return Some(reply);
    };
    reply.add_query(q.clone());
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !sandbox.policy().resolves(&name) {
        // No address: the resolver the sandbox asked is not known here, and the sandbox's own
        // link address is never shown.
        let verdict = Verdict {
            allowed: false,
            rule: "DNS: name not in allowOut".into(),
        };
        let dest = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53);
        proxy.refused(&sandbox, Some(&name), dest, &verdict);
        reply.set_response_code(ResponseCode::NXDomain);
        return Some(reply);
    };
    if q.query_type() != RecordType::A {
        // NOERROR with no records: the name exists, but not with this type here.
        return Some(reply);
    }
    match proxy.resolver.resolve(&name).await {
        Ok(addrs) => {
            // Private and host addresses are left out: the proxy would refuse them anyway.
            for a in addrs.into_iter().filter(|a| !proxy.guard.refuses(*a)) {
                reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(a))));
            }
        }
        Err(_) => {
            reply.set_response_code(ResponseCode::ServFail);
        }
    }
    Some(reply)
}

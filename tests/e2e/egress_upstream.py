"""Upstream hosts for test_egress.py, run inside the test's network namespace: on each address,
an HTTP echo on :80, the same over HTTPS on :443 (a certificate of the test's own CA), and a UDP
echo on :443. The echo answers JSON: the Host the request named and every header it carried;
/redirect answers 302 to http://other.test/."""
import json
import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """Binds without `HTTPServer`'s reverse lookup of its own address (`socket.getfqdn`): that
    asked the machine's resolver, beyond the test's namespace, and waited out its timeouts for
    40 s before the hosts were up."""

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://other.test/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"server": self.server.server_address[0], "host": self.headers.get("Host"),
                           "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def udp_echo(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 443))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def main():
    cert, key, addrs = sys.argv[1], sys.argv[2], sys.argv[3:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for a in addrs:
        plain = Server((a, 80), Echo)
        threading.Thread(target=plain.serve_forever, daemon=True).start()
        tls = Server((a, 443), Echo)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        threading.Thread(target=udp_echo, args=(a,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

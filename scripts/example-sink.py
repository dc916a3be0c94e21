#!/usr/bin/env python3
"""An example fanout destination for local mode: answers 200 to every POST
and prints what it received (path, headers, body), so that
scripts/run-local.sh shows each delivery as it happens.

Usage: example-sink.py PORT [NAME]   (listens on 127.0.0.1 only)
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    name = "sink"
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        lines = [f"[{self.name}] POST {self.path}"]
        lines += [f"[{self.name}]   {k}: {v}" for k, v in self.headers.items()]
        lines.append(f"[{self.name}]   body: {body.decode('utf-8', 'replace')}")
        print("\n".join(lines), flush=True)
        answer = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):
        # The request is printed in full above; no access log line.
        pass


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    Sink.name = sys.argv[2] if len(sys.argv) > 2 else f"sink:{port}"
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    print(f"[{Sink.name}] listening on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

"""identity: issues and checks signed session tokens (standard library only)."""

import base64
import hashlib
import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.getenv("JWT_SECRET", "dev-only-secret").encode()


def _sign(payload: bytes) -> str:
    return hmac.new(SECRET, payload, hashlib.sha256).hexdigest()


def issue(user: str) -> str:
    """A token `base64(user).signature` for a user name."""
    payload = base64.urlsafe_b64encode(user.encode()).decode()
    return f"{payload}.{_sign(payload.encode())}"


def check(token: str):
    """The user a token was issued to, or None when it is malformed or forged."""
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature, _sign(payload.encode())):
        return None
    try:
        return base64.urlsafe_b64decode(payload.encode()).decode()
    except ValueError:
        return None


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = json.dumps({"status": "ok", "service": "identity"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


def serve(port: int = int(os.getenv("PORT", "8001"))) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("0.0.0.0", port), Handler)


if __name__ == "__main__":
    serve().serve_forever()

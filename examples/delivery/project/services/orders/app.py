"""orders: prices carts and validates orders (standard library only)."""

import json
import os
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATABASE_URL = os.getenv("DATABASE_URL", "")
VAT = Decimal("0.20")


class OrderError(ValueError):
    """An order that cannot be placed."""


def total(lines):
    """Gross total of `[{"sku", "qty", "price"}]` lines, VAT included, to the cent."""
    if not lines:
        raise OrderError("an order needs at least one line")
    net = Decimal(0)
    for line in lines:
        qty = int(line["qty"])
        if qty <= 0:
            raise OrderError(f"{line['sku']}: quantity must be positive, not {qty}")
        net += Decimal(str(line["price"])) * qty
    return (net * (1 + VAT)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        body = json.dumps({"status": "ok", "service": "orders"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port: int = int(os.getenv("PORT", "8002"))) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("0.0.0.0", port), Handler)


if __name__ == "__main__":
    serve().serve_forever()

import json
import threading
import unittest
import urllib.request
from decimal import Decimal

import app


class TotalTest(unittest.TestCase):
    def test_adds_vat_and_rounds_to_the_cent(self):
        lines = [{"sku": "tea", "qty": 3, "price": "4.15"}, {"sku": "mug", "qty": 1, "price": 9.99}]
        self.assertEqual(app.total(lines), Decimal("26.93"))

    def test_empty_order_is_refused(self):
        with self.assertRaisesRegex(app.OrderError, "at least one line"):
            app.total([])

    def test_non_positive_quantity_is_refused(self):
        with self.assertRaisesRegex(app.OrderError, "tea: quantity must be positive"):
            app.total([{"sku": "tea", "qty": 0, "price": "1"}])


class HealthTest(unittest.TestCase):
    def test_health_endpoint(self):
        server = app.serve(0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            port = server.server_address[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                self.assertEqual(json.load(r)["service"], "orders")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    unittest.main()

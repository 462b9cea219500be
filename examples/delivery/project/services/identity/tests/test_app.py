import json
import threading
import unittest
import urllib.request

import app


class TokenTest(unittest.TestCase):
    def test_round_trip(self):
        self.assertEqual(app.check(app.issue("ada")), "ada")

    def test_forged_signature_is_refused(self):
        payload, _, _ = app.issue("ada").partition(".")
        self.assertIsNone(app.check(payload + "." + "0" * 64))

    def test_malformed_token_is_refused(self):
        self.assertIsNone(app.check("not-a-token"))


class HealthTest(unittest.TestCase):
    def test_health_endpoint(self):
        server = app.serve(0)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertEqual(json.load(r), {"status": "ok", "service": "identity"})
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    unittest.main()

from fastapi.testclient import TestClient

from app.main import SERVICE_NAME, app

client = TestClient(app)


def test_health_reports_ok():
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "{{ name }}"}
    assert SERVICE_NAME == "{{ name }}"


def test_openapi_lists_health():
    schema = client.get("/openapi.json").json()
    assert "/health" in schema["paths"]

"""{{ title }}: a FastAPI service scaffolded by orch."""

import os

from fastapi import FastAPI

SERVICE_NAME = "{{ name }}"

app = FastAPI(title="{{ title }}", version="0.1.0")


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process is up and serving requests."""
    return {"status": "ok", "service": SERVICE_NAME}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "{{ port }}")))

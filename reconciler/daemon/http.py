"""The daemon's HTTP endpoints (FastAPI on uvicorn, in a thread): health, readiness, metrics, webhook.

Binds to loopback by default (the config's `listen`). `/api/v1` (api.py) is guarded
by the API token when one is configured; these endpoints stay open. The data routes under
`/api/v1` (data_api.py: services, `/query`) have their own guard: user and service tokens.
"""
from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI, Request, Response

from reconciler.daemon.webhook import MAX_BODY, check_delivery


def create_app(daemon) -> FastAPI:
    app = FastAPI(title="Reconciler", version="0.1.0")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response):
        if not daemon.state.ready:
            response.status_code = 503
            return {"ready": False, "reason": "no successful reconcile yet"}
        return {"ready": True, "commit": daemon.state.last_commit}

    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/webhook")
    async def webhook(request: Request):
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BODY:
            daemon.metrics.webhooks.labels(result="too_large").inc()
            return Response('{"error": "payload over 5 MB"}', status_code=413, media_type="application/json")
        body = await request.body()
        status, delivery, reason = check_delivery(dict(request.headers), body,
                                                  github_secret=daemon.webhook_secret, gitlab_secret=daemon.webhook_secret)
        daemon.metrics.webhooks.labels(result={202: "triggered", 200: "ignored", 401: "unauthorized",
                                               413: "too_large"}.get(status, str(status))).inc()
        if status == 202 and delivery is not None:
            daemon.trigger(f"webhook {delivery.provider} {delivery.kind} {delivery.branch}", push=True)
        return Response(f'{{"result": "{reason}"}}', status_code=status, media_type="application/json")

    from reconciler.daemon.api import api_router
    from reconciler.daemon.data_api import data_router

    app.include_router(api_router(daemon), prefix="/api/v1")
    # a router of its own: its routes take user and service tokens, not api.py's API-token guard
    app.include_router(data_router(daemon), prefix="/api/v1")
    return app


class HttpServer:
    def __init__(self, daemon, host: str, port: int):
        self.config = uvicorn.Config(create_app(daemon), host=host, port=port, log_level="warning", access_log=False,
                                     lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

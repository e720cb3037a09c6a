"""The admin API with the admin token: one client for both ways a test reaches octorelay.

    AdminClient(client)   in-process, through a Flask test client: werkzeug test responses
    AdminClient(port)     over HTTP on 127.0.0.1:port, a fresh connection per call: requests responses

Calls: `admin.get(path)`, `.post/.put/.patch/.delete(path, json=...)`, or `admin("GET", path)`;
`create_key()` and `create_channel()` assert the 201 and return the created object (a key's secret
goes into SECRETS_USED, so the log audit looks for it)."""
from __future__ import annotations

import requests

from tests.support.constants import ADMIN_TOKEN, SECRETS_USED

HOST = "127.0.0.1"


class AdminClient:
    def __init__(self, target, token: str = ADMIN_TOKEN):
        if isinstance(target, int):
            self.port, self.client = target, None
        else:
            self.port, self.client = None, target
        self.headers = {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if self.client is not None:
            return self.client.open(path, method=method.upper(), headers=headers, **kwargs)
        kwargs.setdefault("timeout", 10)
        with requests.Session() as session:
            return session.request(method.upper(), f"http://{HOST}:{self.port}{path}", headers=headers, **kwargs)

    def get(self, path: str, **kwargs):
        return self("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self("POST", path, **kwargs)

    def put(self, path: str, **kwargs):
        return self("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs):
        return self("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self("DELETE", path, **kwargs)

    def create_key(self, **fields) -> dict:
        resp = self.post("/admin/keys", json={"name": "test", **fields})
        created = self._created(resp)
        SECRETS_USED.add(created["key"])
        return created

    def create_channel(self, **fields) -> dict:
        return self._created(self.post("/admin/channels", json={"name": "mock", "type": "mock",
                                                                "models": ["claude-*"], **fields}))

    @staticmethod
    def _created(resp) -> dict:
        body = resp.get_json() if hasattr(resp, "get_json") else resp.json()
        assert resp.status_code == 201, body
        return body

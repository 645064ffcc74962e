"""The few calls of Label Studio's REST API the bridge makes, over plain HTTP.

Plain ``urllib`` rather than ``label-studio-sdk``: seven endpoints do not justify the SDK's own
pinned tree of dependencies (httpx, its pydantic models, numpy/pandas extras) in the service's
environment, and its models change between Label Studio releases where these payloads have not.
The token is sent as ``Authorization: Token <token>`` and never logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or not at all."""


class LabelStudio:
    """A client of one Label Studio instance."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"LabelStudio({self.url!r})"

    def _call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Token {self._token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:500].decode(errors="replace")
            raise LabelStudioError(f"{method} {path}: HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise LabelStudioError(f"{method} {path}: {getattr(error, 'reason', error)}") from None
        return json.loads(raw) if raw else None

    def project(self, project_id: int) -> dict:
        return self._call("GET", f"/api/projects/{project_id}/")

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations (Label Studio's JSON export)."""
        return self._call("GET", f"/api/projects/{project_id}/export", exportType="JSON", download_all_tasks="true")

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        """Label Studio's import summary (``task_count``, ``prediction_count``...)."""
        return self._call("POST", f"/api/projects/{project_id}/import", tasks)

    def delete_task(self, task_id: int) -> None:
        self._call("DELETE", f"/api/tasks/{task_id}/")

    def add_prediction(self, task_id: int, prediction: dict) -> None:
        self._call("POST", "/api/predictions/", {"task": task_id, **prediction})

    def ensure_webhook(self, project_id: int, url: str) -> bool:
        """Register a webhook of the annotation events on ``url`` unless one is there; True if it made one."""
        hooks = self._call("GET", "/api/webhooks/", project=project_id) or []
        for hook in hooks:
            if (hook.get("url") == url and hook.get("project") == project_id and hook.get("is_active", True)
                    and hook.get("send_payload", True) and set(WEBHOOK_ACTIONS) <= set(hook.get("actions") or ())):
                return False
        self._call("POST", "/api/webhooks/", {"project": project_id, "url": url, "send_payload": True,
                                              "send_for_all_actions": False, "actions": list(WEBHOOK_ACTIONS),
                                              "is_active": True})
        return True

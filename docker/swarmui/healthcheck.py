"""Docker HEALTHCHECK: healthy once SwarmUI answers and its ComfyUI backend is `running`.

Talks to 127.0.0.1, which SwarmUI exempts from Network.RequiredAuthorization (AuthBypassIPs),
so it needs no token. Every GetNewSession is stored by SwarmUI, so the session id is kept in a
file and reused across checks. Standard library only (runs on the system python3).
"""

import http.client
import json
import os
import sys

# SwarmUI itself, behind the image's TLS terminator (which owns 7801).
HOST, PORT = "127.0.0.1", 7800
SESSION_FILE = os.environ.get("SWARMUI_HEALTH_SESSION_FILE", "/tmp/genhub-healthcheck.session")
TIMEOUT = 10


def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    connection = http.client.HTTPConnection(HOST, PORT, timeout=TIMEOUT)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, None


def new_session() -> str:
    status, data = call("POST", "/API/GetNewSession", {})
    if status != 200 or not data or "session_id" not in data:
        raise RuntimeError(f"GetNewSession answered HTTP {status}: {data}")
    with open(SESSION_FILE, "w", encoding="ascii") as handle:
        handle.write(data["session_id"])
    return data["session_id"]


def backend_status() -> dict:
    try:
        with open(SESSION_FILE, encoding="ascii") as handle:
            session_id = handle.read().strip()
    except OSError:
        session_id = new_session()
    for attempt in range(2):
        status, data = call("POST", "/API/GetCurrentStatus", {"session_id": session_id})
        if status == 401 and attempt == 0:  # the stored session expired or Data/ was wiped
            session_id = new_session()
            continue
        if status != 200 or not data or "backend_status" not in data:
            raise RuntimeError(f"GetCurrentStatus answered HTTP {status}: {data}")
        return data["backend_status"]
    raise RuntimeError("no valid session")


def main() -> int:
    try:
        status, _ = call("GET", "/")
        if status not in (200, 302):
            print(f"unhealthy: GET / answered HTTP {status}")
            return 1
        backend = backend_status()
    except (OSError, RuntimeError) as error:
        print(f"unhealthy: {error}")
        return 1
    if backend.get("status") != "running":
        print(f"unhealthy: backend {backend.get('status')}: {backend.get('message', '')}")
        return 1
    print("healthy: backend running")
    return 0


if __name__ == "__main__":
    sys.exit(main())

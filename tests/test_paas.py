"""Deployed the way a Python buildpack does it: the app copied into a fresh build folder, installed
from requirements.txt into a fresh virtualenv, the Procfile's release phase, then its web process
with PORT and WEB_CONCURRENCY=2 but no REDIS_URL (Heroku's smallest dynos set 2): it must serve,
with one worker and one line saying why."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.constants import ADMIN_TOKEN, SECRET_KEY
from tests.support.net import free_port
from tests.support.processes import REPO, base_env, wait_until_serving

pytestmark = pytest.mark.slow


def procfile(path: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)


def test_buildpack_style_deploy_serves_with_one_worker_without_redis(tmp_path, procs, database_url):
    build = tmp_path / "build"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (build / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, build / name)
    assert (build / "requirements.txt").is_file() and (build / ".python-version").read_text().strip() == "3.11"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "-r",
                          "requirements.txt"], cwd=build, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    installed = subprocess.run([str(venv / "bin/python"), "-c", "import app; print(app.__file__)"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert str(venv) in installed  # the package itself came from requirements.txt, not the repo

    env = base_env(DATABASE_URL=database_url, OCTORELAY_ADMIN_TOKEN=ADMIN_TOKEN, OCTORELAY_SECRET_KEY=SECRET_KEY,
                   WEB_CONCURRENCY="2", PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                   OCTORELAY_SPOOL_DIR=str(tmp_path))
    env.pop("REDIS_URL", None)
    lines = procfile(build / "Procfile")
    release = subprocess.run(lines["release"].split(), cwd=build, env=env, capture_output=True, text=True,
                             timeout=60)
    assert release.returncode == 0, release.stderr  # WEB_CONCURRENCY does not matter to commands
    port = free_port()
    web = procs(lines["web"].split(), cwd=build, env={**env, "PORT": str(port)}, name="web")
    wait_until_serving(web, port)
    deadline = time.monotonic() + 10
    while "serving with 1 worker" not in web.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "WEB_CONCURRENCY=2 but REDIS_URL is not set: serving with 1 worker" in web.stderr
    children = subprocess.run(["pgrep", "-P", str(web.popen.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"http://127.0.0.1:{port}"
    assert requests.post(f"{base}/admin/channels", headers=admin, timeout=10,
                         json={"name": "demo", "type": "mock", "models": ["claude-*"]}).status_code == 201
    key = requests.post(f"{base}/admin/keys", headers=admin, json={"name": "k"}, timeout=10).json()["key"]
    resp = requests.post(f"{base}/v1/messages", headers={"x-api-key": key}, timeout=10,
                         json={"model": "claude-sonnet-4-6", "max_tokens": 20,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200 and resp.json()["type"] == "message"
    assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"

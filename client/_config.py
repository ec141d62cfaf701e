"""Where the SDK finds the server and its API key when they are not passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def home() -> Path:
    """`$REPRLAB_HOME`, default ~/.reprlab."""
    return Path(os.environ.get("REPRLAB_HOME", "~/.reprlab")).expanduser()


def key_file() -> Path:
    """`$REPRLAB_HOME/api-key`, written by `reprlab up`."""
    return home() / "api-key"


def default_base_url() -> str:
    """`REPRLAB_URL`; else the local server `reprlab up` starts (`REPRLAB_HOST`/`REPRLAB_PORT`,
    default http://127.0.0.1:8000)."""
    url = os.environ.get("REPRLAB_URL")
    if url:
        return url.rstrip("/")
    host = os.environ.get("REPRLAB_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = os.environ.get("REPRLAB_PORT", "8000")
    return f"http://{host}:{port}"


def default_api_key() -> str | None:
    """`REPRLAB_API_KEY`, else the contents of `$REPRLAB_HOME/api-key`, else None."""
    key = os.environ.get("REPRLAB_API_KEY")
    if key:
        return key.strip()
    path = key_file()
    if path.is_file():
        return path.read_text().strip() or None
    return None

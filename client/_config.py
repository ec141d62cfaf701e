"""Where the SDK finds the server and its API key when they are not passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def home() -> Path:
    return Path(os.environ.get("REPRLAB_HOME", "~/.reprlab")).expanduser()


def key_file() -> Path:
    """`$REPRLAB_HOME/api-key`, written by `reprlab up`."""
    return home() / "api-key"


def default_base_url() -> str:
    return os.environ.get("REPRLAB_URL", DEFAULT_URL).rstrip("/")


def default_api_key() -> str | None:
    key = os.environ.get("REPRLAB_API_KEY")
    if key:
        return key.strip()
    path = key_file()
    if path.is_file():
        return path.read_text().strip() or None
    return None

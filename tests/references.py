"""Helpers for calling the reference implementations the metrics are tested against."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def quietly(fn: Callable[[], T]) -> T:
    """Run a reference call (dadapy prints and warns freely) without its prints and warnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()

"""Shared pydantic base classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A request-side model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


class ResponseModel(BaseModel):
    """A response-side model: tolerant of fields added by newer servers."""

    model_config = ConfigDict(extra="ignore")


def tag_or_default(field: str, default: str) -> Callable[[Any], str]:
    """A union discriminator reading `field` of a dict or model, `default` when it is absent.

    Lets hand-written specs leave out the tag of the common case (e.g. a condition's
    'paradigm', 'icl' by default).
    """

    def tag(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(field, default))
        return str(getattr(value, field, default))

    return tag

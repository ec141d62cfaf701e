"""Shared pydantic base classes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A request-side model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


class ResponseModel(BaseModel):
    """A response-side model: tolerant of fields added by newer servers."""

    model_config = ConfigDict(extra="ignore")

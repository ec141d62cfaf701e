"""`Client`: the entry point of the Python SDK."""

from __future__ import annotations

from types import TracebackType

from reprlab.client._base import Transport
from reprlab.client._config import default_api_key, default_base_url, key_file
from reprlab.client._exceptions import ReprlabError
from reprlab.client.resources.admin import Admin
from reprlab.client.resources.datasets import Datasets
from reprlab.client.resources.jobs import Jobs
from reprlab.schemas.users import Me


class Client:
    """A connection to a reprlab server.

    Args:
        base_url: Server URL; default `REPRLAB_URL`, else http://127.0.0.1:8000.
        api_key: API key; default `REPRLAB_API_KEY`, else `$REPRLAB_HOME/api-key` (written by
            `reprlab up`). Create one with `reprlab admin create-key NAME`.
        timeout: Seconds per HTTP request.
        max_retries: Retries of safe requests on connection errors and 429/502/503/504.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        self.base_url = (base_url or default_base_url()).rstrip("/")
        key = api_key if api_key is not None else default_api_key()
        if not key:
            raise ReprlabError(
                "no API key: pass api_key=..., set REPRLAB_API_KEY, or write it to "
                f"{key_file()}. Get one with `reprlab admin create-key NAME` on the server "
                "machine, or run `reprlab up` for a local service (it writes the key file)"
            )
        self._transport = Transport(self.base_url, key, timeout=timeout, max_retries=max_retries)
        self.jobs = Jobs(self._transport)
        self.datasets = Datasets(self._transport)
        self.admin = Admin(self._transport)

    def health(self) -> dict[str, object]:
        """The server's health document."""
        data: dict[str, object] = self._transport.request("GET", "/v1/health").json()
        return data

    def me(self) -> Me:
        """Who the API key authenticates as: name, role, key id and job quotas."""
        return Me.model_validate(self._transport.request("GET", "/v1/me").json())

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

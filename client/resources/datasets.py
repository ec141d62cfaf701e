"""`client.datasets`: upload dataset files for jobs to name (`{"source": "file", "upload": id}`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from reprlab.client._base import Transport
from reprlab.schemas.datasets import DataFormat, DatasetUpload


class Datasets:
    """Dataset uploads (`client.datasets`)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def upload(self, path: str | Path, *, format: DataFormat | None = None) -> DatasetUpload:
        """Upload a JSON, JSONL, CSV or Parquet file; returns its record (`.id` for the spec).

        The format is the file's extension unless `format` is given. Uploading the same file
        again gives the same id, so a retried upload stores nothing twice.

        Raises:
            APIStatusError: status 413, larger than the server's max_upload_bytes; 415, an
                extension that is no known format (pass `format`).
            UnprocessableEntityError: empty, not UTF-8 text, or not Parquet.
            OSError: the file cannot be read here.
        """
        path = Path(path).expanduser()
        params = {"filename": path.name}
        if format is not None:
            params["format"] = format
        response = self._t.request(
            "POST", "/v1/datasets", params=params, content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"}, idempotent=True,
        )  # fmt: skip
        return DatasetUpload.model_validate(response.json())

    def get(self, upload_id: str) -> DatasetUpload:
        """The record of one of your uploads (`NotFoundError` for an unknown id)."""
        response = self._t.request("GET", f"/v1/datasets/{quote(upload_id, safe='')}")
        return DatasetUpload.model_validate(response.json())

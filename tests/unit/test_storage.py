"""The artifact store on a real directory (file://, plain path) and fsspec's memory://."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from reprlab.server.storage import ArtifactNotFound, ArtifactStore, check_key


@pytest.fixture(params=["file", "path", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return ArtifactStore(f"file://{tmp_path / 'artifacts'}")
    if request.param == "path":
        return ArtifactStore(str(tmp_path / "artifacts"))
    return ArtifactStore(f"memory://reprlab-test-{uuid.uuid4().hex}")


def test_put_get_overwrite_and_stream(store: ArtifactStore) -> None:
    key = "jobs/abc/plots/id_twonn.png"
    assert not store.exists(key)
    store.put_bytes(key, b"first version")
    assert store.exists(key) and store.get_bytes(key) == b"first version"
    store.put_bytes(key, b"second")
    assert store.get_bytes(key) == b"second" and store.size(key) == 6
    with store.open(key) as handle:
        assert handle.read(3) == b"sec" and handle.read() == b"ond"
    assert not store.exists("jobs/abc")  # a directory of keys is not an artifact


def test_missing_key_is_artifact_not_found(store: ArtifactStore) -> None:
    for op in (store.get_bytes, store.size, store.open):
        with pytest.raises(ArtifactNotFound, match="activations/none.safetensors"):
            op("activations/none.safetensors")
    assert issubclass(ArtifactNotFound, KeyError)


def test_local_put_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = ArtifactStore(f"file://{root}")
    payload = bytes(range(256)) * 4096
    store.put_bytes("activations/x.safetensors", payload)
    store.put_bytes("activations/x.safetensors", payload[::-1])
    assert (root / "activations/x.safetensors").read_bytes() == payload[::-1]
    assert sorted(p.name for p in (root / "activations").iterdir()) == ["x.safetensors"]


def test_failed_put_leaves_no_temp_file_and_keeps_old_content(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = ArtifactStore(str(root))
    store.put_bytes("jobs/a/b.json", b"{}")
    with pytest.raises(OSError):
        store.put_bytes("jobs/a", b"cannot replace a directory")  # the rename fails
    assert sorted(p.name for p in (root / "jobs").iterdir()) == ["a"]
    assert store.get_bytes("jobs/a/b.json") == b"{}"


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a/", "a/b c", "a/.."],
)
def test_unsafe_keys_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        check_key(key)
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.get_bytes(key)


def test_valid_keys_pass() -> None:
    for key in ["results.json", "activations/ab12.safetensors", "jobs/x/plots/id_twonn.png"]:
        assert check_key(key) == key

import json

import numpy as np
import pytest

from hashstudy import cache, config


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with cache.atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    cache.write_json(target, {"b": np.float32(0.5), "a": np.arange(3)})
    assert json.loads(target.read_text()) == {"a": [0, 1, 2], "b": 0.5}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_key_is_stable_and_order_free():
    assert cache.key({"a": 1, "b": 2}) == cache.key({"b": 2, "a": 1})
    assert cache.key("x", 1) != cache.key("x", 2)
    assert len(cache.key("x")) == 16


def test_arrays_round_trip_and_checksum(tmp_path):
    path = tmp_path / "a.npz"
    cache.save_arrays(path, x=np.arange(10, dtype=np.int16), y=np.eye(2))
    out = cache.load_arrays(path)
    assert out["x"].dtype == np.int16 and np.array_equal(out["x"], np.arange(10))
    # flip one byte inside the stored array: the checksum must catch it
    raw = bytearray(path.read_bytes())
    idx = raw.find(np.arange(10, dtype=np.int16).tobytes())
    assert idx > 0
    raw[idx + 4] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(cache.CacheError):
        cache.load_arrays(path)


def test_cached_arrays_rebuilds_damaged_file(tmp_path):
    path = tmp_path / "c.npz"
    calls = []

    def compute():
        calls.append(1)
        return {"v": np.full(4, 7)}

    assert cache.cached_arrays(path, compute)["v"].tolist() == [7] * 4
    assert cache.cached_arrays(path, compute)["v"].tolist() == [7] * 4
    assert len(calls) == 1  # second call was a cache hit
    path.write_bytes(path.read_bytes()[:50])  # truncate
    assert cache.cached_arrays(path, compute)["v"].tolist() == [7] * 4
    assert len(calls) == 2


def test_cached_arrays_interrupted_compute_writes_nothing(tmp_path):
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    path = tmp_path / "d.npz"

    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached_arrays(path, boom)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_config_folders_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHSTUDY_DATA", str(tmp_path / "elsewhere"))
    assert config.data_root() == (tmp_path / "elsewhere").resolve()
    assert config.cache_dir("x").is_dir()
    assert config.cache_dir("x").parent == (tmp_path / "cache").resolve()


def test_check_choice_and_bits_messages():
    with pytest.raises(ValueError, match="allowed values: 'smoke', 'quick', 'paper'"):
        config.check_profile("fast")
    assert config.check_bits(32) == [32]
    assert config.check_bits([16, 64]) == [16, 64]
    with pytest.raises(ValueError, match="outside the allowed range 1..1024"):
        config.check_bits([16, 0])
    with pytest.raises(ValueError, match="2000"):
        config.check_bits(2000)
    with pytest.raises(TypeError):
        config.check_bits([16.5])


def test_array_digest_keeps_the_method_modules_cache_keys():
    # the formulas the method modules keyed their caches with before the digest moved here
    import hashlib

    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    b = np.array([1, 0], dtype=np.int64)

    def typed(*arrays):
        h = hashlib.sha256()
        for x in arrays:
            x = np.ascontiguousarray(x)
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(memoryview(x).cast("B"))
        return h.hexdigest()

    shape_only = hashlib.sha256(str(a.shape).encode())
    shape_only.update(np.ascontiguousarray(a).data)
    assert cache.array_digest(a, b) == typed(a, b)[:20]  # CNNH, DSTH, DDH, journal DSTH
    assert cache.array_digest(a, b, length=64) == typed(a, b)  # latent-layer CNN
    assert cache.array_digest(a, length=16, with_dtype=False) == shape_only.hexdigest()[:16]
    assert cache.array_digest(a) != cache.array_digest(a.astype(np.int16))  # dtype is part of it
    assert cache.array_digest(a) != cache.array_digest(a.reshape(3, 2, 4))  # so is the shape
    import torch

    assert cache.array_digest(torch.from_numpy(b)) == cache.array_digest(b)

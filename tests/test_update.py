"""Signed model diffs and the device's model store: apply, chain, roll back, reject."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import make_untrained_package

from edgeasr.update.diff import (
    DiffError,
    _write,
    file_digest,
    make_diff,
    new_signing_key,
    read_diff,
    read_weights,
    serialize_weights,
)
from edgeasr.update.store import ModelStore


def _tree_digest(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def _digest(data: bytes, tmp: Path) -> str:
    (tmp / "digest.safetensors").write_bytes(data)
    return file_digest(tmp / "digest.safetensors")


def _variant(src: Path, out: Path, seed: int, frac: float = 0.3) -> Path:
    """A copy of a weights file with a random share of every matrix changed."""
    w, meta = read_weights(src)
    rng = np.random.default_rng(seed)
    for k, v in w.items():
        if v.ndim == 2:
            mask = rng.random(v.shape) < frac
            w[k] = (v + mask * rng.normal(0, 0.05, v.shape)).astype(np.float32)
    out.write_bytes(serialize_weights(w, meta))
    return out


@pytest.fixture()
def setup(tmp_path):
    pkg = make_untrained_package(tmp_path / "v0", ["call jonathan", "turn on the light"])
    store = ModelStore(tmp_path / "device")
    store.install(pkg)
    key = new_signing_key()
    return pkg, store, key, tmp_path


def test_sparse_diff_applies_and_keeps_only_the_largest_changes(setup):
    pkg, store, key, tmp = setup
    new = _variant(pkg / "model.safetensors", tmp / "v1.safetensors", seed=1)
    diff, result = make_diff(pkg / "model.safetensors", new, key, "sparse", density=0.1)
    dest = store.apply(diff, key.public_key())
    assert store.current == dest
    assert file_digest(dest / "model.safetensors") == _digest(result, tmp)
    base, _ = read_weights(pkg / "model.safetensors")
    got, _ = read_weights(dest / "model.safetensors")
    target, _ = read_weights(new)
    for k in base:
        if base[k].ndim == 2:
            changed = np.count_nonzero(got[k] != base[k])
            assert changed == round(0.1 * base[k].size)
            # the kept changes are the target's, up to int8 quantisation
            sel = got[k] != base[k]
            step = np.abs(target[k] - base[k]).max() / 127
            assert np.allclose(got[k][sel], target[k][sel], atol=step)
    # the updated package still loads and verifies as a model package
    from edgeasr.model.checkpoint import load_package

    load_package(dest)
    assert len(diff) < 0.2 * (pkg / "model.safetensors").stat().st_size


def test_dense_diff_reproduces_the_new_model(setup):
    pkg, store, key, tmp = setup
    new = _variant(pkg / "model.safetensors", tmp / "v1.safetensors", seed=2)
    diff, _ = make_diff(pkg / "model.safetensors", new, key, "dense")
    dest = store.apply(diff, key.public_key())
    got, _ = read_weights(dest / "model.safetensors")
    target, _ = read_weights(new)
    assert all(np.array_equal(got[k], target[k]) for k in target)


def test_chain_of_updates_and_rollback(setup):
    pkg, store, key, tmp = setup
    files = [pkg / "model.safetensors"]
    for i in range(3):
        files.append(_variant(files[-1], tmp / f"v{i + 1}.safetensors", seed=10 + i))
    diffs, results = [], []
    base = files[0]
    for i in range(3):
        d, r = make_diff(base, files[i + 1], key, "sparse", density=0.2)
        diffs.append(d)
        results.append(r)
        base = tmp / f"result{i + 1}.safetensors"
        base.write_bytes(r)  # the next diff starts from what the device will have
    # a diff for a later base is refused while the device is still on v0
    before = _tree_digest(store.current)
    with pytest.raises(DiffError, match="for base"):
        store.apply(diffs[1], key.public_key())
    assert _tree_digest(store.current) == before
    for d, r in zip(diffs, results, strict=True):
        store.apply(d, key.public_key())
        assert store.current_digest() == _digest(r, tmp)
    v3 = store.current
    back = store.rollback()
    assert file_digest(back / "model.safetensors") == _digest(results[1], tmp)
    assert store.previous_link.resolve() == v3


def _signed(header: dict, payload: bytes, key) -> bytes:
    return _write(header, payload, key)


def test_every_rejection_leaves_the_device_model_byte_identical(setup):
    pkg, store, key, tmp = setup
    new = _variant(pkg / "model.safetensors", tmp / "v1.safetensors", seed=3)
    diff, _ = make_diff(pkg / "model.safetensors", new, key, "sparse", density=0.1)
    good = read_diff(diff, key.public_key())
    other_base = _variant(pkg / "model.safetensors", tmp / "other.safetensors", seed=4)
    wrong_base, _ = make_diff(other_base, new, key, "sparse", density=0.1)
    lying = _signed({**good.header, "result_sha256": "0" * 64}, good.payload, key)
    foreign, _ = make_diff(pkg / "model.safetensors", new, new_signing_key())
    bad_version = bytearray(diff)
    struct.pack_into("<H", bad_version, 8, 99)
    cases = {
        "truncated": (diff[: len(diff) // 2], "truncated"),
        "tampered payload": (diff[:-80] + bytes([diff[-80] ^ 1]) + diff[-79:], "signature"),
        "tampered header": (diff[:20] + bytes([diff[20] ^ 1]) + diff[21:], "signature"),
        "other signer": (foreign, "signature"),
        "wrong base": (wrong_base, "for base"),
        "bad magic": (b"NOTADIFF" + diff[8:], "magic"),
        "wrong version": (bytes(bad_version), "version"),
        "lying result hash": (lying, "promises"),
        "empty": (b"", "too short"),
    }  # fmt: skip
    before = _tree_digest(store.current)
    link = store.current
    for name, (data, match) in cases.items():
        with pytest.raises(DiffError, match=match):
            store.apply(data, key.public_key())
        assert store.current == link and _tree_digest(store.current) == before, name
    assert not [p for p in store.versions.iterdir() if p.name.startswith(".incoming")]
    # and the genuine diff still applies afterwards
    store.apply(diff, key.public_key())


def test_diff_header_is_versioned_json(setup):
    pkg, _, key, tmp = setup
    new = _variant(pkg / "model.safetensors", tmp / "v1.safetensors", seed=5)
    diff, _ = make_diff(pkg / "model.safetensors", new, key, info={"version": "v1"})
    d = read_diff(diff, key.public_key())
    assert d.header["method"] == "sparse" and d.header["info"] == {"version": "v1"}
    assert json.loads(json.dumps(d.header)) == d.header
    with pytest.raises(ValueError, match="density"):
        make_diff(pkg / "model.safetensors", new, key, density=0.0)


def test_update_side_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, edgeasr.update; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_diff_and_update_cli(tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app

    run = CliRunner().invoke
    pkg = make_untrained_package(tmp_path / "v0", ["call jonathan", "turn on the light"])
    new = _variant(pkg / "model.safetensors", tmp_path / "v1.safetensors", seed=7)
    keys, store = tmp_path / "keys" / "update", tmp_path / "device"
    assert run(app, ["diff", "keygen", "--out", str(keys)]).exit_code == 0
    assert (keys.with_suffix(".key").stat().st_mode & 0o077) == 0
    key = str(keys.with_suffix(".key"))
    make = ["diff", "make", "--base", str(pkg), "--new", str(new), "--key", key]
    res = run(app, [*make, "--out", str(tmp_path / "v1.diff")])
    assert res.exit_code == 0 and "% of the model file" in res.output
    pub = ["--pubkey", str(keys.with_suffix(".pub"))]
    assert run(app, ["diff", "verify", str(tmp_path / "v1.diff"), *pub]).exit_code == 0
    assert run(app, ["update", "install", str(pkg), "--store", str(store)]).exit_code == 0
    v0 = ModelStore(store).current
    bad = tmp_path / "bad.diff"
    data = (tmp_path / "v1.diff").read_bytes()
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    res = run(app, ["diff", "apply", str(bad), "--store", str(store), *pub])
    assert res.exit_code == 2 and "signature" in res.output and ModelStore(store).current == v0
    res = run(app, ["diff", "apply", str(tmp_path / "v1.diff"), "--store", str(store), *pub])
    assert res.exit_code == 0 and ModelStore(store).current != v0
    assert run(app, ["update", "rollback", "--store", str(store)]).exit_code == 0
    assert ModelStore(store).current == v0


@pytest.fixture()
def served(setup):
    """Three chained diffs published to a repository served by uvicorn on loopback."""
    import socket
    import threading
    import time

    import uvicorn

    from edgeasr.update.server import create_app, publish

    pkg, store, key, tmp = setup
    base = pkg / "model.safetensors"
    repo = tmp / "repo"
    for i in range(3):
        new = _variant(base, tmp / f"n{i}.safetensors", seed=20 + i)
        diff, result = make_diff(base, new, key, "sparse", density=0.2)
        (tmp / f"d{i}.diff").write_bytes(diff)
        publish(repo, tmp / f"d{i}.diff", key.public_key())
        base = tmp / f"r{i}.safetensors"
        base.write_bytes(result)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(repo), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", store, key, repo, base
    server.should_exit = True
    thread.join(5)


def test_pull_follows_the_chain_to_the_latest_model(served):
    from edgeasr.update.client import pull

    url, store, key, repo, last = served
    res = pull(url, store, key.public_key())
    assert len(res.applied) == 3 and store.current_digest() == file_digest(last)
    assert res.bytes_downloaded == sum((repo / "diffs" / f).stat().st_size for f in res.applied)
    assert pull(url, store, key.public_key()).applied == []  # already up to date


def test_interrupted_download_resumes_and_corrupt_one_restarts(served):
    from edgeasr.update.client import UpdateError, pull

    url, store, key, repo, last = served
    v0 = store.current
    with pytest.raises(UpdateError, match="interrupted"):
        pull(url, store, key.public_key(), max_bytes=100)
    parts = list((store.root / "downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 100 and store.current == v0
    res = pull(url, store, key.public_key())
    total = sum((repo / "diffs" / f).stat().st_size for f in res.applied)
    assert res.bytes_downloaded == total - 100  # the first 100 bytes were not fetched again
    assert store.current_digest() == file_digest(last)
    # a damaged partial file fails its checksum, is discarded, and the next pull starts over
    store.rollback()  # back to the second-to-last version
    before = store.current
    with pytest.raises(UpdateError, match="interrupted"):
        pull(url, store, key.public_key(), max_bytes=50)
    part = next((store.root / "downloads").glob("*.part"))
    part.write_bytes(bytes([part.read_bytes()[0] ^ 1]) + part.read_bytes()[1:])
    with pytest.raises(UpdateError, match="checksum"):
        pull(url, store, key.public_key())
    assert store.current == before and not part.exists()
    pull(url, store, key.public_key())
    assert store.current_digest() == file_digest(last)


def test_server_refuses_unsigned_diffs_and_bad_ranges(served):
    import httpx

    from edgeasr.update.server import publish

    url, store, key, repo, last = served
    foreign, _ = make_diff(last, last, new_signing_key(), "dense")
    (repo / "foreign.diff").write_bytes(foreign)
    with pytest.raises(DiffError, match="signature"):
        publish(repo, repo / "foreign.diff", key.public_key())
    name = json.loads((repo / "manifest.json").read_text())["diffs"][0]["file"]
    assert (
        httpx.get(f"{url}/files/{name}", headers={"Range": "bytes=999999999-"}).status_code == 416
    )
    assert httpx.get(f"{url}/files/..manifest.json").status_code == 404
    r = httpx.get(f"{url}/files/{name}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == (repo / "diffs" / name).read_bytes()[10:20]


def test_pull_cli(served, tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app
    from edgeasr.update.diff import public_key_bytes

    url, store, key, repo, last = served
    pub = tmp_path / "update.pub"
    pub.write_bytes(public_key_bytes(key))
    args = ["update", "pull", "--server", url, "--store", str(store.root), "--pubkey", str(pub)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "applied 3 update(s)" in res.output
    res = CliRunner().invoke(app, ["update", "pull", "--server", "http://127.0.0.1:9",
                                   "--store", str(store.root), "--pubkey", str(pub)])  # fmt: skip
    assert res.exit_code == 2 and res.output.startswith("error:")


def test_sparse_diff_training_changes_only_the_target_share(tiny_corpus, tiny_base, tmp_path):
    """W = W_base + d with d pruned to 10% of each matrix; `diff make` ships exactly d."""
    from edgeasr.compress.training import CompressionConfig
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    repo, base = Path(__file__).resolve().parents[1], tiny_base
    cfg = load_experiment(repo / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.ctc_warmup_steps = 2, 0
    cfg.train.compression = CompressionConfig.from_dict(
        {"init_from": str(base), "delta": True,
         "prune": {"target": 0.9, "start_frac": 0.0, "end_frac": 0.5, "every": 1}}
    )  # fmt: skip
    new = Trainer(cfg, tiny_corpus, tmp_path / "diff").fit()
    w0, _ = read_weights(base / "model.safetensors")
    w1, _ = read_weights(new / "model.safetensors")
    for name in w0:
        share = np.count_nonzero(w1[name] != w0[name]) / w0[name].size
        if w0[name].ndim >= 2 and not name.startswith("ctc_head"):
            assert share <= 0.1 + 1.0 / w0[name].size, name
        else:  # only the diff trains: biases, norms and the CTC head stay the base's
            assert share == 0, name
    key = new_signing_key()
    diff, _ = make_diff(base / "model.safetensors", new / "model.safetensors", key, density=None)
    full, _ = make_diff(base / "model.safetensors", new / "model.safetensors", key, "dense")
    assert len(diff) < 0.5 * len(full)
    store = ModelStore(tmp_path / "device")
    store.install(base)
    got, _ = read_weights(store.apply(diff, key.public_key()) / "model.safetensors")
    for name in w1:
        changed = w1[name] != w0[name]
        step = np.abs(w1[name] - w0[name]).max() / 127 if changed.any() else 0.0
        assert np.allclose(got[name], w1[name], atol=step + 1e-7), name


def test_sparse_diff_leaves_frozen_weights_out(tiny_corpus, tiny_base, tmp_path):
    """With ``train.train_only`` the diff is the change of those weights alone: everything
    else (here the predictor and joiner) stays byte-identical to the base, and ships nothing."""
    from edgeasr.compress.training import diff_experiment
    from edgeasr.train.trainer import Trainer

    repo = Path(__file__).resolve().parents[1]
    cfg = diff_experiment(repo / "configs" / "tiny.yaml", tiny_base, "sparse", 0.1)
    cfg.train.epochs, cfg.train.max_steps, cfg.train.ctc_warmup_steps = 1, 3, 0
    cfg.train.train_only = ["encoder."]
    new = Trainer(cfg, tiny_corpus, tmp_path / "enc").fit()
    w0, _ = read_weights(tiny_base / "model.safetensors")
    w1, _ = read_weights(new / "model.safetensors")
    changed = {n for n in w0 if not np.array_equal(w0[n], w1[n])}
    assert changed and all(n.startswith("encoder.") for n in changed), sorted(changed)
    key = new_signing_key()
    diff, _ = make_diff(tiny_base / "model.safetensors", new / "model.safetensors", key,
                        density=None)  # fmt: skip
    shipped = {t["name"] for t in read_diff(diff, key.public_key()).header["tensors"]}
    assert shipped == changed


def test_binary_delta_reproduces_the_new_model_and_beats_dense(setup):
    pkg, store, key, tmp = setup
    new = _variant(pkg / "model.safetensors", tmp / "v1.safetensors", seed=8, frac=0.05)
    binary, _ = make_diff(pkg / "model.safetensors", new, key, "binary")
    dense, _ = make_diff(pkg / "model.safetensors", new, key, "dense")
    assert len(binary) < 0.5 * len(dense)
    got, _ = read_weights(store.apply(binary, key.public_key()) / "model.safetensors")
    target, _ = read_weights(new)
    assert all(np.array_equal(got[k], target[k]) for k in target)
    # against another base it cannot decode to the promised model: refused, nothing changes
    store.rollback()
    before = _tree_digest(store.current)
    d = read_diff(binary, key.public_key())
    forged = _write({**d.header, "base_sha256": store.current_digest()}, d.payload[:-3], key)
    with pytest.raises(DiffError):
        store.apply(forged, key.public_key())
    assert _tree_digest(store.current) == before


def test_hash_diff_training_and_shipping(tiny_corpus, tiny_base, tmp_path):
    """W = W_base + sign * bucket[hash]: training stays on the hashed subspace and the diff
    ships only the buckets, which the device expands with the same hash."""
    from edgeasr.compress.training import CompressionConfig
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer
    from edgeasr.update.diff import hash_index

    repo, base = Path(__file__).resolve().parents[1], tiny_base
    cfg = load_experiment(repo / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps, cfg.train.ctc_warmup_steps = 1, 3, 0
    cfg.train.compression = CompressionConfig.from_dict(
        {"init_from": str(base), "hash_fraction": 0.05, "hash_seed": 3}
    )
    new = Trainer(cfg, tiny_corpus, tmp_path / "hash").fit()
    w0, _ = read_weights(base / "model.safetensors")
    w1, _ = read_weights(new / "model.safetensors")
    name = "encoder.layers.0.weight_ih_l0"
    idx, sign = hash_index(name, w0[name].size, round(0.05 * w0[name].size), 3)
    d = (w1[name] - w0[name]).ravel() * sign
    assert np.any(d) and all(np.allclose(d[idx == k], d[idx == k][0], atol=1e-6) for k in range(5))
    key = new_signing_key()
    diff, _ = make_diff(base / "model.safetensors", new / "model.safetensors", key, "hash",
                        density=0.05, seed=3)  # fmt: skip
    full = (new / "model.safetensors").stat().st_size
    assert len(diff) < 0.12 * full
    store = ModelStore(tmp_path / "device")
    store.install(base)
    got, _ = read_weights(store.apply(diff, key.public_key()) / "model.safetensors")
    for k in w1:
        assert np.allclose(got[k], w1[k], atol=1e-5), k


def test_sparse_diff_trains_at_its_own_learning_rate(tiny_corpus, tiny_base, tmp_path):
    """sparse_lr_scale multiplies the step size of a sparse diff's weights (and nothing else
    trains), so the same schedule at scale 2 runs at exactly twice the learning rate; a
    multiplier that is not a positive number is refused."""
    from edgeasr.compress.training import CompressionConfig, diff_experiment
    from edgeasr.train.trainer import Trainer

    repo = Path(__file__).resolve().parents[1]
    lrs = {}
    for scale in (1.0, 2.0):
        cfg = diff_experiment(repo / "configs" / "tiny.yaml", tiny_base, "sparse", 0.1)
        cfg.train.epochs, cfg.train.max_steps, cfg.train.ctc_warmup_steps = 1, 2, 0
        cfg.train.compression.sparse_lr_scale = scale
        trainer = Trainer(cfg, tiny_corpus, tmp_path / f"x{scale:g}")
        trainer.fit()
        groups = trainer.opt.param_groups
        (group,) = [g for g in groups if any(p.requires_grad for p in g["params"])]
        lrs[scale] = group["lr"]
    assert lrs[1.0] > 0 and lrs[2.0] == pytest.approx(2 * lrs[1.0])
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="sparse_lr_scale must be a finite number > 0"):
            CompressionConfig.from_dict({"sparse_lr_scale": bad})


def test_lowrank_diff_training_and_shipping(tiny_corpus, tiny_base, tmp_path):
    """LoRA-style: only factors B, A train; every matrix changes by a rank-r product and the
    diff ships the factors; a resumed run restores them; a forged rank is refused."""
    from edgeasr.compress.training import diff_experiment
    from edgeasr.train.trainer import Trainer
    from edgeasr.update.diff import lowrank_rank

    repo = Path(__file__).resolve().parents[1]
    cfg = diff_experiment(repo / "configs" / "tiny.yaml", tiny_base, "lowrank", 0.05)
    cfg.train.epochs, cfg.train.max_steps, cfg.train.checkpoint_every = 1, 3, 2
    cfg.train.ctc_warmup_steps, cfg.train.lr = 0, 1e-2
    new = Trainer(cfg, tiny_corpus, tmp_path / "lora").fit()
    assert (tmp_path / "lora" / "ckpt" / "last.delta.safetensors").exists()
    w0, _ = read_weights(tiny_base / "model.safetensors")
    w1, _ = read_weights(new / "model.safetensors")
    changed = 0
    for name in w0:
        d = (w1[name] - w0[name]).astype(np.float64)
        if w0[name].ndim >= 2 and not name.startswith("ctc_head"):
            rank = np.linalg.matrix_rank(d.reshape(d.shape[0], -1), tol=1e-6)
            assert rank <= lowrank_rank(w0[name].shape, 0.05), name
            changed += bool(np.any(d))
        else:
            assert not np.any(d), name
    assert changed > 3
    key = new_signing_key()
    diff, _ = make_diff(tiny_base / "model.safetensors", new / "model.safetensors", key,
                        "lowrank", density=0.05)  # fmt: skip
    dense, _ = make_diff(tiny_base / "model.safetensors", new / "model.safetensors", key, "dense")
    assert len(diff) < 0.5 * len(dense)
    store = ModelStore(tmp_path / "device")
    store.install(tiny_base)
    before = _tree_digest(store.current)
    d = read_diff(diff, key.public_key())
    tensors = [dict(t, rank=t["rank"] + 1) if t["encoding"] == "lowrank" else t
               for t in d.header["tensors"]]  # fmt: skip
    with pytest.raises(DiffError, match="rank"):
        store.apply(_write({**d.header, "tensors": tensors}, d.payload, key), key.public_key())
    assert _tree_digest(store.current) == before
    got, _ = read_weights(store.apply(diff, key.public_key()) / "model.safetensors")
    for k in w1:
        assert np.allclose(got[k], w1[k], atol=1e-5), k


def test_install_refuses_what_is_not_a_model_package(tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app

    junk = tmp_path / "junk"
    junk.mkdir()
    store = tmp_path / "device"
    res = CliRunner().invoke(app, ["update", "install", str(junk), "--store", str(store)])
    assert res.exit_code == 2 and "not a model package" in res.output
    (junk / "model.safetensors").write_bytes(b"not safetensors")
    (junk / "manifest.json").write_text("{}")
    res = CliRunner().invoke(app, ["update", "install", str(junk), "--store", str(store)])
    assert res.exit_code == 2 and "unreadable weights" in res.output
    assert not (store / "current").exists()


def test_diff_train_refuses_an_unknown_method_or_density(tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app

    for extra in (["--method", "bogus"], ["--method", "sparse", "--density", "1.5"]):
        res = CliRunner().invoke(
            app, ["diff", "train", "--corpus", str(tmp_path), "--out", str(tmp_path / "r"), *extra]
        )
        assert res.exit_code == 2 and res.output.startswith("error:"), res.output
        assert not (tmp_path / "r").exists()
    cfg = Path(__file__).resolve().parents[1] / "configs" / "update-replay.yaml"
    replay = ["--config", str(cfg), "--replay-corpus", str(tmp_path / "no")]
    res = CliRunner().invoke(
        app, ["diff", "train", "--corpus", str(tmp_path), "--out", str(tmp_path / "r"), *replay]
    )
    assert res.exit_code == 2 and "has no train split" in res.output, res.output
    assert not (tmp_path / "r").exists()

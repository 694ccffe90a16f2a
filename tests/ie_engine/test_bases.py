"""Bases: the checkpoint layouts, the packaged ImageNet weights, the cache, the hash check, the
offline message, and that a cached file is used without touching the network."""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.models import resnet18

from ie_engine.bases import (
    BASES,
    BaseSpec,
    BaseUnavailable,
    apply_base,
    base_status,
    fetch_base,
    list_bases,
    named_base_config,
    packaged_base,
    resolve_base,
    resolve_config_base,
    with_base,
)
from ie_engine.cli import main as ie_main
from ie_engine.config import TrainConfig, make_config
from ie_engine.errors import CheckpointError, ConfigError
from ie_engine.ssl import SSLTrainer
from ie_engine.ssl.layouts import detect_layout, effnet_lite_to_timm
from ie_engine.ssl.model import MoCoV3, build_backbone, load_backbone_checkpoint

TINY = TrainConfig(arch="resnet18", image_size=32, batch_size=8, hidden_dim=32, proj_dim=16)


def _resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return resnet18(weights=None).state_dict()  # with fc.weight / fc.bias, as torchvision's


def _same(a: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    mine = a.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(mine[prefix + key], value), key


# ---------------------------------------------------------------------------------- layouts


def test_moco_v3_layout_keeps_the_base_encoder(tmp_path: Path) -> None:
    online, momentum = _resnet18_state(1), _resnet18_state(2)
    state = {f"module.base_encoder.{k}": v for k, v in online.items() if not k.startswith("fc.")}
    state |= {f"module.momentum_encoder.{k}": v for k, v in momentum.items()
              if not k.startswith("fc.")}
    # MoCo v3's MLP heads replace fc: they must be dropped, not loaded.
    state["module.base_encoder.fc.0.weight"] = torch.randn(4096, 512)
    state["module.predictor.0.weight"] = torch.randn(4096, 256)
    path = tmp_path / "r-18.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": state, "optimizer": {}}, path)
    assert detect_layout(torch.load(path, weights_only=True)) == "moco-v3"
    net, _ = build_backbone("resnet18", 64)
    assert load_backbone_checkpoint(net, path) == []
    _same(net, online)  # the online encoder, not the momentum one


def test_torchvision_layout_drops_the_classifier(tmp_path: Path) -> None:
    state = _resnet18_state(3)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    assert detect_layout(state) == "torchvision"
    net, _ = build_backbone("resnet18", 64)
    assert load_backbone_checkpoint(net, path) == []
    _same(net, state)


def test_effnet_lite_mapping_matches_the_reference_implementation() -> None:
    """The packaged weights, mapped onto timm's network, give exactly the features of the
    package they were made for (efficientnet-lite-pytorch, a test dependency)."""
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    base = packaged_base("imagenet-effnet-lite0")
    assert base.checkpoint is not None and base.arch == "effnet-lite0"
    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(base.checkpoint)).eval()
    net, dim = build_backbone("effnet-lite0", 128)
    assert dim == 1280
    assert load_backbone_checkpoint(net, base.checkpoint) == []
    net.eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(x)
        theirs = torch.nn.functional.adaptive_avg_pool2d(
            reference.extract_features(x), 1).flatten(1)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_effnet_lite_mapping_refuses_unknown_keys() -> None:
    with pytest.raises(CheckpointError, match="unknown layer"):
        effnet_lite_to_timm({"_blocks.3._mystery.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="block 99"):
        effnet_lite_to_timm({"_blocks.99._bn0.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------- registry


def test_list_bases_offline_says_what_to_put_where(tmp_path: Path) -> None:
    rows = {r.spec.name: r for r in list_bases(data_dir=tmp_path)}
    assert rows["imagenet-effnet-lite0"].available
    assert rows["scratch"].available
    moco = rows["moco-v3-resnet50"]
    assert not moco.available and moco.path == tmp_path / "bases" / "r-50-1000ep.pth.tar"
    assert "needs the weights file" in moco.reason and str(moco.path) in moco.reason
    tv = rows["torchvision-resnet50"]
    assert not tv.available and tv.path == tmp_path / "bases" / "resnet50-11ad3fa6.pth"
    assert str(tv.path) in tv.reason
    assert not rows["offline-ssl"].available and "ie pretrain" in rows["offline-ssl"].reason
    with pytest.raises(BaseUnavailable, match=r"r-50-1000ep\.pth\.tar"):
        resolve_base("moco-v3-resnet50", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown base"):
        base_status("imagenet", data_dir=tmp_path)


def test_ie_bases_command_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ie_main(["--data-dir", str(tmp_path), "bases"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line[0] != " "}
    assert "available" in lines["imagenet-effnet-lite0"]
    assert "missing" in lines["moco-v3-resnet50"]
    assert "missing" in lines["torchvision-resnet18"]
    assert str(tmp_path / "bases" / "r-50-1000ep.pth.tar") in out


def test_a_local_file_base_reads_its_arch(tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    torch.save({"backbone": {k: v for k, v in _resnet18_state(4).items()
                             if not k.startswith("fc.")}}, path)
    resolved = resolve_base(f"file:{path}", data_dir=tmp_path)
    assert resolved.arch == "resnet18" and resolved.checkpoint == path
    with pytest.raises(BaseUnavailable, match="no such file"):
        resolve_base(f"file:{tmp_path / 'nope.pt'}", data_dir=tmp_path)


def test_packaged_base_starts_the_trainer_from_imagenet_weights() -> None:
    cfg = apply_base(replace(TINY, image_size=64), packaged_base("imagenet-effnet-lite0"))
    assert cfg.arch == "effnet-lite0" and cfg.input_mean == (0.5, 0.5, 0.5)
    trainer = SSLTrainer(replace(cfg, init_checkpoint=None), seed=0)  # resolved by name
    weights = torch.load(str(packaged_base("imagenet-effnet-lite0").checkpoint),
                         weights_only=True)
    assert torch.equal(trainer.model.backbone.conv_stem.weight, weights["_conv_stem.weight"])
    feats = trainer.embed(torch.randint(0, 255, (3, 3, 80, 80), dtype=torch.uint8))
    assert feats.shape == (3, 1280)


def test_a_base_without_its_file_is_refused_when_the_network_is_built() -> None:
    with pytest.raises(BaseUnavailable, match="moco-v3-resnet50"):
        SSLTrainer(replace(TINY, base="moco-v3-resnet50", arch="resnet50"), seed=0)


def test_frozen_stages_keep_the_base_and_its_statistics() -> None:
    cfg = replace(apply_base(replace(TINY, image_size=64), packaged_base("imagenet-effnet-lite0")),
                  frozen_stages=2)
    trainer = SSLTrainer(cfg, seed=0)
    model: MoCoV3 = trainer.model
    stem = model.backbone.conv_stem.weight.clone()
    stats = model.backbone.bn1.running_mean.clone()
    head = model.backbone.conv_head.weight.clone()
    images = torch.randint(0, 255, (8, 3, 72, 72), dtype=torch.uint8)
    trainer.train(lambda step, g: images, 2)
    assert torch.equal(model.backbone.conv_stem.weight, stem)
    assert torch.equal(model.backbone.bn1.running_mean, stats)
    assert not torch.equal(model.backbone.conv_head.weight, head)
    trained = {id(p) for p in model.online_parameters()}
    assert id(model.backbone.conv_stem.weight) not in trained
    assert id(model.backbone.conv_head.weight) in trained


def test_with_base_leaves_a_packaged_base_as_a_name(tmp_path: Path) -> None:
    cfg = make_config("cpu-small")
    assert with_base(cfg, None, data_dir=tmp_path) is cfg
    moved = with_base(cfg, "imagenet-effnet-lite0", data_dir=tmp_path)
    train = moved.train
    assert train.arch == "effnet-lite0" and train.init_checkpoint is None  # no machine path
    assert (train.image_size, train.frozen_stages) == (96, 4)  # the base's CPU settings
    assert moved.download.stored_size >= 110
    paper = with_base(make_config("gpu-paper"), "imagenet-effnet-lite0", data_dir=tmp_path)
    assert (paper.train.image_size, paper.train.frozen_stages) == (224, 0)


def test_a_named_base_needing_a_file_is_resolved_by_whoever_builds_the_run(
    tmp_path: Path,
) -> None:
    cfg = named_base_config(make_config("gpu-paper"), "moco-v3-resnet50")
    assert cfg.train.arch == "resnet50" and cfg.train.init_checkpoint is None
    with pytest.raises(BaseUnavailable, match="r-50-1000ep"):
        resolve_config_base(cfg, data_dir=tmp_path, fetch=False)
    file = tmp_path / "bases" / "r-50-1000ep.pth.tar"
    file.parent.mkdir()
    file.write_bytes(b"placed by hand")
    assert resolve_config_base(cfg, data_dir=tmp_path).train.init_checkpoint == str(file)


# ---------------------------------------------------------------------------------- fetching


class _Server:
    """A loopback HTTP server answering one file, counting requests."""

    def __init__(self, body: bytes) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/r-18.pth.tar"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _moco_file(tmp_path: Path) -> bytes:
    state = {f"module.base_encoder.{k}": v for k, v in _resnet18_state(5).items()}
    path = tmp_path / "src.pth.tar"
    torch.save({"state_dict": state}, path)
    return path.read_bytes()


def test_fetch_checks_the_pinned_hash_and_then_never_asks_again(tmp_path: Path) -> None:
    body = _moco_file(tmp_path)
    server = _Server(body)
    try:
        spec = BaseSpec("moco-test", "resnet18", "download", "test", file_name="r-18.pth.tar",
                        url=server.url, sha256=hashlib.sha256(body).hexdigest())
        path = fetch_base(spec, data_dir=tmp_path)
        assert path.read_bytes() == body and server.requests == 1
        assert fetch_base(spec, data_dir=tmp_path) == path
        assert server.requests == 1  # cached: no request
        net, _ = build_backbone("resnet18", 64)
        assert load_backbone_checkpoint(net, path) == []
        # The file is damaged after the fetch: the pinned digest catches it on the next load.
        path.write_bytes(body[:-10] + b"0123456789")
        with pytest.raises(BaseUnavailable, match="SHA-256"):
            fetch_base(spec, data_dir=tmp_path)
    finally:
        server.close()


def test_fetch_refuses_a_file_whose_hash_is_not_the_pinned_one(tmp_path: Path) -> None:
    server = _Server(_moco_file(tmp_path))
    try:
        spec = BaseSpec("moco-test", "resnet18", "download", "test", file_name="r-18.pth.tar",
                        url=server.url, sha256="0" * 64)
        with pytest.raises(BaseUnavailable, match="not the pinned"):
            fetch_base(spec, data_dir=tmp_path)
        assert not (tmp_path / "bases" / "r-18.pth.tar").exists()
        assert not list((tmp_path / "bases").glob("*.part"))
    finally:
        server.close()


def test_fetch_without_a_published_hash_records_one_and_checks_it(tmp_path: Path) -> None:
    body = _moco_file(tmp_path)
    server = _Server(body)
    try:
        spec = BaseSpec("moco-test", "resnet18", "download", "test", file_name="r-18.pth.tar",
                        url=server.url)
        path = fetch_base(spec, data_dir=tmp_path)
        record = path.with_name(path.name + ".sha256").read_text().split()[0]
        assert record == hashlib.sha256(body).hexdigest()
        path.write_bytes(body + b"tampered")
        with pytest.raises(BaseUnavailable, match="damaged"):
            fetch_base(spec, data_dir=tmp_path)
    finally:
        server.close()


def test_fetch_offline_says_which_file_to_put_where(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = BaseSpec("moco-test", "resnet18", "download", "test", file_name="r-18.pth.tar",
                    url=f"http://127.0.0.1:{port}/r-18.pth.tar")
    with pytest.raises(BaseUnavailable) as info:
        fetch_base(spec, data_dir=tmp_path, timeout_s=5)
    assert str(tmp_path / "bases" / "r-18.pth.tar") in str(info.value)
    assert "by hand" in str(info.value)


def test_a_cached_torchvision_file_is_used_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = tmp_path / "bases" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(_resnet18_state(6), path)
    resolved = resolve_base("torchvision-resnet18", data_dir=tmp_path)
    assert resolved.checkpoint == path and resolved.arch == "resnet18"
    net, _ = build_backbone("resnet18", 64)
    assert load_backbone_checkpoint(net, path) == []


def test_torchvision_specs_name_torchvisions_own_files() -> None:
    from torchvision import models

    for name in ("torchvision-resnet50", "torchvision-resnet18"):
        spec = BASES[name]
        enum_name, member = str(spec.torchvision_weights).split(".")
        url = getattr(getattr(models, enum_name), member).url
        assert spec.url == url and url.endswith("/" + str(spec.file_name))


def test_the_bases_module_imports_no_torch() -> None:
    """The web app lists the bases; it never imports torch."""
    import subprocess
    import sys

    code = ("import sys, ie_engine.bases as b; b.list_bases(data_dir=__import__('pathlib')"
            ".Path('.')); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"

"""Backbone weights: timm's hub download (--pretrained=true) failing cleanly offline, and local
--checkpoint_path files (.safetensors, .pth, .bin; nested, prefixed, partial, wrong). Nothing here
downloads: the hub is forced offline with an empty cache, and weight files are written to tmp_path."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch

from lsdc.core.config import ModelConfig
from lsdc.core.errors import InputError
from lsdc.model import create_model
from lsdc.model.net import load_backbone

SMALL = dict(proj_dim=16, gru_hidden=8, gru_layers=1, attn_dim=8, level_emb_dim=4)
WAYS_OUT = ("--checkpoint_path=FILE", "--pretrained=false")
LSDC = Path(sys.executable).with_name("lsdc")


def cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"backbone": "test_resnet", **SMALL, **kw})


def source_state_dict(seed=1) -> dict:
    """A test_resnet backbone's weights under timm's key names, plus its 1000-class head (fc.*), as a
    timm / Hugging Face checkpoint has it."""
    torch.manual_seed(seed)
    sd = timm.create_model("test_resnet", pretrained=False).state_dict()
    assert "fc.weight" in sd
    return sd


def assert_backbone_is(model, sd):
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0, msg=k)


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty hub cache. huggingface_hub reads both at import, so its
    constants are patched too (is_offline_mode() and hf_hub_download read those at call time)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_pretrained_offline_is_one_input_error(hub_offline):
    with pytest.raises(InputError) as ei:
        create_model(cfg(pretrained=True))
    msg = str(ei.value)
    assert "\n" not in msg
    assert "'test_resnet'" in msg and "HF_HUB_OFFLINE" in msg
    assert all(w in msg for w in WAYS_OUT)


def _transport_errors():
    out = []
    for mod in ("httpx2", "httpx"):  # whichever http library this huggingface_hub talks through
        try:
            out.append(__import__(mod).ConnectError("[Errno -2] Name or service not known"))
        except ImportError:
            pass
    return out


@pytest.mark.parametrize("exc", [TimeoutError("read timed out"), ConnectionRefusedError(111, "refused"),
                                 *_transport_errors()], ids=lambda e: type(e).__name__)
def test_pretrained_download_failure_is_one_input_error(monkeypatch, tmp_path, exc):
    """No network (simulated: hf_hub_download raises what a failed request does), not offline mode."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    def fail(*a, **kw):
        raise exc
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fail)
    with pytest.raises(InputError) as ei:
        create_model(cfg(pretrained=True))
    msg = str(ei.value)
    assert "\n" not in msg and "'test_resnet'" in msg and f"({type(exc).__name__}: " in msg
    assert all(w in msg for w in WAYS_OUT)


def test_pretrained_without_hub_weights_or_unknown_name():
    # coatnet_0_224 is a timm model without pretrained weights: refused before anything is built
    with pytest.raises(InputError, match="'coatnet_0_224': timm has no pretrained weights") as ei:
        create_model(cfg(backbone="coatnet_0_224", pretrained=True))
    assert all(w in str(ei.value) for w in WAYS_OUT)
    with pytest.raises(InputError, match="'test_resnet.no_such_tag': timm has no pretrained weights"):
        create_model(cfg(backbone="test_resnet.no_such_tag", pretrained=True))
    with pytest.raises(InputError, match="'no_such_net': not a timm model name"):
        create_model(cfg(backbone="no_such_net"))


def test_cli_pretrained_offline_exits_2_with_one_line(tmp_path):
    """The installed entry point, with HF_HUB_OFFLINE=1 in its environment from the start (the
    cheapest verb that builds a model: bench step; the error comes before any step)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    r = subprocess.run([str(LSDC), "bench", "step", "--backbone=test_resnet", "--pretrained=true",
                        "--steps=1", "--warmup=0", "--device=cpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lsdc bench: error: backbone 'test_resnet': ")
    assert "HF_HUB_OFFLINE is set" in lines[0]
    assert all(w in lines[0] for w in WAYS_OUT)


def test_checkpoint_path_wins_over_pretrained(hub_offline, tmp_path):
    """pretrained=True with a local file: no download is tried (the hub is offline here, so one
    would fail), the file's weights are loaded."""
    sd = source_state_dict()
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(sd, str(path))
    torch.manual_seed(5)
    assert_backbone_is(create_model(cfg(pretrained=True, checkpoint_path=str(path))), sd)


def test_safetensors_checkpoint(tmp_path, caplog):
    sd = source_state_dict()
    path = tmp_path / "model.safetensors"  # timm's hub layout: timm key names, with the fc head
    safetensors.torch.save_file(sd, str(path))
    torch.manual_seed(7)
    fresh = create_model(cfg())
    with pytest.raises(AssertionError):
        assert_backbone_is(fresh, sd)  # a different random init to begin with
    torch.manual_seed(7)
    with caplog.at_level(logging.INFO, logger="lsdc.model.net"):
        model = create_model(cfg(checkpoint_path=str(path)))
    assert_backbone_is(model, sd)
    n_own = len(model.backbone.state_dict())
    # the partial match is reported: every backbone tensor loaded, the head skipped
    assert f"loaded {n_own}/{n_own} tensors" in caplog.text
    assert "skipped 2 the backbone lacks (e.g. fc." in caplog.text
    # by content too: a safetensors file under another suffix
    other = tmp_path / "weights.bin"
    other.write_bytes(path.read_bytes())
    assert_backbone_is(create_model(cfg(checkpoint_path=str(other))), sd)


@pytest.mark.parametrize("suffix", [".pth", ".bin"])
@pytest.mark.parametrize("wrap", [
    lambda d: d,
    lambda d: {"state_dict": d, "epoch": 3, "arch": "test_resnet"},
    lambda d: {"model": {f"module.{k}": v for k, v in d.items()}},
    lambda d: {"state_dict_ema": d, "state_dict": {k: torch.zeros_like(v) for k, v in d.items()}},
    lambda d: {"model": {f"_orig_mod.module.backbone.{k}": v for k, v in d.items()} | {"head.1.weight": torch.ones(3)}},
], ids=["plain", "state_dict", "model+module", "ema_first", "compiled_slicemil"])
def test_torch_pickle_checkpoints(tmp_path, suffix, wrap):
    sd = source_state_dict()
    path = tmp_path / f"weights{suffix}"
    torch.save(wrap(sd), path)
    torch.manual_seed(3)
    assert_backbone_is(create_model(cfg(checkpoint_path=str(path))), sd)


def test_partial_backbone_is_loaded_and_warned(tmp_path, caplog):
    sd = source_state_dict()
    half = {k: v for i, (k, v) in enumerate(sd.items()) if i % 2 == 0}
    path = tmp_path / "half.pth"
    torch.save(half, path)
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    with caplog.at_level(logging.INFO, logger="lsdc.model.net"):
        n = load_backbone(backbone, path)
    assert n == len([k for k in half if not k.startswith("fc.")])
    assert any(r.levelno == logging.WARNING and "left at their init" in r.message for r in caplog.records)
    got = backbone.state_dict()
    for k in half:
        if k in got:
            torch.testing.assert_close(got[k], half[k], rtol=0, atol=0)


def test_no_match_and_shape_mismatch_errors(tmp_path):
    nothing = tmp_path / "nothing.safetensors"
    safetensors.torch.save_file({"encoder.w": torch.zeros(3), "encoder.b": torch.zeros(2)}, str(nothing))
    with pytest.raises(InputError) as ei:
        create_model(cfg(checkpoint_path=str(nothing)))
    msg = str(ei.value)
    assert str(nothing) in msg and "no tensor matches the backbone 'test_resnet'" in msg
    assert "0 of the file's 2 tensors matched" in msg and "\n" not in msg

    # another architecture's weights under the same key names: the first differing key is named
    other = timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()
    first = next(k for k, v in other.items() if v.ndim == 4)
    other[first] = torch.zeros(other[first].shape[0] + 1, *other[first].shape[1:])
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": other}, wrong)
    with pytest.raises(InputError) as ei:
        create_model(cfg(checkpoint_path=str(wrong)))
    msg = str(ei.value)
    assert str(wrong) in msg and f"tensor {first!r} has shape" in msg and "1 of " in msg

    junk = tmp_path / "notes.pth"
    junk.write_text("not weights at all\n")
    with pytest.raises(InputError, match="not a torch weights file"):
        create_model(cfg(checkpoint_path=str(junk)))
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        create_model(cfg(checkpoint_path=str(bad_st)))
    with pytest.raises(InputError, match="not found"):
        create_model(cfg(checkpoint_path=str(tmp_path / "missing.safetensors")))

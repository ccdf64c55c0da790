"""Generic invariants of the slice-stack model over several tiny timm backbones (CPU, no downloads)."""
import pytest
import timm
import torch

from lsdc.core.config import ModelConfig, TrainConfig
from lsdc.core.errors import InputError
from lsdc.model import channels_last_5d, count_parameters, create_model, param_groups, total_loss

B, S, H = 2, 5, 64
BACKBONES = ["test_efficientnet", "test_resnet", "test_convnext"]
SMALL = dict(proj_dim=32, gru_hidden=24, attn_dim=16, level_emb_dim=8)


def small_cfg(backbone="test_efficientnet", **kw) -> ModelConfig:
    return ModelConfig(backbone=backbone, **{**SMALL, **kw})


def batch(in_chans=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, S, in_chans, H, H, generator=g)  # (B, S, C, H, W)
    level = torch.tensor([0, 4])
    target = torch.tensor([1, 2])
    return x, level, target


def check_outputs(out, aux=False):
    assert out["logits"].shape == (B, 3)
    assert out["attention"].shape == (B, S)
    assert torch.isfinite(out["logits"]).all()
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(B))
    assert (out["attention"] >= 0).all()
    if aux:
        assert out["aux_abnormal"].shape == (B,) and out["aux_severe"].shape == (B,)
    else:
        assert "aux_abnormal" not in out


def check_all_grads(model):
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_and_every_parameter_gets_a_gradient(backbone):
    torch.manual_seed(0)
    model = create_model(small_cfg(backbone))
    x, level, target = batch()
    out = model(x, level)
    check_outputs(out)
    loss, _ = total_loss(out, target, TrainConfig())
    loss.backward()
    check_all_grads(model)


def test_one_channel_gated_aux_two_sided():
    torch.manual_seed(0)
    model = create_model(small_cfg(attention="gated", aux_heads=True), in_chans=1, two_sided=True)
    assert model.attn.U is not None
    x, level, target = batch(in_chans=1)
    out = model(x, level, side=torch.tensor([0, 1]))
    check_outputs(out, aux=True)
    loss, parts = total_loss(out, target, TrainConfig(any_severe_weight=0.5), study_ids=[7, 7])
    assert set(parts) == {"ce", "any_severe", "aux_abnormal", "aux_severe", "loss"}
    loss.backward()
    check_all_grads(model)


def test_side_embedding_changes_the_output():
    torch.manual_seed(0)
    model = create_model(small_cfg(), two_sided=True).eval()
    x, level, _ = batch()
    with torch.no_grad():
        left = model(x, level, side=torch.tensor([0, 0]))["logits"]
        right = model(x, level, side=torch.tensor([1, 1]))["logits"]
    assert not torch.allclose(left, right)
    with pytest.raises(ValueError, match="side"):
        model(x, level)


def test_channels_last_input_matches():
    torch.manual_seed(0)
    model = create_model(small_cfg()).eval()
    x, level, _ = batch()
    with torch.no_grad():
        ref = model(x, level)["logits"]
        xcl = channels_last_5d(x)
        assert xcl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
        got = model.to(memory_format=torch.channels_last)(xcl, level)["logits"]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_param_groups_cover_every_parameter_once():
    model = create_model(small_cfg(aux_heads=True), two_sided=True)
    tcfg = TrainConfig(lr=3e-4, backbone_lr=2e-5, weight_decay=0.05, head_weight_decay=0.02)
    groups = param_groups(model, tcfg)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    by_name = {g["name"]: g for g in groups}
    assert {g["lr"] for g in groups if g["name"].startswith("backbone")} == {2e-5}
    assert {g["lr"] for g in groups if not g["name"].startswith("backbone")} == {3e-4}
    assert by_name["backbone"]["weight_decay"] == 0.05
    assert by_name["middle"]["weight_decay"] == 0.05
    assert by_name["head"]["weight_decay"] == 0.02
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("_no_decay"))
    assert all(p.ndim <= 1 for g in groups if g["name"].endswith("_no_decay") for p in g["params"])
    head_ids = {id(p) for g in groups if g["name"].startswith("head") for p in g["params"]}
    for m in (model.head, model.aux_abnormal, model.aux_severe):
        assert {id(p) for p in m.parameters()} <= head_ids
    middle_ids = {id(p) for g in groups if g["name"].startswith("middle") for p in g["params"]}
    for m in (model.proj, model.gru, model.attn, model.level_emb, model.side_emb):
        assert {id(p) for p in m.parameters()} <= middle_ids
    torch.optim.AdamW(groups)  # accepted as is


def test_default_model_matches_the_seed_size():
    model = create_model(ModelConfig())
    n = count_parameters(model)
    print(f"default model (tf_efficientnetv2_s, 3 channels, one-sided): {n:,} parameters")
    assert abs(n - 29.6e6) / 29.6e6 < 0.03


def test_backbone_checkpoint_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    src = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    sd = src.state_dict()
    for i, wrap in enumerate([lambda d: d, lambda d: {"state_dict": d}, lambda d: {"model": d},
                              lambda d: {f"module.backbone.{k}": v for k, v in d.items()}]):
        path = tmp_path / f"bb{i}.pt"
        torch.save(wrap(sd), path)
        torch.manual_seed(2)
        model = create_model(small_cfg(checkpoint_path=str(path)))
        for k, v in model.backbone.state_dict().items():
            torch.testing.assert_close(v, sd[k], msg=k)
    # a 3-channel checkpoint adapts to a 1-channel stem
    one = create_model(small_cfg(checkpoint_path=str(tmp_path / "bb0.pt")), in_chans=1)
    torch.testing.assert_close(one.backbone.conv_stem.weight, sd["conv_stem.weight"].sum(1, keepdim=True))
    bad = tmp_path / "bad.pt"
    torch.save({"nothing.here": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="no tensor matches"):
        create_model(small_cfg(checkpoint_path=str(bad)))
    with pytest.raises(InputError, match="not found"):
        create_model(small_cfg(checkpoint_path=str(tmp_path / "missing.pt")))

"""Losses against hand computations: ignored blanks, weighted CE, any-severe, auxiliary heads."""
import math

import pytest
import torch
import torch.nn.functional as F

from lsdc.core.config import TrainConfig
from lsdc.model import any_severe_loss, aux_losses, class_weighted_ce, total_loss

W = (1.0, 4.0, 6.0)


def logits_and_target():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, -1, 2, 0])
    return logits, target


def test_weighted_ce_by_hand_and_ignores_blanks():
    logits, target = logits_and_target()
    got = class_weighted_ce(logits, target, W)
    lp = torch.log_softmax(logits.detach(), 1)
    rows = [i for i in range(6) if target[i] >= 0]
    num = sum(-W[target[i]] * lp[i, target[i]] for i in rows)
    den = sum(W[target[i]] for i in rows)
    torch.testing.assert_close(got.detach(), num / den)
    torch.testing.assert_close(got, F.cross_entropy(logits, target, weight=torch.tensor(W), ignore_index=-1))
    # the blank row's logits do not matter and get no gradient
    got.backward()
    assert torch.count_nonzero(logits.grad[3]) == 0 and logits.grad[[0, 1, 2, 4, 5]].abs().sum() > 0


def test_all_blank_batch_is_zero_not_nan():
    logits = torch.randn(3, 3, requires_grad=True)
    target = torch.full((3,), -1)
    out = {"logits": logits, "aux_abnormal": torch.randn(3, requires_grad=True),
           "aux_severe": torch.randn(3, requires_grad=True)}
    loss, parts = total_loss(out, target, TrainConfig(any_severe_weight=1.0), study_ids=[1, 2, 3])
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_any_severe_by_hand():
    logits, target = logits_and_target()
    # study 10: rows 0, 1 (Normal, Moderate) -> negative, weight 2
    # study 20: rows 2, 3 (Severe, blank)    -> positive, weight 4 (blank row 3 not used)
    # study 30: rows 4, 5 (Severe, Normal)   -> positive, weight 4
    study = torch.tensor([10, 10, 20, 20, 30, 30])
    got = any_severe_loss(logits, target, study)
    p = torch.softmax(logits.detach(), 1)[:, 2]
    terms = [(2.0, 0, max(p[0], p[1])), (4.0, 1, p[2]), (4.0, 1, max(p[4], p[5]))]
    num = sum(w * -(y * math.log(q) + (1 - y) * math.log(1 - q)) for w, y, q in terms)
    den = sum(w for w, _, _ in terms)
    torch.testing.assert_close(got.detach(), torch.tensor(num / den))
    got.backward()
    assert torch.count_nonzero(logits.grad[3]) == 0  # blank row ignored
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # a list of ids works too, and a lone Normal study weighs 1
    one = any_severe_loss(logits[:1], target[:1], [5])
    torch.testing.assert_close(one.detach(), -torch.log1p(-p[0]))


def test_aux_losses_use_the_right_rows():
    target = torch.tensor([0, 1, 2, -1, 2])
    z_ab = torch.randn(5, requires_grad=True)
    z_sev = torch.randn(5, requires_grad=True)
    got = aux_losses({"aux_abnormal": z_ab, "aux_severe": z_sev}, target)
    ab_rows, sev_rows = [0, 1, 2, 4], [1, 2, 4]
    torch.testing.assert_close(got["aux_abnormal"], F.binary_cross_entropy_with_logits(
        z_ab[ab_rows], torch.tensor([0.0, 1.0, 1.0, 1.0])))
    torch.testing.assert_close(got["aux_severe"], F.binary_cross_entropy_with_logits(
        z_sev[sev_rows], torch.tensor([0.0, 1.0, 1.0])))
    (got["aux_abnormal"] + got["aux_severe"]).backward()
    assert z_ab.grad[3] == 0 and (z_ab.grad[ab_rows] != 0).all()
    assert z_sev.grad[[0, 3]].abs().sum() == 0 and (z_sev.grad[sev_rows] != 0).all()


@pytest.mark.parametrize("with_aux", [False, True])
def test_total_loss_combines_the_parts(with_aux):
    logits, target = logits_and_target()
    out = {"logits": logits}
    if with_aux:
        out["aux_abnormal"] = torch.randn(6, requires_grad=True)
        out["aux_severe"] = torch.randn(6, requires_grad=True)
    study = [1, 1, 2, 2, 3, 3]
    tcfg = TrainConfig(any_severe_weight=0.7, aux_weight=0.1)
    loss, parts = total_loss(out, target, tcfg, study_ids=study)
    expect = (class_weighted_ce(logits, target, tcfg.class_weights)
              + 0.7 * any_severe_loss(logits, target, study))
    if with_aux:
        aux = aux_losses(out, target)
        expect = expect + 0.1 * (aux["aux_abnormal"] + aux["aux_severe"])
    torch.testing.assert_close(loss, expect)
    torch.testing.assert_close(parts["loss"], loss.detach())
    assert ("aux_abnormal" in parts) == with_aux
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # no study ids, or weight 0: no any-severe term
    loss2, parts2 = total_loss(out, target, TrainConfig(any_severe_weight=0.0), study_ids=study)
    assert "any_severe" not in parts2
    _, parts3 = total_loss(out, target, tcfg)
    assert "any_severe" not in parts3


def test_losses_accept_bf16_logits():
    logits, target = logits_and_target()
    half = logits.detach().bfloat16().requires_grad_()
    tcfg = TrainConfig(any_severe_weight=1.0)
    loss, _ = total_loss({"logits": half}, target, tcfg, study_ids=[1, 1, 2, 2, 3, 3])
    assert loss.dtype == torch.float32
    loss.backward()
    assert half.grad.dtype == torch.bfloat16 and torch.isfinite(half.grad.float()).all()


def test_no_loss_reads_a_value_back_to_the_host(monkeypatch):
    """Every term (CE, any-severe, both aux heads) is computed without a host read of a device value,
    so a training step never waits for the GPU: any Tensor -> Python conversion here raises."""
    def forbidden(*_, **__):
        raise AssertionError("a loss read a tensor value back to the host (a device sync on GPU)")

    logits, target = logits_and_target()
    out = {"logits": logits, "aux_abnormal": torch.randn(6, requires_grad=True),
           "aux_severe": torch.randn(6, requires_grad=True)}
    study_ids = torch.tensor([1, 1, 2, 2, 3, 3])
    expected = total_loss(out, target, TrainConfig(any_severe_weight=1.0), study_ids=study_ids)[0].detach()
    for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    loss, _ = total_loss(out, target, TrainConfig(any_severe_weight=1.0), study_ids=study_ids)
    monkeypatch.undo()
    torch.testing.assert_close(loss.detach(), expected)
    with pytest.raises(AssertionError, match="host"):  # the guard itself works
        monkeypatch.setattr(torch.Tensor, "__bool__", forbidden)
        bool(torch.tensor(True))

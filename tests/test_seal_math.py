"""Exact tests of SEAL's maths: selector gradients, weights, model objective, costs, gamma schedules, lambda."""

from __future__ import annotations

import math

import pytest
import torch

from safeselect.config.schema import GammaConfig
from safeselect.errors import UserError
from safeselect.selection import seal
from safeselect.selection.schedules import gamma_at, gamma_curve, mixing_weight, schedule_table

LOGITS = [0.3, -1.2, 0.7, 0.0, 2.1]
COSTS = [2.0, 0.5, 3.5, 1.0, 4.0]


def _grad(activation: str, idx: list[int], costs: list[float]) -> torch.Tensor:
    w = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    obj = seal.selector_objective(w, torch.tensor(idx), torch.tensor(costs), activation)
    obj.backward()
    return w.grad


def test_softmax_gradient_full_batch_is_sigma_times_centred_cost():
    # f = mean_i N sigma_i c_i = sum_i sigma_i c_i  =>  df/dw_j = sigma_j (c_j - sum_i sigma_i c_i): constant 1.
    g = _grad("softmax", [0, 1, 2, 3, 4], COSTS)
    e = [math.exp(x) for x in LOGITS]
    sig = [x / sum(e) for x in e]
    mean = sum(s * c for s, c in zip(sig, COSTS, strict=True))
    expected = [s * (c - mean) for s, c in zip(sig, COSTS, strict=True)]
    assert g.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert float(g.sum()) == pytest.approx(0.0, abs=1e-6)  # softmax gradients sum to zero


def test_softmax_gradient_mini_batch_constant_is_n_over_b():
    # B = {1, 3}: df/dw_j = (N/|B|) sigma_j (c_j [j in B] - sum_{i in B} sigma_i c_i); rows outside B move too.
    idx = [1, 3]
    costs = [COSTS[i] for i in idx]
    g = _grad("softmax", idx, costs)
    e = [math.exp(x) for x in LOGITS]
    sig = [x / sum(e) for x in e]
    s_b = sum(sig[i] * COSTS[i] for i in idx)
    n, b = len(LOGITS), len(idx)
    expected = [(n / b) * sig[j] * ((COSTS[j] if j in idx else 0.0) - s_b) for j in range(n)]
    assert g.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_other_activations_gradients_touch_only_batch_rows():
    idx = [0, 2, 4]
    costs = [COSTS[i] for i in idx]
    b = len(idx)
    sg = [1 / (1 + math.exp(-x)) for x in LOGITS]
    cases = {
        "sigmoid": [2 * s * (1 - s) for s in sg],
        "tanh": [1 - math.tanh(x) ** 2 for x in LOGITS],
        "relu": [1.0 if x > 0 else 0.0 for x in LOGITS],
    }
    for act, deriv in cases.items():
        g = _grad(act, idx, costs)
        expected = [deriv[j] * COSTS[j] / b if j in idx else 0.0 for j in range(len(LOGITS))]
        assert g.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7), act


def test_sharded_objectives_sum_to_the_batch_objective():
    # Two processes each take half a batch and divide by the whole |B|: their gradients sum to the batch's.
    idx, costs = [0, 1, 3, 4], torch.tensor([COSTS[i] for i in [0, 1, 3, 4]])
    full = _grad("softmax", idx, costs.tolist())
    parts = torch.zeros(len(LOGITS))
    for share in ([0, 2], [1, 3]):
        w = torch.tensor(LOGITS, requires_grad=True)
        seal.selector_objective(w, torch.tensor([idx[k] for k in share]), costs[share], "softmax",
                                batch_size=len(idx)).backward()
        parts += w.grad
    assert parts.tolist() == pytest.approx(full.tolist(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("act", seal.ACTIVATIONS)
def test_weights_start_at_one(act):
    w = seal.selector_weights(seal.initial_logits(7, act), act)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([1.0] * 7)


def test_weight_values():
    x = torch.tensor([0.5, -0.5])
    assert seal.selector_weights(x, "sigmoid").tolist() == pytest.approx([2 / (1 + math.exp(-0.5)),
                                                                          2 / (1 + math.exp(0.5))])
    assert seal.selector_weights(x, "tanh").tolist() == pytest.approx([1 + math.tanh(0.5), 1 - math.tanh(0.5)])
    assert seal.selector_weights(x, "relu").tolist() == pytest.approx([0.5, 0.0])
    sm = seal.selector_weights(x, "softmax")
    assert float(sm.sum()) == pytest.approx(2.0)
    assert float(sm[0] / sm[1]) == pytest.approx(math.exp(1.0))
    with pytest.raises(UserError, match="did you mean 'softmax'"):
        seal.selector_weights(x, "softmx")


def test_model_objective_mixes_safe_and_weighted_task_losses():
    safe = torch.tensor([1.0, 3.0])
    task = torch.tensor([2.0, 4.0, 6.0], requires_grad=True)
    w = torch.tensor([0.5, 1.0, 1.5], requires_grad=True)
    lam = mixing_weight(0.25)  # 0.8
    obj = seal.model_objective(safe, task, w, lam)
    assert float(obj.detach()) == pytest.approx(0.8 * 2.0 + 0.2 * (1.0 + 4.0 + 9.0) / 3)
    obj.backward()
    assert w.grad is None  # weights are detached in the model step
    assert task.grad.tolist() == pytest.approx([0.2 * 0.5 / 3, 0.2 * 1.0 / 3, 0.2 * 1.5 / 3])


def test_costs_algorithm_2_and_1():
    lt = torch.tensor([2.0, 1.5, 0.25], requires_grad=True)
    lh = torch.tensor([1.0, 1.5, 0.75], requires_grad=True)
    assert seal.selector_costs(lt).tolist() == [2.0, 1.5, 0.25]
    c = seal.selector_costs(lt, lh)
    assert c.tolist() == [1.0, 0.0, -0.5]
    assert not c.requires_grad


def test_lambda_mapping():
    assert mixing_weight(0.0) == 1.0
    assert mixing_weight(1.0) == 0.5
    assert mixing_weight(3.0) == 0.25
    # The official Llama-3 run: gamma 0, 0.03, 0.06 -> lambda 1.00, 0.97, 0.94 (to two places).
    assert [round(mixing_weight(g), 2) for g in (0.0, 0.03, 0.06)] == [1.0, 0.97, 0.94]
    with pytest.raises(UserError):
        mixing_weight(-0.1)


def test_schedules_per_epoch():
    lin = GammaConfig()  # linear, init 0, step 0.03
    assert [gamma_at(lin, e) for e in range(4)] == pytest.approx([0.0, 0.03, 0.06, 0.09])
    # per epoch: the step inside the epoch does not matter
    assert gamma_at(lin, 2, step_in_epoch=7, steps_per_epoch=10) == pytest.approx(0.06)
    const = GammaConfig(schedule="constant", value=0.1)
    assert [gamma_at(const, e) for e in range(3)] == [0.1, 0.1, 0.1]
    exp = GammaConfig(schedule="exponential", init=0.01, rate=3.0)
    assert [gamma_at(exp, e) for e in range(4)] == pytest.approx([0.01, 0.03, 0.09, 0.27])


def test_schedules_per_step_spread_the_same_curve():
    lin = GammaConfig(every="step", init=0.1, step=0.4)
    # 4 steps per epoch: t = epoch + step / 4
    assert sum(schedule_table(lin, 2, 4), []) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    exp = GammaConfig(schedule="exponential", every="step", init=0.5, rate=4.0)
    assert schedule_table(exp, 1, 2)[0] == pytest.approx([0.5, 1.0])  # 0.5 * 4 ** 0.5
    const = GammaConfig(schedule="constant", value=0.2, every="step")
    assert schedule_table(const, 2, 3) == [[0.2] * 3, [0.2] * 3]
    # at whole epochs the per-step curve meets the per-epoch one
    per_epoch = GammaConfig(schedule="exponential", init=0.5, rate=4.0)
    assert gamma_at(exp, 2, 0, 5) == pytest.approx(gamma_at(per_epoch, 2))


def test_exponential_needs_positive_init():
    with pytest.raises(UserError, match="init"):
        gamma_curve(GammaConfig(schedule="exponential", init=0.0), 1.0)


def test_plain_number_means_constant_schedule():
    from safeselect.config import loading

    cfg = loading.load(None, ["selection.seal.gamma=0.1"])
    g = cfg.selection.seal.gamma
    assert (g.schedule, g.value) == ("constant", 0.1)
    assert [gamma_at(g, e) for e in range(3)] == [0.1, 0.1, 0.1]


def test_seal_preset_validates_and_is_registered():
    from safeselect.cli.main import main
    from safeselect.registry import registry

    assert main(["validate", "seal"]) == 0
    assert main(["validate", "seal", "selection.seal.algorithm=auxiliary", "selection.seal.gamma=0.1"]) == 0
    assert main(["validate", "seal", "selection.seal.activation=softmx"]) == 2
    entry = registry("selectors").entry("seal")
    assert entry.paper == "Shen et al., ICLR 2025"
    assert entry.load() is seal.select

"""ops/triton_el.py: how many times a forward + backward reads and writes the
logits, counted from the code path (the kernels' loops over a row, and the
launches one call makes)."""
import ast
import inspect

import pytest
import torch

from tests.helpers import impls
from tests.helpers.data import confident_rows
from wce_fairseq.functional import encouraging_loss_parts
from wce_fairseq.ops.bonus import BonusSpec

pytestmark = pytest.mark.skipif(impls.triton_unavailable() is not None, reason=f"impl=triton: {impls.triton_unavailable()}")


def _row_passes(kernel_name):
    """(reads, writes) of the logits row per loop over the vocabulary, and
    whether the loop runs only with bonus smoothing (under ``if LAM_POS``)."""
    from wce_fairseq.ops import triton_el

    tree = ast.parse(inspect.getsource(triton_el))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == kernel_name)
    out = []

    def visit(node, under_lam_pos):
        for child in ast.iter_child_nodes(node):
            lam = under_lam_pos or (isinstance(child, ast.If) and getattr(child.test, "id", None) == "LAM_POS")
            if isinstance(child, ast.For):
                calls = [c for c in ast.walk(child) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)]
                reads = sum(c.func.attr == "load" and "z_row" in ast.unparse(c.args[0]) for c in calls)
                writes = sum(c.func.attr == "store" and "g_row" in ast.unparse(c.args[0]) for c in calls)
                out.append((reads, writes, lam))
            else:
                visit(child, lam)

    visit(fn, False)
    return out


def test_each_loop_over_a_row_reads_it_once():
    assert _row_passes("el_forward_kernel") == [(1, 0, False), (1, 0, True)]  # normaliser; bonus sums (λ > 0)
    assert _row_passes("el_backward_kernel") == [(1, 1, False)]  # one read, one write


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lam, passes", [(0.1, 4), (0.0, 3)])
def test_forward_and_backward_make_four_passes(monkeypatch, dtype, lam, passes):
    """One forward and one backward launch per call, whatever the dtype: with
    the loops above, 4 passes over the logits with λ > 0 and 3 with λ = 0."""
    from wce_fairseq.ops import triton_el

    launched = []
    real = triton_el._launch
    monkeypatch.setattr(triton_el, "_launch", lambda kind, z, args: (launched.append((kind, args["LAM_POS"])),
                                                                     real(kind, z, args)))
    z, t = confident_rows(N=12, V=300)
    x = z.to(dtype).requires_grad_(True)
    spec = BonusSpec(label_smoothing=0.1, bonus_smoothing=lam)
    encouraging_loss_parts(x, t, spec, impl="triton").loss.backward()
    assert launched == [("forward", lam > 0), ("backward", lam > 0)]
    loops = {k: _row_passes(f"el_{k}_kernel") for k in ("forward", "backward")}
    count = sum(r + w for kind, lam_pos in launched for r, w, only_lam in loops[kind] if lam_pos or not only_lam)
    assert count == passes

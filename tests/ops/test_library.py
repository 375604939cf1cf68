"""ops/library.py: the loss as torch.library operators, and the loss inside
torch.compile graphs.

* ``torch.library.opcheck`` on every operator (schema, fake tensors, the
  autograd registration, AOT dispatch with dynamic shapes) over dtypes,
  reductions and ignored tokens;
* ``torch.compile(..., fullgraph=True)`` of the functional API, the module and
  the fairseq criterion's call with diagnostics: no graph break, equal to eager
  (loss and gradient), symbolic sizes compiled once, no host read, the bad-id
  error kept;
* the Triton operators decompose into their two kernels in a graph traced for
  a GPU (fake CUDA tensors: the check needs no GPU).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from wce_fairseq.ops.compat import HAS_LOSS_OPERATORS

if not HAS_LOSS_OPERATORS:  # the compatibility columns' older torch; the pinned one has them
    pytest.skip(f"torch {torch.__version__} has no torch.library custom_op/triton_op (2.6+)", allow_module_level=True)

import torch._dynamo.testing  # noqa: E402

from tests.helpers import impls  # noqa: E402
from tests.helpers.data import SPEC_IDS, SPECS, confident_rows
from tests.helpers.sync_counter import SyncCounter
from wce_fairseq.functional import encouraging_loss, encouraging_loss_parts
from wce_fairseq.modules import EncouragingLoss
from wce_fairseq.ops import library
from wce_fairseq.ops.targets import raise_target_errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _forward_op(impl):
    return library.forward_op(impl)


def _op_inputs(dtype, pad_every=4, N=12, V=97):
    z, t = confident_rows(N=N, V=V, pad_every=pad_every)
    safe, valid = library.targets_op(t, V, -100, False)
    return z.to(dtype), safe, valid


@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("spec", SPECS[:3], ids=SPEC_IDS[:3])
def test_forward_operator_passes_opcheck(impl, dtype, reduction, spec):
    z, safe, valid = _op_inputs(dtype)
    for need_grad in (True, False):
        args = (z.clone().requires_grad_(need_grad), safe, valid, *library.spec_args(spec), reduction, True,
                need_grad, False, 5)
        torch.library.opcheck(_forward_op(impl), args)


@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_and_targets_operators_pass_opcheck(impl, dtype):
    z, safe, valid = _op_inputs(dtype)
    out = _forward_op(impl)(z, safe, valid, *library.spec_args(SPECS[0]), "mean", True, True, False, 5)
    rows = out[5:]
    if not rows[0].numel():  # the gradient was formed at once: make the row state as the Triton path would
        out = library.forward_body(__import__("wce_fairseq.ops.triton_el", fromlist=["TritonKernel"]).TritonKernel
                                   if impl == "triton" else _kernel(impl), z, safe, valid,
                                   library.spec_args(SPECS[0]), "mean", True, True, True, 5)
        rows = out[5:]
    backward = library.chunked_backward if impl == "chunked" else _triton_ops().triton_backward
    scale = torch.rand(z.shape[0]) * valid
    torch.library.opcheck(backward, (z, safe, valid, *rows, scale, *library.spec_args(SPECS[0]), True, 5))
    t = confident_rows(N=12, V=97, pad_every=4)[1]
    torch.library.opcheck(library.targets_op, (t, 97, -100, False))


@pytest.mark.parametrize("impl", impls.FUSED)
def test_operator_under_create_graph_gives_the_gradient_then_refuses_a_second(impl):
    """Called as an operator with create_graph=True: the first derivative is
    the eager function's; a backward through it raises the clear error."""
    z, safe, valid = _op_inputs(torch.float32)
    t = torch.where(valid, safe, -100)
    x = z.clone().requires_grad_(True)
    loss = _forward_op(impl)(x, safe, valid, *library.spec_args(SPECS[0]), "mean", False, True, False, 5)[0]
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    eager = z.clone().requires_grad_(True)
    encouraging_loss_parts(eager, t, SPECS[0], impl=impl).loss.backward()
    torch.testing.assert_close(g.detach(), eager.grad)
    with pytest.raises(RuntimeError, match="encouraging loss has an analytic first derivative only"):
        g.sum().backward()


def _kernel(impl):
    from wce_fairseq.ops.dispatch import kernel

    return kernel(impl)


def _triton_ops():
    from wce_fairseq.ops import triton_el

    return triton_el


def _backend(impl):
    # inductor compiles the chunked and reference graphs for real; the Triton
    # path (kernels run by the CPU interpreter here) is captured and run by AOTAutograd
    return "aot_eager" if impl == "triton" else "inductor"


def _loss_and_grad(fn, z, t):
    x = z.clone().requires_grad_(True)
    out = fn(x, t)
    out.sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("impl", impls.ALL)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_compiled_equals_eager_without_graph_breaks(impl, reduction):
    torch._dynamo.reset()
    z, t = confident_rows(N=20, V=301, pad_every=6)
    opts = dict(label_smoothing=0.1, log_end=0.75, reduction=reduction, impl=impl)

    def f(x, y):
        return encouraging_loss(x, y, **opts)

    compiled = torch.compile(f, fullgraph=True, backend=_backend(impl))  # fullgraph: any break raises
    got, g_got = _loss_and_grad(compiled, z, t)
    want, g_want = _loss_and_grad(f, z, t)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", impls.ALL)
def test_symbolic_sizes_compile_once(impl):
    """N and V change from call to call: one graph over symbolic sizes
    (``dynamic=True``), not one per shape, and every call equals eager."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend(_backend(impl))

    def f(x, y):
        return encouraging_loss(x, y, label_smoothing=0.1, impl=impl)

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend=counter)
    graphs = []
    for N, V in ((9, 50), (17, 301), (4, 1000), (33, 77)):
        z, t = confident_rows(N=N, V=V, pad_every=4)
        got, g_got = _loss_and_grad(compiled, z, t)
        graphs.append(counter.frame_count)
        want, g_want = _loss_and_grad(f, z, t)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)
    # the first call makes the graph (Dynamo may trace twice for it, as it turns Python floats into
    # constants); no later size makes another
    assert graphs[0] >= 1 and graphs == graphs[:1] * 4


def test_module_compiles_without_graph_breaks():
    torch._dynamo.reset()
    crit = EncouragingLoss(label_smoothing=0.1, log_end=0.5)
    z, t = confident_rows(N=16, V=200, pad_every=5)
    compiled = torch.compile(crit, fullgraph=True)
    got, g_got = _loss_and_grad(compiled, z, t)
    want, g_want = _loss_and_grad(crit, z, t)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)


def test_criterion_call_with_diagnostics_compiles_without_graph_breaks():
    """The fairseq criterion's loss from a model's output, diagnostics on, as
    one graph: equal to its eager call, statistics included."""
    pytest.importorskip("fairseq")
    from tests.helpers.fairseq_objects import make_criterion, make_model, make_sample, make_task

    torch._dynamo.reset()
    task = make_task()
    model = make_model(task, seed=0)
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75)
    sample = make_sample(task, (5, 3, 7, 4), seed=2)
    logits = model(**sample["net_input"])[0].detach()

    def f(x):
        res = crit.compute_el(model, (x, None), sample)
        return res.loss, res.nll_loss, res.bonus_loss, res.stats.vector()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    outs = []
    for fn in (compiled, f):
        x = logits.clone().requires_grad_(True)
        res = fn(x)
        res[0].backward()
        outs.append((res, x.grad))
    for a, b in zip(outs[0][0], outs[1][0]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", impls.FUSED)
def test_no_host_read_inside_a_compiled_graph(monkeypatch, impl):
    """The device code path (forced on CPU tensors): the compiled forward +
    backward makes no synchronising call from the package's code."""
    torch._dynamo.reset()
    z, t = confident_rows(N=24, pad_every=5)

    def f(x, y):
        return encouraging_loss_parts(x, y, SPECS[0], impl=impl, want_stats=True, sync_free=True).loss

    compiled = torch.compile(f, fullgraph=True, backend=_backend(impl))
    _loss_and_grad(compiled, z, t)  # compiles
    raise_target_errors(wait=True)
    counter = SyncCounter(monkeypatch)
    got, g_got = _loss_and_grad(compiled, z, t)
    monkeypatch.undo()
    assert counter.calls == []
    want, g_want = _loss_and_grad(f, z, t)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", impls.ALL)
def test_bad_target_is_refused_inside_a_compiled_graph(impl):
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, y: encouraging_loss(x, y, impl=impl), fullgraph=True, backend=_backend(impl))
    z, t = confident_rows(N=8, V=50)
    compiled(z, t)
    t[3] = 50
    with pytest.raises(IndexError, match=r"class id 50, outside \[0, 50\)"):
        compiled(z, t)


def test_triton_operators_decompose_into_their_kernels_in_a_gpu_graph():
    """Traced by AOTAutograd for CUDA tensors (fake ones: no GPU is needed),
    the Triton forward and backward operators leave their kernel launches in
    the graph, where Inductor schedules them; without a GPU nothing runs."""
    pytest.importorskip("triton")
    code = r"""
import json, torch
from torch._subclasses.fake_tensor import FakeTensorMode
from functorch.compile import aot_function, make_boxed_func
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from wce_fairseq.ops import triton_el
from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.function import ImplOptions
from wce_fairseq.ops.library import graph_forward, spec_args

spec = BonusSpec(label_smoothing=0.1)
graphs = []

def capture(gm, example_inputs):
    graphs.append(gm)
    return make_boxed_func(gm.forward)

def forward(z, t, valid, *rows):
    return graph_forward("triton", z, t, spec, -100, "sum", True, ImplOptions()).loss

def backward(z, t, valid, *rows):
    return triton_el.triton_backward(z, t, valid, *rows, rows[0], *spec_args(spec), True, None)

mode = FakeTensorMode()
with mode:
    z = torch.empty(64, 32000, device="cuda", dtype=torch.bfloat16)
    t = torch.zeros(64, dtype=torch.long, device="cuda")
    valid = torch.ones(64, dtype=torch.bool, device="cuda")
    rows = [torch.empty(64, device="cuda") for _ in range(5)] + [torch.zeros(64, dtype=torch.long, device="cuda")]
for fn in (forward, backward):
    try:
        with mode:
            aot_function(fn, fw_compiler=capture)(z, t, valid, *rows)
    except RuntimeError:  # running the graph needs a GPU; tracing it did not
        pass
kernels = []
for gm in graphs:
    for node in gm.graph.nodes:
        if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
            k = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
            kernels.append(getattr(k, "fn", k).__name__)
print(json.dumps(kernels))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == ["el_forward_kernel", "el_backward_kernel"]

"""The loss eager and under ``torch.compile``, side by side in one run:
forward + backward from logits as the criterion calls it (``reduction="sum"``,
diagnostics on and read back, padding ignored), and one training step of a
tiny Transformer language model whose forward and loss are compiled as one
function, with the encouraging loss and, for comparison, ``F.cross_entropy``.
Times are medians after the first call; the first compiled call's time
(Dynamo, AOTAutograd and Inductor) is reported on its own.

    python benchmarks/bench_compile.py                          # the README's sizes, realistic logits
    python benchmarks/bench_compile.py --sizes 4096x16000 --repeats 9 --backend inductor
"""
import argparse
import os
import statistics
import sys
import time

from common import EPS, LE, PAD, make_logits, write_csv

import torch  # noqa: E402  (common puts the checkout on the path first)


def loss_fn(impl):
    from wce_fairseq.functional import encouraging_loss_parts
    from wce_fairseq.ops.bonus import BonusSpec

    spec = BonusSpec(label_smoothing=EPS, log_end=LE)

    def f(logits, target):
        res = encouraging_loss_parts(logits, target, spec, ignore_index=PAD, reduction="sum", impl=impl,
                                     want_stats=True)
        return res.loss, res.stats.vector()

    return f


def timed(fn, make_args, repeats):
    """(first call's seconds, median seconds of the next ``repeats``)."""
    times = []
    for _ in range(repeats + 1):
        args = make_args()
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1:])


def loss_rows(sizes, impl, backend, repeats):
    rows = []
    for N, V in sizes:
        logits, target = make_logits("realistic", N, V, "cpu", torch.float32)

        def make_args():
            return logits.clone().requires_grad_(True), target

        def step(fn):
            def run(x, t):
                loss, stats = fn(x, t)
                loss.backward()
                stats.tolist()  # the criterion's logs read the diagnostics back
            return run

        f = loss_fn(impl)
        torch._dynamo.reset()
        first, compiled = timed(step(torch.compile(f, backend=backend, fullgraph=True)), make_args, repeats)
        _, eager = timed(step(f), make_args, repeats)
        rows.append({"what": f"loss {N} x {V}", "eager_ms": 1000 * eager, "compiled_ms": 1000 * compiled,
                     "ratio": compiled / eager, "first_call_s": first})
        print(f"[bench_compile] loss {N} x {V}: eager {1000 * eager:.0f} ms, compiled {1000 * compiled:.0f} ms, "
              f"first compiled call {first:.1f} s", flush=True)
    return rows


def model_rows(impl, backend, repeats, batch=8, length=128, vocab=8000, dim=256):
    """One training step (forward, loss, backward, SGD) of a 2-layer
    Transformer language model, the model and the loss compiled as one
    function or not, with the encouraging loss and with ``F.cross_entropy``."""
    torch.manual_seed(0)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, dim)
            layer = torch.nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True)
            self.body = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.out = torch.nn.Linear(dim, vocab)

        def forward(self, x):
            mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            return self.out(self.body(self.emb(x), mask=mask, is_causal=True))

    el = loss_fn(impl)

    def ce(logits, target):
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=PAD, reduction="sum"), logits[:0, 0]

    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(2, vocab, (batch, length + 1), generator=g)
    rows = []
    for loss_name, f in (("encouraging loss", el), ("F.cross_entropy", ce)):
        results = {}
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            model = LM()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)

            def forward_and_loss(x, y):
                return f(model(x).reshape(-1, vocab), y.reshape(-1))

            run = torch.compile(forward_and_loss, backend=backend) if mode == "compiled" else forward_and_loss

            def train_step(x, y):
                loss, stats = run(x, y)
                loss.backward()
                stats.tolist()
                opt.step()
                opt.zero_grad(set_to_none=True)

            torch._dynamo.reset()
            results[mode] = timed(train_step, lambda: (tokens[:, :-1], tokens[:, 1:]), repeats)
        first, compiled = results["compiled"]
        eager = results["eager"][1]
        what = f"LM step, {loss_name} ({batch} x {length} tokens, V = {vocab})"
        print(f"[bench_compile] {what}: eager {1000 * eager:.0f} ms, compiled {1000 * compiled:.0f} ms, "
              f"first compiled call {first:.1f} s", flush=True)
        rows.append({"what": what, "eager_ms": 1000 * eager, "compiled_ms": 1000 * compiled,
                     "ratio": compiled / eager, "first_call_s": first})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096x16000,2048x32000,1024x128000")
    ap.add_argument("--impl", default="auto")
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "compile_bench.csv"))
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    rows = loss_rows(sizes, a.impl, a.backend, a.repeats)
    if not a.no_model:
        rows += model_rows(a.impl, a.backend, a.repeats)
    print(f"\neager vs torch.compile (backend {a.backend}), forward + backward, fp32 on the CPU "
          f"({os.cpu_count()} cores, {torch.get_num_threads()} threads); torch {torch.__version__}; "
          f"median of {a.repeats} after the first call")
    print("| what | eager ms | compiled ms | compiled / eager | first compiled call s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['eager_ms']:.0f} | {r['compiled_ms']:.0f} | {r['ratio']:.2f} | "
              f"{r['first_call_s']:.1f} |")
    if a.csv:
        write_csv(rows, a.csv)


if __name__ == "__main__":
    sys.exit(main())

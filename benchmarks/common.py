"""What the benchmarks share: the losses they compare, the logits they feed
them, how memory is measured, synthetic data, CSV output."""
import csv
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the package from this checkout, installed or not

import torch  # noqa: E402

PROVIDERS = ["stock_ls_ce", "naive_el", "chunked", "triton"]  # "reference" (float64) on request
EPS, LE = 0.1, 0.5
PAD = 1  # fairseq's padding index: a valid class id that is ignored


def stock_loss(logits, target):
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    lprobs = torch.log_softmax(logits.float(), dim=-1)  # what fairseq's get_normalized_probs does
    loss, _ = label_smoothed_nll_loss(lprobs, target, EPS, ignore_index=PAD, reduce=True)
    return loss


def naive_el(logits, target):
    # The authors' formula as their fork computes it: full-vocabulary
    # probabilities, smoothing over all classes, clamp/where on every entry.
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    V = lprobs.size(-1)
    probs = lprobs.exp()
    one_minus = torch.clamp(1.0 - probs, min=1e-5)
    bonus = torch.where(probs <= LE, torch.log(one_minus),
                        (torch.log(torch.tensor(1.0 - LE)) - (probs - LE) / (1.0 - LE)))
    mask = target.ne(PAD).unsqueeze(-1).float()
    q = torch.full_like(lprobs, EPS / (V - 1)).scatter_(1, target.unsqueeze(-1), 1.0 - EPS)
    return ((-(q * lprobs) + q * bonus) * mask).sum()


STATS = True  # as the criterion runs it; --no-stats measures the bare loss


def our_loss(impl):
    def f(logits, target):
        from wce_fairseq.functional import encouraging_loss_parts
        from wce_fairseq.ops.bonus import BonusSpec

        # as the criterion calls it on raw logits: the gradient goes over them
        extra = {"inplace_backward": True} if impl != "reference" and logits.requires_grad else {}
        res = encouraging_loss_parts(logits, target, BonusSpec(label_smoothing=EPS, log_end=LE), ignore_index=PAD,
                                     reduction="sum", impl=impl, want_stats=STATS, **extra)
        if STATS:
            [float(x) for x in res.stats]  # fairseq reads the criterion's diagnostics back for the log
        return res.loss

    return f


def make_logits(kind, N, V, device, dtype, seed=0):
    """(logits, target) made on ``device``: ``random`` (N(0, 3²), no row
    confident) or ``realistic`` (as a trained MT model: 80 % of rows
    confidently right, +18 on the target over N(0, 2²), 5 % confidently wrong,
    15 % uncertain); every 17th token padding."""
    g = torch.Generator(device=device).manual_seed(seed)
    f32 = dict(generator=g, device=device)
    if kind == "random":
        z = torch.randn(N, V, **f32) * 3
        t = torch.randint(0, V, (N,), **f32)
    elif kind == "realistic":
        z = torch.randn(N, V, **f32) * 2.0
        t = torch.randint(0, V, (N,), **f32)
        r = torch.rand(N, **f32)
        rows = torch.arange(N, device=device)
        bump = torch.where(r < 0.8, t, torch.where(r < 0.85, (t + 1) % V, -1))
        keep = bump >= 0
        z[rows[keep], bump[keep]] += 18.0
    else:
        raise ValueError(kind)
    t[::17] = PAD  # some padding, like a real batch
    return z.to(dtype), t


def fn_for(provider):
    return {"stock_ls_ce": stock_loss, "naive_el": naive_el}.get(provider) or our_loss(provider)


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak():
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(provider, N, V, mode, dtype, device, repeats, threads, logits_kind="random", stats=True):
    """One measurement: (median seconds, extra peak bytes)."""
    global torch, STATS
    import torch

    STATS = stats
    if threads:
        torch.set_num_threads(threads)
    logits, target = make_logits(logits_kind, N, V, device, getattr(torch, dtype))
    fn = fn_for(provider)
    grad = mode == "fwd+bwd"

    # Every call gets its own copy of the logits, made before the clock starts,
    # as training hands the loss freshly computed logits (EL writes its
    # gradient over them, as the criterion does).
    def fresh():
        return logits.clone().requires_grad_(grad)

    def once(x):
        loss = fn(x, target)
        if grad:
            loss.backward()
        return loss

    if device == "cuda":
        x = fresh()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once(x)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
    else:
        import gc

        x = fresh()
        gc.collect()
        ok = reset_peak()
        base = rss_kib("VmRSS")
        once(x)
        extra = (rss_kib("VmHWM") - base) * 1024 if ok else float("nan")
    del x
    times = []
    for _ in range(repeats):
        x = fresh()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        once(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del x
    return statistics.median(times), extra


def write_csv(rows, path):
    if not rows:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nwrote {path}")


def synthetic_data(root, vocab, n_train, length):
    """Random-token parallel text over a fixed dictionary: the loss sees a real
    MT-sized vocabulary without any tokenizer."""
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    with open(os.path.join(root, "dict.txt"), "w") as f:
        for i in range(vocab - 4):
            f.write("w%d %d\n" % (i, vocab - i))
    for split, n in (("train", n_train), ("valid", 64)):
        for lang in ("src", "tgt"):
            ids = torch.randint(0, vocab - 4, (n, length), generator=g).tolist()
            with open(os.path.join(root, "%s.%s" % (split, lang)), "w") as f:
                f.writelines(" ".join("w%d" % i for i in row) + "\n" for row in ids)
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess")
    subprocess.run([tool if os.path.exists(tool) else "fairseq-preprocess", "--source-lang", "src",
                    "--target-lang", "tgt", "--trainpref", os.path.join(root, "train"),
                    "--validpref", os.path.join(root, "valid"), "--destdir", os.path.join(root, "bin"),
                    "--srcdict", os.path.join(root, "dict.txt"), "--joined-dictionary", "--workers", "4"],
                   check=True, capture_output=True)
    return os.path.join(root, "bin")


def toy_data(root, vocab):
    """The quickstart's synthetic corpus, 20k pairs, through SentencePiece and fairseq-preprocess."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_corpus", os.path.join(REPO, "examples", "quickstart",
                                                                             "toy_corpus.py"))
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    raw = os.path.join(root, "raw")
    toy.write_corpus(raw, 20000, 200, 200, seed=1)
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])
    subprocess.run(["bash", os.path.join(REPO, "examples/common/binarize.sh"), "en", "ps", raw, root, str(vocab)],
                   check=True, env=env)
    return os.path.join(root, "bin")

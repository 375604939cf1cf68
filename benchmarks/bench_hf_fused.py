"""Peak memory and time of one Hugging Face training step at LLM vocabulary
sizes, side by side in one run: (a) the model's own loss, (b) the
encouraging loss on the logits (``use_encouraging_loss``), (c) the same with
``fuse_projection=True`` (the N x V logits never whole).

The model is Llama-shaped, built from a config (hidden 1024, 2 layers, 16
heads, an output embedding of its own as in Llama 3 8B, or with ``--tied``
the input embedding's as in Llama 3.2 1B and Gemma), fp32 on the CPU, SGD; a batch of 4 x 512
tokens, the first 64 of each sequence a prompt (labels -100).

Each (variant, V) runs in two processes of its own, one per measurement, each
after one warm-up step. Memory: "extra peak" is the process's peak RSS over
one step minus its RSS before it (so it holds everything a step allocates:
activations, logits, the loss's buffers, the gradients), with glibc's mmap
threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``): freed blocks then go
back to the system at once and RSS follows what the step holds. With glibc's
defaults the threshold rises as blocks are freed, and blocks freed in one
thread's arena stay resident: the same step's peak RSS then varies from run
to run by a tenth of a GiB or more. Time: the median of ``--repeats`` steps,
with the allocator as it comes. The "param grads" column is the floor no loss
can go below: the gradients of all the model's parameters, which exist
together when the optimizer steps (the V x hidden embedding matrices' take
most of it: one when tied, two when not).

    python benchmarks/bench_hf_fused.py                       # V = 128256 and 256000
    python benchmarks/bench_hf_fused.py --vocab 128256 --tied
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import reset_peak, rss_kib, write_csv

VARIANTS = ("own", "logits", "fused")
LABEL = {"own": "(a) model's own loss", "logits": "(b) encouraging loss on the logits",
         "fused": "(c) encouraging loss, fuse_projection=True"}


def child(spec):
    import torch
    import transformers

    from wce_fairseq.integrations.hf import use_encouraging_loss

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=spec["vocab"], hidden_size=spec["hidden"], intermediate_size=4 * spec["hidden"],
                                   num_hidden_layers=spec["layers"], num_attention_heads=16, num_key_value_heads=16,
                                   max_position_embeddings=spec["length"], tie_word_embeddings=spec["tied"])
    model = transformers.LlamaForCausalLM(cfg)
    args = transformers.TrainingArguments(output_dir=spec["out"], report_to=[], use_cpu=True, optim="sgd",
                                          learning_rate=1e-4, per_device_train_batch_size=spec["batch"],
                                          max_grad_norm=0.0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args)
    if spec["variant"] != "own":
        use_encouraging_loss(trainer, label_smoothing=0.1, log_end=0.5, fuse_projection=spec["variant"] == "fused")
    trainer.create_optimizer()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["length"]), generator=g)
    labels = ids.clone()
    labels[:, :64] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    n_items = (labels[:, 1:] != -100).sum()
    model.train()

    def step():
        trainer.training_step(model, dict(batch), n_items)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    if spec["measure"] == "time":
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"time_s": statistics.median(times)}))
        return
    import gc

    gc.collect()
    reset_peak()
    base = rss_kib("VmRSS")
    step()
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"extra_bytes": (rss_kib("VmHWM") - base) * 1024, "grad_bytes": grads}))


# Peak RSS as what a step holds: freed blocks of 64 KiB and more are unmapped
# at once (the threshold fixed, not raised by glibc as blocks are freed).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}


def run_child(spec):
    env = dict(os.environ, **(MEMORY_ENV if spec["measure"] == "memory" else {}))
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default="128256,256000")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--measure", default="memory,time", help="memory, time or both (one process each)")
    ap.add_argument("--tied", action="store_true", help="tie the output embedding to the input one")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "hf_fused_bench.csv"))  # with --tied: hf_fused_bench_tied.csv
    a = ap.parse_args(argv)
    rows = []
    import tempfile

    for vocab in (int(v) for v in a.vocab.split(",")):
        for variant in VARIANTS:
            spec = dict(variant=variant, vocab=vocab, hidden=a.hidden, layers=a.layers, batch=a.batch,
                        length=a.length, repeats=a.repeats, tied=a.tied, out=tempfile.mkdtemp(prefix="bench_hf_fused."))
            print(f"[bench_hf_fused] V = {vocab}: {LABEL[variant]} ...", flush=True)
            r = {"vocab": vocab, "variant": variant}
            for measure in a.measure.split(","):
                r.update(run_child(dict(spec, measure=measure)))
            rows.append(r)
            got = ([f"{r['time_s'] * 1000:.0f} ms"] if "time_s" in r else []) + \
                ([f"extra peak {r['extra_bytes'] / 2**30:.2f} GiB"] if "extra_bytes" in r else [])
            print(f"[bench_hf_fused]   {', '.join(got)}", flush=True)
    import torch

    logits_gib = a.batch * a.length * 4 / 2**30
    tie = "tied" if a.tied else "untied"
    print(f"\none training step, Llama-shaped (hidden {a.hidden}, {a.layers} layers, {tie} embeddings), "
          f"{a.batch} x {a.length} tokens, fp32 on the CPU ({os.cpu_count()} cores), SGD; torch {torch.__version__}; "
          f"time: median of {a.repeats}; memory: one step, mmap threshold 64 KiB")
    print("| V | variant | step s | x (b) | extra peak GiB | x (a) | logits GiB | param grads GiB | x (a) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in sorted({r["vocab"] for r in rows}):
        by = {r["variant"]: r for r in rows if r["vocab"] == vocab}
        for v in VARIANTS:
            r = by[v]
            cells = ["-"] * 6  # what --measure left out
            if "time_s" in r:
                r["time_x_logits"] = r["time_s"] / by["logits"]["time_s"]
                cells[0:2] = f"{r['time_s']:.2f}", f"{r['time_x_logits']:.2f}"
            if "extra_bytes" in r:
                r["mem_x_own"] = r["extra_bytes"] / by["own"]["extra_bytes"]
                cells[2:6] = (f"{r['extra_bytes'] / 2**30:.2f}", f"{r['mem_x_own']:.2f}", f"{r['grad_bytes'] / 2**30:.2f}",
                              f"{r['grad_bytes'] / by['own']['extra_bytes']:.2f}")
            cells.insert(4, f"{logits_gib * vocab:.2f}")
            print(f"| {vocab} | {LABEL[v]} | {' | '.join(cells)} |")
            r["tied"] = a.tied
    if a.csv:
        write_csv(rows, a.csv.replace(".csv", "_tied.csv") if a.tied else a.csv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        main()

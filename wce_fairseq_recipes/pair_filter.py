"""Filter a parallel corpus: drop empty pairs, pairs longer than --max-len
words on either side, and pairs whose length ratio exceeds --ratio.

    python -m wce_fairseq_recipes.pair_filter SRC_IN TGT_IN SRC_OUT TGT_OUT [--max-len 250 --ratio 1.5]
"""
import argparse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src_in")
    ap.add_argument("tgt_in")
    ap.add_argument("src_out")
    ap.add_argument("tgt_out")
    ap.add_argument("--max-len", type=int, default=250)
    ap.add_argument("--ratio", type=float, default=1.5)
    a = ap.parse_args(argv)
    kept = total = 0
    with open(a.src_in, encoding="utf-8") as fs, open(a.tgt_in, encoding="utf-8") as ft, \
            open(a.src_out, "w", encoding="utf-8") as os_, open(a.tgt_out, "w", encoding="utf-8") as ot:
        for s, t in zip(fs, ft):
            total += 1
            s, t = s.strip(), t.strip()
            ls, lt = len(s.split()), len(t.split())
            if not ls or not lt or ls > a.max_len or lt > a.max_len:
                continue
            if max(ls, lt) / min(ls, lt) > a.ratio and max(ls, lt) > 5:
                continue
            os_.write(s + "\n")
            ot.write(t + "\n")
            kept += 1
    print(f"[clean] kept {kept} of {total} pairs")


if __name__ == "__main__":
    main()

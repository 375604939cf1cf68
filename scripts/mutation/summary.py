"""The mutation score of a mutmut run (``mutmut results --all true`` read
from standard input), with the survivors this project has read and found
equivalent (equivalent.txt beside this file: a mutant name, a tab, why no
test can tell it from the code) left out of the score, and the survivors
killed by a test outside mutmut's selection (killed_outside.txt: a mutant
name, a tab, the test) counted as killed.

    .venv/bin/mutmut results --all true | .venv/bin/python scripts/mutation/summary.py

Prints the counts per module and in all, the score, and every survivor that
is neither killed nor listed; exits 1 if any such survivor remains.
"""
import collections
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SETTLED = ("killed", "equivalent", "killed outside")  # the verdicts that leave nothing open


def listed(file_name):
    """{mutant name: the text after the tab} of one of the lists beside this file."""
    listed = {}
    with open(os.path.join(HERE, file_name), encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, _, why = line.rstrip("\n").partition("\t")
                listed[name.strip()] = why.strip()
    return listed


def main():
    status = {}
    for line in sys.stdin:
        name, sep, verdict = line.strip().rpartition(": ")
        if sep and name.startswith("wce_fairseq."):
            status[name] = verdict
    equivalent, outside = listed("equivalent.txt"), listed("killed_outside.txt")
    per_module = collections.defaultdict(collections.Counter)
    open_survivors = []
    for name, verdict in sorted(status.items()):
        module = name.split(".x")[0]
        if verdict != "killed" and name in equivalent:
            verdict = "equivalent"
        elif verdict != "killed" and name in outside:
            verdict = "killed outside"
        per_module[module][verdict] += 1
        if verdict not in SETTLED:
            open_survivors.append(f"{name}: {verdict}")
    total = collections.Counter()
    print("| module | mutants | killed | equivalent | other |")
    print("|---|---:|---:|---:|---:|")
    for module, c in sorted(per_module.items()):
        total.update(c)
        other = sum(v for k, v in c.items() if k not in SETTLED)
        print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['equivalent']} | {other} |")
    other = sum(v for k, v in total.items() if k not in SETTLED)
    print(f"| all | {sum(total.values())} | {total['killed']} | {total['equivalent']} | {other} |")
    scored = sum(total.values()) - total["equivalent"]
    print(f"\nscore: {total['killed']} killed by mutmut of {scored} non-equivalent mutants = "
          f"{100.0 * total['killed'] / max(scored, 1):.2f} %")
    for name in sorted(n for n in outside if status.get(n, "killed") != "killed"):
        print(f"killed outside mutmut's selection: {name} by {outside[name]}")
    stale = sorted((set(equivalent) | set(outside)) - set(status))
    if stale:
        print(f"({len(stale)} listed mutants are not in this run: the code moved; re-read them)")
    for s in open_survivors:
        print("not killed:", s)
    return 1 if open_survivors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the compatibility matrix from the JSON files of scripts/compat/checks.py."""
import json
import sys


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    if not runs:
        print("compat: no environment ran")
        return
    checks = []
    for r in runs:
        for c in r["checks"]:
            if c["check"] not in checks:
                checks.append(c["check"])
    head = ["check"] + [r["name"] for r in runs]
    rows = [["python / torch / fairseq"] + ["%s / %s / %s" % (r["versions"].get("python", "?"),
                                                           r["versions"].get("torch", "?"),
                                                           r["versions"].get("fairseq", "?")) for r in runs]]
    for name in checks:
        row = [name]
        for r in runs:
            c = next((c for c in r["checks"] if c["check"] == name), None)
            row.append("-" if c is None else ("PASS" if c["ok"] else "FAIL") + " (%.0f s)" % c["seconds"])
        rows.append(row)
    width = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, width)) + " |"  # noqa: E731
    print("\n" + line(head))
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print(line(row))
    for r in runs:
        for c in r["checks"]:
            if c["detail"]:
                print("  %s / %s: %s" % (r["name"], c["check"], c["detail"]))


if __name__ == "__main__":
    main(sys.argv[1:])

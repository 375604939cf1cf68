"""Plain text from the IWSLT / WMT release formats.

    python -m wce_fairseq.tools.extract tags FILE > out.txt   # train.tags.*: drop <tag> lines
    python -m wce_fairseq.tools.extract xml FILE [FILE ...] > out.txt  # <seg id=..>text</seg>
    python -m wce_fairseq.tools.extract split IN OUT_TRAIN OUT_VALID --every 23   # hold out every k-th line
"""
import argparse
import html
import re
import sys

SEG = re.compile(r"<seg[^>]*>(.*)</seg>", re.I)


def from_tags(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("<"):
                yield s


def from_xml(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SEG.search(line)
            if m:
                yield html.unescape(m.group(1).strip())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tags")
    t.add_argument("file")
    x = sub.add_parser("xml")
    x.add_argument("files", nargs="+")
    s = sub.add_parser("split")
    s.add_argument("inp")
    s.add_argument("train")
    s.add_argument("valid")
    s.add_argument("--every", type=int, default=23)
    a = ap.parse_args(argv)
    out = sys.stdout
    if a.cmd == "tags":
        out.writelines(line + "\n" for line in from_tags(a.file))
    elif a.cmd == "xml":
        for f in a.files:
            out.writelines(line + "\n" for line in from_xml(f))
    else:
        with open(a.inp, encoding="utf-8") as f, open(a.train, "w", encoding="utf-8") as tr, \
                open(a.valid, "w", encoding="utf-8") as va:
            for i, line in enumerate(f):
                (va if i % a.every == 0 else tr).write(line)


if __name__ == "__main__":
    main()

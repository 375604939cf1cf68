"""Plain text from the IWSLT / WMT release formats.

    python -m wce_fairseq_recipes.extract tags FILE [--style S] > out.txt   # train.tags.*
    python -m wce_fairseq_recipes.extract xml FILE [FILE ...] [--style S] > out.txt  # <seg id=..>text</seg>
    python -m wce_fairseq_recipes.extract split IN OUT_TRAIN OUT_VALID --every 23   # hold out every k-th line

Styles: ``plain`` (drop every line that starts with a tag; unescape XML
entities) and the exact line filters of fairseq's preparation scripts:
``iwslt14`` (examples/translation/prepare-iwslt14.sh) and ``iwslt17``
(prepare-iwslt17-multilingual.sh). Those keep the text of <title> and
<description> lines, leave entities as they are, and (``xml``) turn ’ into '.
"""
import argparse
import html
import re
import sys

SEG = re.compile(r"<seg[^>]*>(.*)</seg>", re.I)

# fairseq's scripts: lines containing any of DROP are removed (grep -v), the
# UNWRAP tags are deleted wherever they occur (sed s/<title>//g ...)
DROP = {
    "iwslt14": ("<url>", "<talkid>", "<keywords>"),
    "iwslt17": ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator", "<doc", "</doc>"),
}
UNWRAP = ("<title>", "</title>", "<description>", "</description>")
# sed 's/<seg id="[0-9]*">\s*//g' | sed 's/\s*<\/seg>\s*//g' on the lines that grep '<seg id' keeps
SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
SEG_CLOSE = re.compile(r"\s*</seg>\s*")


def from_tags(path, style="plain"):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if style == "plain":
                s = line.strip()
                if s and not s.startswith("<"):
                    yield s
                continue
            line = line.rstrip("\n")
            if any(d in line for d in DROP[style]):
                continue
            for tag in UNWRAP:
                line = line.replace(tag, "")
            if style == "iwslt17":  # sed 's/^\s*//g' | sed 's/\s*$//g'
                line = line.strip()
            yield line


def from_xml(path, style="plain"):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if style == "plain":
                m = SEG.search(line)
                if m:
                    yield html.unescape(m.group(1).strip())
                continue
            if "<seg id" not in line:
                continue
            line = SEG_CLOSE.sub("", SEG_OPEN.sub("", line.rstrip("\n")))
            yield line.replace("\u2019", "'")


def split_every(inp, train, valid, every):
    """Lines every, 2*every, ... (1-based, as awk 'NR%k==0') go to ``valid``."""
    n_valid = 0
    with open(inp, encoding="utf-8") as f, open(train, "w", encoding="utf-8") as tr, \
            open(valid, "w", encoding="utf-8") as va:
        for i, line in enumerate(f, start=1):
            if i % every == 0:
                va.write(line)
                n_valid += 1
            else:
                tr.write(line)
    return n_valid


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    styles = ["plain", "iwslt14", "iwslt17"]
    t = sub.add_parser("tags")
    t.add_argument("file")
    t.add_argument("--style", choices=styles, default="plain")
    x = sub.add_parser("xml")
    x.add_argument("files", nargs="+")
    x.add_argument("--style", choices=styles, default="plain")
    s = sub.add_parser("split")
    s.add_argument("inp")
    s.add_argument("train")
    s.add_argument("valid")
    s.add_argument("--every", type=int, default=23)
    a = ap.parse_args(argv)
    out = sys.stdout
    if a.cmd == "tags":
        out.writelines(line + "\n" for line in from_tags(a.file, a.style))
    elif a.cmd == "xml":
        for f in a.files:
            out.writelines(line + "\n" for line in from_xml(f, a.style))
    else:
        if a.every < 2:
            sys.exit(f"extract split: --every must be >= 2, got {a.every}")
        split_every(a.inp, a.train, a.valid, a.every)


if __name__ == "__main__":
    main()

"""List every option of ``--criterion encouraging_ce`` (``fairseq-train --help``
does not show a criterion's options).

    python -m wce_fairseq.tools.options            # plain text
    python -m wce_fairseq.tools.options --markdown # the README table
"""
import argparse
import dataclasses
import enum


def rows():
    import wce_fairseq

    wce_fairseq.register()
    from wce_fairseq.criterions.encouraging_ce import EncouragingCrossEntropyConfig

    out = []
    for f in dataclasses.fields(EncouragingCrossEntropyConfig):
        if f.name in ("sentence_avg", "cpu", "_name"):  # set by fairseq itself
            continue
        default = f.default
        if isinstance(default, enum.Enum):
            default = default.value
        if default is dataclasses.MISSING:
            default = "(required)"
        choices = getattr(f.type, "__members__", None)
        help_ = f.metadata.get("help", "")
        if choices:
            help_ = f"{{{','.join(choices)}}} " + help_
        out.append(("--" + f.name.replace("_", "-"), repr(default) if isinstance(default, str) else str(default), help_))
    return out


def markdown() -> str:
    """The options as the README's table."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    lines += [f"| `{flag}` | `{d}` | {h.replace('|', '/')} |" for flag, d, h in rows()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown())
        return
    r = rows()
    w = max(len(x[0]) for x in r)
    print("encouraging_ce options (fairseq-train --criterion encouraging_ce ...):")
    for flag, d, h in r:
        print(f"  {flag:<{w}}  default {d}\n  {'':<{w}}  {h}")


if __name__ == "__main__":
    main()

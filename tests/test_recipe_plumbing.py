"""The recipes' plumbing, offline: downloads verified on every run, archives
unpacked under the output folder, bin/ kept when preprocessing fails, the EL
default, lowercasing confined to De->En, the WMT world size, seeded
SentencePiece, and checkpoint averaging by updates in fp32."""
import os
import shutil
import subprocess
import tarfile

import pytest
import torch

from cli_helpers import REPO, tool  # noqa: E402


def bash(script, env=None, check=True, cwd=REPO):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PATH"] = os.path.dirname(tool("python")) + os.pathsep + e["PATH"]
    e.update(env or {})
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=e, cwd=cwd, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def test_download_is_verified_on_every_run(tmp_path):
    src = tmp_path / "archive.tgz"
    src.write_bytes(b"pretend archive")
    dest = tmp_path / "dl" / "archive.tgz"
    dest.parent.mkdir()
    sums = tmp_path / "checksums.sha256"
    sums.write_text("# comment line\n")
    fetch = f'source examples/common/lib.sh; CHECKSUMS={sums}; fetch file://{src} {dest}'
    first = bash(fetch)
    assert "WARNING: no published sha256" in first.stderr and dest.exists()
    recorded = (tmp_path / "dl" / "archive.tgz.sha256").read_text().split()[0]
    again = bash(fetch)  # no download: the recorded hash is checked
    assert "matches the hash recorded at its first download" in again.stdout and "WARNING" not in again.stderr
    dest.write_bytes(b"tampered")
    bad = bash(fetch, check=False)
    assert bad.returncode != 0 and "checksum mismatch for archive.tgz" in bad.stderr and recorded in bad.stderr
    # a pinned hash wins over the recorded one, and is enforced
    sums.write_text(f"{recorded}  archive.tgz\n")
    dest.write_bytes(b"pretend archive")
    assert "verified against checksums.sha256" in bash(fetch).stdout
    dest.write_bytes(b"tampered")
    assert bash(fetch, check=False).returncode != 0


def _fake_iwslt14_archive(folder, n=60):
    """de-en.tgz laid out as the IWSLT'14 release (tags training files, xml test sets)."""
    d = folder / "de-en"
    d.mkdir(parents=True)
    for lang in ("de", "en"):
        lines = ["<url>http://x</url>", "<talkid>1</talkid>"] + [f"{lang.upper()} Sentence Number {i} ." for i in range(n)]
        (d / f"train.tags.de-en.{lang}").write_text("\n".join(lines) + "\n")
        for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
            segs = "\n".join(f'<seg id="{i}"> {lang} {name} Test {i} </seg>' for i in range(3))
            (d / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(f"<doc>\n{segs}\n</doc>\n")
    with tarfile.open(folder / "de-en.tgz", "w:gz") as t:
        t.add(d, arcname="de-en")
    shutil.rmtree(d)


@pytest.mark.slow
def test_archives_are_unpacked_under_the_output_and_bin_survives_a_failure(tmp_path):
    arch = tmp_path / "mine"
    _fake_iwslt14_archive(arch)
    before = sorted(os.listdir(arch))
    out = tmp_path / "out"
    p = bash(f"examples/iwslt14_de_en/prepare.sh --archives {arch} --out {out} --vocab 60")
    assert sorted(os.listdir(arch)) == before  # nothing written into the user's folder
    assert (out / "extracted" / "de-en").is_dir() and (out / "bin" / "dict.de.txt").exists()
    raw = (out / "raw" / "train.de").read_text()
    assert "de sentence number" in raw and "De Sentence" not in raw  # De->En lowercases
    assert "sha256" in p.stderr + p.stdout
    # a failing fairseq-preprocess leaves the previous bin/ in place
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "fairseq-preprocess").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    (stub / "fairseq-preprocess").chmod(0o755)
    marker = out / "bin" / "dict.de.txt"
    old = marker.read_text()
    bad = bash(f"PATH={stub}:$PATH; examples/common/binarize.sh de en {out / 'clean'} {out} 60", check=False)
    assert bad.returncode != 0 and "left as it was" in bad.stderr
    assert marker.read_text() == old and not [f for f in os.listdir(out) if f.startswith("bin.new")]


def test_lowercasing_is_the_recipe_s_not_the_environment_s(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in ("train", "valid", "test"):
        for lang in ("fr", "en"):
            (raw / f"{s}.{lang}").write_text("".join(f"Bonjour Le Monde {i} .\n" for i in range(30)))
    stub = tmp_path / "stub"  # stop right after the text stage: binarize_raw is what runs next
    out = tmp_path / "out"
    script = (f"source examples/common/lib.sh; binarize_raw() {{ echo STOP; exit 0; }}; "
              f"set -- --raw {raw} --out {out}; SRC=fr TGT=en VOCAB=50 RECIPE_LOWER=0 "
              f"CHECKSUMS=/dev/null; URLS=(); source examples/common/prepare_parallel.sh")
    bash(script, env={"LOWER": "1", "RECIPE_LOWER": "1"})
    assert (out / "raw" / "train.fr").read_text().startswith("Bonjour Le Monde")
    assert not stub.exists()


def _fake_data(tmp_path, langs):
    data = tmp_path / "bin"
    data.mkdir()
    for lang in langs:
        (data / f"dict.{lang}.txt").write_text("a 1\n")
    return data


def _dry_run(recipe, data, save, env=None):
    p = bash(f"examples/{recipe}/train.sh {data} el 1 {save}", env={"DRY_RUN": "1", **(env or {})})
    return p.stdout.splitlines()


def test_el_default_and_wmt_world_size(tmp_path):
    args = _dry_run("iwslt14_de_en", _fake_data(tmp_path, ("de", "en")), tmp_path / "s")
    assert args[0] == "fairseq-train"
    i = args.index("--log-end")
    assert args[i + 1] == "0.5"  # two words, not one "--log-end 0.5"
    args = _dry_run("wmt14_en_de", tmp_path / "bin", tmp_path / "w", env={"NGPU": "4"})
    assert args[args.index("--distributed-world-size") + 1] == "4"
    assert args[args.index("--update-freq") + 1] == "2"  # 8 / 4 GPUs: the same global batch
    assert "--save-interval-updates" in args and "--keep-interval-updates" in args
    assert not (tmp_path / "w").exists()  # a dry run creates nothing


def test_sentencepiece_sample_is_seeded(tmp_path):
    import random

    r = random.Random(1)
    words = [f"w{i}x{j}" for i in range(300) for j in range(3)]
    (tmp_path / "c.txt").write_text("\n".join(" ".join(r.choice(words) for _ in range(6)) for _ in range(4000)))
    vocabs = []
    for k in range(2):  # sampling 300 of 4000 lines: unseeded, two runs differ
        bash(f"python -m wce_fairseq.tools.spm train --input {tmp_path / 'c.txt'} --prefix {tmp_path / f'm{k}'} "
             f"--vocab-size 300 --max-sentences 300")
        vocabs.append((tmp_path / f"m{k}.vocab").read_text())
    assert vocabs[0] == vocabs[1]


def test_average_by_update_in_fp32(tmp_path):
    from wce_fairseq.tools.average import last_checkpoints, main

    for ep, upd, val in ((1, 1000, 1.0), (2, 2000, 2.0), (2, 3000, 4.0), (3, 4000, 8.0)):
        torch.save({"model": {"w": torch.full((3,), val, dtype=torch.float16), "n": torch.tensor(upd)}, "cfg": None},
                   tmp_path / f"checkpoint_{ep}_{upd}.pt")
    for ep in (1, 2, 3):
        torch.save({"model": {"w": torch.full((3,), 100.0 * ep, dtype=torch.float16)}, "cfg": None},
                   tmp_path / f"checkpoint{ep}.pt")
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2)] == ["checkpoint_2_3000.pt",
                                                                                 "checkpoint_3_4000.pt"]
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2, "epoch")] == ["checkpoint2.pt",
                                                                                          "checkpoint3.pt"]
    main(["--dir", str(tmp_path), "--last", "3", "--out", str(tmp_path / "avg.pt")])
    avg = torch.load(tmp_path / "avg.pt")["model"]["w"]  # tensors only: safe loading takes it on any torch
    assert avg.dtype == torch.float32 and torch.allclose(avg, torch.full((3,), 14.0 / 3))


def test_sample_lines(tmp_path):
    from wce_fairseq.tools.spm import sample_lines

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(f"a{i}\n" for i in range(50)) + "\n")
    b.write_text("".join(f"b{i}\n" for i in range(50)))
    out = tmp_path / "s.txt"
    assert sample_lines([str(a), str(b)], 1000, 1, str(out)) == 100  # all lines, in order, blanks dropped
    assert out.read_text().split() == [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    assert sample_lines([str(a), str(b)], 30, 1, str(out)) == 30
    first = out.read_text()
    sample_lines([str(a), str(b)], 30, 1, str(out))
    assert out.read_text() == first and len(set(first.split())) == 30
    sample_lines([str(a), str(b)], 30, 2, str(out))
    assert out.read_text() != first

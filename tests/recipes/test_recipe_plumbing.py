"""The recipes' plumbing, offline: downloads verified on every run, archives
unpacked under the output folder, bin/ kept when preprocessing fails, the EL
default, lowercasing confined to De->En, the WMT world size, seeded
SentencePiece, and checkpoint averaging by updates in fp32."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from tests.helpers.cli import REPO, tool  # noqa: E402


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
    assert "WARNING: no published hash" in first.stderr and dest.exists()
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
    # an md5 (what sacreBLEU publishes for the IWSLT'17 archives) is recognised by its length
    import hashlib

    dest.write_bytes(b"pretend archive")
    sums.write_text(f"{hashlib.md5(b'pretend archive').hexdigest()}  archive.tgz\n")
    assert "md5 verified against checksums.sha256" in bash(fetch).stdout
    dest.write_bytes(b"tampered")
    bad = bash(fetch, check=False)
    assert bad.returncode != 0 and "checksum mismatch for archive.tgz: got md5" in bad.stderr
    sums.write_text("abc123  archive.tgz\n")
    assert "neither a sha256 nor an md5" in bash(fetch, check=False).stderr


def test_pinned_iwslt17_hashes_are_sacrebleu_s():
    """The md5s pinned for the Fr->En archives are the ones the installed
    sacreBLEU publishes for the same URLs."""
    sacrebleu_ds = pytest.importorskip("sacrebleu.dataset")
    pinned = {}
    for line in open(os.path.join(REPO, "examples/iwslt17_fr_en/checksums.sha256")):
        if line.strip() and not line.startswith("#"):
            h, name = line.split()
            pinned[name] = h
    script = open(os.path.join(REPO, "examples/iwslt17_fr_en/prepare.sh")).read()
    base = "https://raw.githubusercontent.com/hlt-mt/WIT3/master/archive"
    assert f"WIT3={base}" in script
    urls = {"fr-en.tgz": f"{base}/2017-01-trnted/texts/fr/en/fr-en.tgz",
            "fr-en.tst2017.tgz": f"{base}/2017-01-ted-test/texts/fr/en/fr-en.tgz",
            "en-fr.tst2017.tgz": f"{base}/2017-01-ted-test/texts/en/fr/en-fr.tgz"}
    published = {}
    for ds in sacrebleu_ds.DATASETS.values():
        for url, md5 in zip(getattr(ds, "data", []) or [], getattr(ds, "md5", []) or []):
            published[url] = md5
    assert pinned == {name: published[url] for name, url in urls.items()}


def _fake_iwslt14_archive(folder, n=60):
    """de-en.tgz laid out as the IWSLT'14 release (tags training files, xml test sets)."""
    d = folder / "de-en"
    d.mkdir(parents=True)
    for lang in ("de", "en"):
        lines = ["<url>http://x</url>", "<talkid>1</talkid>", "<keywords>k</keywords>",
                 f"<title>{lang.upper()} Talk Title</title>"]
        lines += [f"{lang.upper()} Sentence Number {i}, isn't it?" for i in range(n)]
        lines += [f"{lang.upper()} " + "long " * 30 if lang == "de" else "EN short"]  # ratio > 1.5: cleaned away
        (d / f"train.tags.de-en.{lang}").write_text("\n".join(lines) + "\n")
        for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
            segs = "\n".join(f'<seg id="{i}"> {lang} {name} Test’s {i} </seg>' for i in range(3))
            (d / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(f"<doc>\n{segs}\n</doc>\n")
    with tarfile.open(folder / "de-en.tgz", "w:gz") as t:
        t.add(d, arcname="de-en")
    shutil.rmtree(d)


@pytest.mark.slow
def test_iwslt14_archives_through_fairseq_s_pipeline_and_bin_survives_a_failure(tmp_path):
    arch = tmp_path / "mine"
    _fake_iwslt14_archive(arch)
    before = sorted(os.listdir(arch))
    out = tmp_path / "out"
    p = bash(f"examples/iwslt14_de_en/prepare.sh --archives {arch} --out {out} --vocab 60")
    assert sorted(os.listdir(arch)) == before  # nothing written into the user's folder
    assert (out / "extracted" / "de-en").is_dir() and (out / "bin" / "dict.de.txt").exists()
    assert "sha256" in p.stderr + p.stdout
    # fairseq's steps: title text kept, tokenised, the long pair cleaned away, lowercased,
    # every 23rd of the 61 remaining lines held out (lines 23 and 46)
    tok = [x for x in (out / "tmp" / "train.tags.de").read_text().splitlines()]
    assert len(tok) == 61 and tok[0] == "de talk title"
    assert tok[1] == "de sentence number 0 , isn &apos; t it ?"  # Moses, German apostrophe rule
    valid = (out / "tok" / "valid.de").read_text().splitlines()
    assert valid == [tok[22], tok[45]]
    assert (out / "tok" / "train.de").read_text().splitlines() == [x for i, x in enumerate(tok, 1) if i % 23]
    test_en = (out / "tok" / "test.en").read_text().splitlines()
    assert len(test_en) == 15 and test_en[0] == "en ted.dev2010 test &apos;s 0"  # ’ -> ', then Moses (English)
    assert (out / "raw" / "test.en").read_text().splitlines()[0] == "en TED.dev2010 Test's 0"
    # BPE with separate dictionaries; bpe text un-BPE'd is the tokenised text
    assert (out / "bpe" / "train.en").read_text().replace("@@ ", "") == (out / "tok" / "train.en").read_text()
    assert (out / "bin" / "dict.de.txt").read_text() != (out / "bin" / "dict.en.txt").read_text()
    meta = json.loads((out / "bin" / "wce_recipe.json").read_text())
    assert meta["remove_bpe"] == "subword_nmt" and meta["detok"] == "moses" and meta["lowercase"] is True
    # a failing fairseq-preprocess leaves the previous bin/ in place
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "fairseq-preprocess").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    (stub / "fairseq-preprocess").chmod(0o755)
    marker = out / "bin" / "dict.de.txt"
    old = marker.read_text()
    bad = bash(f"PATH={stub}:$PATH; examples/iwslt14_de_en/prepare.sh --archives {arch} --out {out} --vocab 60",
               check=False)
    assert bad.returncode != 0 and "left as it was" in bad.stderr
    assert marker.read_text() == old and not [f for f in os.listdir(out) if f.startswith("bin.new")]
    # the SentencePiece pipeline (--pipeline spm) too
    p = bash(f"examples/iwslt14_de_en/prepare.sh --archives {arch} --out {tmp_path / 'spm'} --vocab 80 --pipeline spm")
    assert (tmp_path / "spm" / "bin" / "spm.model").exists()
    assert (tmp_path / "spm" / "text" / "train.de").read_text().startswith("de talk title\n")
    bad = bash(f"examples/iwslt14_de_en/prepare.sh --archives {arch} --out {tmp_path / 'x'} --pipeline bpe",
               check=False)
    assert bad.returncode != 0 and "--pipeline must be one of: moses spm" in bad.stderr


def _fake_iwslt17_archives(folder, n=50):
    """The three archives of the Fr->En recipe, laid out as WIT3's releases."""
    folder.mkdir(parents=True)
    work = folder / "w"
    tr = work / "train" / "fr-en"
    tr.mkdir(parents=True)
    for lang in ("fr", "en"):
        lines = ['<doc docid="1" genre="lectures">', "<url>u</url>", "<speaker>S</speaker>",
                 f"<title>{lang} Title</title>"]
        lines += [f"  {lang.capitalize()} Phrase {i} l’exemple  " for i in range(n)] + ["</doc>"]
        (tr / f"train.tags.fr-en.{lang}").write_text("\n".join(lines) + "\n")
        sets = ["dev2010"] + [f"tst{y}" for y in range(2010, 2016)]
        for name in sets:
            segs = "\n".join(f'<seg id="{i}">{lang} {name} Seg {i}</seg>' for i in range(2))
            (tr / f"IWSLT17.TED.{name}.fr-en.{lang}.xml").write_text(f"<doc>\n{segs}\n</doc>\n")
    t17 = work / "t17"
    (t17 / "fr-en").mkdir(parents=True)
    (t17 / "en-fr").mkdir(parents=True)
    (t17 / "fr-en" / "IWSLT17.TED.tst2017.fr-en.fr.xml").write_text(
        "\n".join(f'<seg id="{i}">fr tst2017 {i}</seg>' for i in range(4)) + "\n")
    (t17 / "en-fr" / "IWSLT17.TED.tst2017.en-fr.en.xml").write_text(
        "\n".join(f'<seg id="{i}">en tst2017 {i}</seg>' for i in range(4)) + "\n")
    for name, src, arc in (("fr-en.tgz", tr, "fr-en"), ("fr-en.tst2017.tgz", t17 / "fr-en", "fr-en"),
                           ("en-fr.tst2017.tgz", t17 / "en-fr", "en-fr")):
        with tarfile.open(folder / name, "w:gz") as t:
            t.add(src, arcname=arc)
    shutil.rmtree(work)


@pytest.mark.slow
def test_iwslt17_archives_through_the_multilingual_pipeline(tmp_path):
    arch = tmp_path / "mine"
    _fake_iwslt17_archives(arch)
    out = tmp_path / "out"
    # the pinned md5s are the real archives': the fakes must fail them ...
    bad = bash(f"examples/iwslt17_fr_en/prepare.sh --archives {arch} --out {out} --vocab 120", check=False)
    assert bad.returncode != 0 and "checksum mismatch for fr-en.tgz: got md5" in bad.stderr
    # ... so check the rest of the pipeline with an empty pin list
    script = open(os.path.join(REPO, "examples/iwslt17_fr_en/prepare.sh")).read()
    copy = tmp_path / "recipe" / "examples" / "iwslt17_fr_en"
    shutil.copytree(os.path.join(REPO, "examples"), tmp_path / "recipe" / "examples")
    (copy / "checksums.sha256").write_text("# none\n")
    assert (copy / "prepare.sh").read_text() == script
    os.symlink(os.path.join(REPO, "wce_fairseq"), tmp_path / "recipe" / "wce_fairseq")
    p = bash(f"{copy / 'prepare.sh'} --archives {arch} --out {out} --vocab 120", env={"PYTHONPATH": REPO})
    assert "WARNING: no published hash" in p.stderr
    raw = out / "raw"
    train_fr = (raw / "train.fr").read_text().splitlines()
    assert train_fr[:2] == ["fr Title", "Fr Phrase 0 l’exemple"]  # cased, trimmed, tags dropped; ’ kept in train
    assert len(train_fr) == 51
    assert (raw / "valid.en").read_text().splitlines() == ["en dev2010 Seg 0", "en dev2010 Seg 1"]
    assert len((raw / "test.en").read_text().splitlines()) == 12  # tst2010-2015, two each
    assert (raw / "test1.fr").read_text().splitlines()[0] == "fr tst2017 0"
    assert (raw / "test1.en").read_text().splitlines()[3] == "en tst2017 3"
    assert (out / "bin" / "test1.fr-en.fr.idx").exists()
    assert (out / "bin" / "dict.fr.txt").read_text() == (out / "bin" / "dict.en.txt").read_text()  # joined
    meta = json.loads((out / "bin" / "wce_recipe.json").read_text())
    assert meta["remove_bpe"] == "sentencepiece" and meta["lowercase"] is False and "test1" in meta["ref_detok"]
    assert "SentencePiece bpe (120, joint fr+en)" in p.stdout and "kept 51 of 51 pairs (1..250 pieces" in p.stderr


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


# the authors' translation/readme.sh command lines, option by option
AUTHORS = {
    "iwslt14_de_en": {"--arch": "transformer_iwslt_de_en", "--adam-betas": "(0.9,0.98)", "--lr": "1e-3",
                      "--lr-scheduler": "inverse_sqrt", "--warmup-updates": "4000", "--weight-decay": "0.0001",
                      "--max-tokens": "4096", "--update-freq": "4", "--max-update": "20000", "--dropout": "0.4",
                      "--label-smoothing": "0.1", "--log-end": "0.5", "--keep-interval-updates": "10",
                      "--eval-bleu-detok": "moses", "--best-checkpoint-metric": "bleu"},
    "iwslt17_fr_en": {"--arch": "transformer_iwslt_de_en", "--encoder-layers": "2", "--decoder-layers": "2",
                      "--lr": "5e-4", "--weight-decay": "0.001", "--max-tokens": "4096", "--max-update": "100000",
                      "--dropout": "0.3", "--label-smoothing": "0.1", "--log-end": "0.5",
                      "--keep-interval-updates": "10", "--eval-bleu-remove-bpe": "sentencepiece",
                      "--best-checkpoint-metric": "bleu"},
}


@pytest.mark.parametrize("recipe", list(AUTHORS))
def test_iwslt_command_lines_are_the_authors(recipe, tmp_path):
    langs = ("de", "en") if recipe.startswith("iwslt14") else ("fr", "en")
    data = _fake_data(tmp_path, langs)
    args = _dry_run(recipe, data, tmp_path / "s", env={"FP16": "1"})
    for opt, val in AUTHORS[recipe].items():
        assert args[args.index(opt) + 1] == val, opt
    eval_args = json.loads(args[args.index("--eval-bleu-args") + 1])
    assert eval_args == {"beam": 5, "max_len_a": 1.2, "max_len_b": 10}
    assert "--maximize-best-checkpoint-metric" in args and "--fp16" in args
    if recipe.startswith("iwslt14"):
        assert not [a for a in args if a.startswith("--share")]  # unshared embeddings
        assert args[args.index("--eval-bleu-remove-bpe") + 1].startswith("--")  # bare flag: "@@ "
    else:
        assert "--share-all-embeddings" in args and "--update-freq" not in args
    assert "--fp16" not in _dry_run(recipe, data, tmp_path / "s", env={"FP16": "0"})
    base = bash(f"examples/{recipe}/train.sh {data} baseline 1 {tmp_path / 'b'}", env={"DRY_RUN": "1"}).stdout.split()
    assert base[base.index("--bonus-weight") + 1] == "0" and "--log-end" not in base


def test_sentencepiece_sample_is_seeded(tmp_path):
    import random

    r = random.Random(1)
    words = [f"w{i}x{j}" for i in range(300) for j in range(3)]
    (tmp_path / "c.txt").write_text("\n".join(" ".join(r.choice(words) for _ in range(6)) for _ in range(4000)))
    vocabs = []
    for k in range(2):  # sampling 300 of 4000 lines: unseeded, two runs differ
        bash(f"python -m wce_fairseq_recipes.spm train --input {tmp_path / 'c.txt'} --prefix {tmp_path / f'm{k}'} "
             f"--vocab-size 300 --max-sentences 300")
        vocabs.append((tmp_path / f"m{k}.vocab").read_text())
    assert vocabs[0] == vocabs[1]


def test_sample_lines(tmp_path):
    from wce_fairseq_recipes.spm import sample_lines

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

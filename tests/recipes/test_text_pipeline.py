"""wce_fairseq_recipes: the text steps of the recipes' paper pipelines, each against an
independent expectation: fairseq's IWSLT'14 / multilingual IWSLT'17 line
filters, Moses' tokenizer and clean-corpus-n.perl, the every-23rd-line split,
subword-nmt BPE and SentencePiece pair filtering (the metrics are
tests/tools/test_score.py's)."""
import os
import subprocess

import pytest

from tests.helpers.cli import REPO, tool

sacremoses = pytest.importorskip("sacremoses")
pytest.importorskip("subword_nmt")


def py(*args, stdin=None):
    p = subprocess.run([tool("python"), "-m", *args], input=stdin, capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


# --- fairseq's line filters ---------------------------------------------------------------

TAGS = """<url>http://www.ted.com/talks/x.html</url>
<keywords>talks, science</keywords>
<speaker>Jane Doe</speaker>
<talkid>1</talkid>
<title>Jane Doe: A Title</title>
<description>TED Talk Subtitles and Transcript: A description.</description>
<reviewer href="x">R</reviewer>
<translator href="y">T</translator>
  First sentence, with spaces around.  
<doc docid="1" genre="lectures">
Second one’s here.
</doc>
"""


@pytest.mark.parametrize("style,expected", [
    # prepare-iwslt14.sh: grep -v <url>|<talkid>|<keywords>, delete title/description tags, nothing else
    ("iwslt14", ["<speaker>Jane Doe</speaker>", "Jane Doe: A Title",
                 "TED Talk Subtitles and Transcript: A description.", '<reviewer href="x">R</reviewer>',
                 '<translator href="y">T</translator>', "  First sentence, with spaces around.  ",
                 '<doc docid="1" genre="lectures">', "Second one’s here.", "</doc>"]),
    # prepare-iwslt17-multilingual.sh also drops speaker/reviewer/translator/doc lines and trims
    ("iwslt17", ["Jane Doe: A Title", "TED Talk Subtitles and Transcript: A description.",
                 "First sentence, with spaces around.", "Second one’s here."]),
    ("plain", ["First sentence, with spaces around.", "Second one’s here."]),
])
def test_tags_styles(tmp_path, style, expected):
    f = tmp_path / "train.tags.de-en.de"
    f.write_text(TAGS, encoding="utf-8")
    assert py("wce_fairseq_recipes.extract", "tags", "--style", style, str(f)).splitlines() == expected


def test_xml_fairseq_style(tmp_path):
    f = tmp_path / "IWSLT14.TED.tst2010.de-en.en.xml"
    f.write_text('<mteval>\n<doc docid="1">\n<seg id="1"> It’s a &quot;test&quot; </seg>\n'
                 '<seg id="2">Second.</seg>  \n<p>not a seg</p>\n</doc>\n</mteval>\n', encoding="utf-8")
    # fairseq: grep '<seg id', strip the tags and the spaces next to them, ’ -> ', entities left alone
    assert py("wce_fairseq_recipes.extract", "xml", "--style", "iwslt14", str(f)).splitlines() == [
        "It's a &quot;test&quot;", "Second."]
    assert py("wce_fairseq_recipes.extract", "xml", str(f)).splitlines() == ['It’s a "test"', "Second."]


def test_split_every_23rd_line_as_awk(tmp_path):
    f = tmp_path / "all.txt"
    f.write_text("".join(f"{i}\n" for i in range(1, 101)))
    py("wce_fairseq_recipes.extract", "split", str(f), str(tmp_path / "tr"), str(tmp_path / "va"), "--every", "23")
    # awk '{if (NR%23 == 0) print}' -> lines 23, 46, 69, 92
    assert (tmp_path / "va").read_text().split() == ["23", "46", "69", "92"]
    assert (tmp_path / "tr").read_text().split() == [str(i) for i in range(1, 101) if i % 23]


# --- Moses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lang,text,expected", [
    # tokenizer.perl -l en: escaping on, English clitics split before the apostrophe
    ("en", 'Hello, world\'s "best" & co. | [x]', "Hello , world &apos;s &quot; best &quot; &amp; co . &#124; &#91; x &#93;"),
    # -l de: apostrophes split on both sides; known abbreviations (z.B.) kept
    ("de", "Das ist z.B. Peter's Haus, oder?", "Das ist z.B. Peter &apos; s Haus , oder ?"),
    ("en", "It costs $1,000.50 (approx.).", "It costs $ 1,000.50 ( approx . ) ."),
    # tokenizer.perl since 2018-11 splits the line's final period even after a
    # non-breaking prefix (sacremoses alone keeps "usw." / "U.S."); mid-line ones stay
    ("de", "Wir kaufen Äpfel, Birnen usw.", "Wir kaufen Äpfel , Birnen usw ."),
    ("en", "He lives in the U.S.", "He lives in the U.S ."),
    ("de", "Das ist z.B. gut, usw. und so weiter.", "Das ist z.B. gut , usw. und so weiter ."),
])
def test_moses_tokenizer(lang, text, expected):
    assert py("wce_fairseq_recipes.moses", "tok", "-l", lang, stdin=text + "\n").splitlines() == [expected]
    assert py("wce_fairseq_recipes.moses", "tok", "-l", lang, "--lowercase", stdin=text + "\n").splitlines() == [
        expected.lower()]


def test_moses_tokenizer_workers_keep_order():
    lines = [f"Line {i}, number {i}." for i in range(4500)]
    out = py("wce_fairseq_recipes.moses", "tok", "-l", "en", "--workers", "2", stdin="\n".join(lines) + "\n")
    assert out.splitlines() == [f"Line {i} , number {i} ." for i in range(4500)]


def test_moses_clean_as_clean_corpus_n(tmp_path):
    pairs = [
        ("a b c", "x y z"),               # kept
        ("a  b\tc ", " x y"),             # whitespace collapsed and trimmed; 3 vs 2 words: ratio 1.5 kept
        ("a b c d", "x y"),               # ratio 2 > 1.5: dropped
        ("", "x"),                        # empty side: dropped
        ("a", "x"),                       # 1 word each: kept (min 1)
        (" ".join("w" * 1 for _ in range(6)), "x y z u v w"),  # 6 words: over max 5: dropped
        ("a|b c", "x y"),                 # pipes removed (the first line has none): "ab c"
    ]
    for lang, k in (("de", 0), ("en", 1)):
        (tmp_path / f"c.{lang}").write_text("".join(p[k] + "\n" for p in pairs))
    py("wce_fairseq_recipes.moses", "clean", str(tmp_path / "c"), "de", "en", str(tmp_path / "o"), "1", "5",
       "--ratio", "1.5")
    got = list(zip((tmp_path / "o.de").read_text().splitlines(), (tmp_path / "o.en").read_text().splitlines()))
    assert got == [("a b c", "x y z"), ("a b c", "x y"), ("a", "x"), ("ab c", "x y")]


def test_lowercase_and_detok():
    assert py("wce_fairseq_recipes.moses", "lc", stdin="ÄÖÜ Straße ABC\n") == "äöü straße abc\n"
    assert py("wce_fairseq_recipes.moses", "detok", "-l", "en",
              stdin="it &apos;s a &quot; test &quot; , isn &apos;t it ?\n") == "it's a \"test\", isn't it?\n"


# --- subwords -------------------------------------------------------------------------------

def test_subword_nmt_bpe_round_trip(tmp_path):
    words = "the quick brown fox jumps over the lazy dog again and again".split()
    text = "".join(" ".join(words[i:] + words[:i]) + "\n" for i in range(len(words)))
    (tmp_path / "train").write_text(text)
    subprocess.run(f"{tool('subword-nmt')} learn-bpe -s 20 < {tmp_path / 'train'} > {tmp_path / 'code'}",
                   shell=True, check=True)
    codes = [x for x in (tmp_path / "code").read_text().splitlines() if not x.startswith("#version")]
    assert 0 < len(codes) <= 20
    out = subprocess.run(f"{tool('subword-nmt')} apply-bpe -c {tmp_path / 'code'} < {tmp_path / 'train'}",
                         shell=True, check=True, capture_output=True, text=True).stdout
    assert "@@ " in out  # some words are split ...
    assert out.replace("@@ ", "") == text  # ... and fairseq's --remove-bpe ("@@ ") restores the text


def test_spm_encode_pair_filters_like_fairseq(tmp_path):
    import sentencepiece as spm

    (tmp_path / "t.txt").write_text("".join(f"word{i % 7} thing{i % 5} stuff\n" for i in range(200)))
    py("wce_fairseq_recipes.spm", "train", "--input", str(tmp_path / "t.txt"), "--prefix", str(tmp_path / "m"),
       "--vocab-size", "40", "--model-type", "bpe")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    src = ["word1 thing2", "", "word3 " * 20, "stuff"]
    tgt = ["thing1", "word2", "stuff", ""]
    (tmp_path / "a").write_text("".join(x + "\n" for x in src))
    (tmp_path / "b").write_text("".join(x + "\n" for x in tgt))
    py("wce_fairseq_recipes.spm", "encode-pair", "--model", str(tmp_path / "m.model"), "--inputs", str(tmp_path / "a"),
       str(tmp_path / "b"), "--outputs", str(tmp_path / "ea"), str(tmp_path / "eb"), "--min-len", "1",
       "--max-len", "30")
    keep = [i for i in range(4) if all(1 <= len(sp.encode(x, out_type=str)) <= 30 for x in (src[i], tgt[i]))]
    assert keep == [0]  # empty sides and the 40+-piece line go
    assert (tmp_path / "ea").read_text() == " ".join(sp.encode(src[0], out_type=str)) + "\n"




# --- the same line filters, run as the shell commands of fairseq's scripts ----------------

SHELL = {
    "iwslt14": "grep -v '<url>' | grep -v '<talkid>' | grep -v '<keywords>' | sed -e 's/<title>//g' "
               "| sed -e 's/<\\/title>//g' | sed -e 's/<description>//g' | sed -e 's/<\\/description>//g'",
    "iwslt17": "grep -v '<url>' | grep -v '<talkid>' | grep -v '<keywords>' | grep -v '<speaker>' "
               "| grep -v '<reviewer' | grep -v '<translator' | grep -v '<doc' | grep -v '</doc>' "
               "| sed -e 's/<title>//g' | sed -e 's/<\\/title>//g' | sed -e 's/<description>//g' "
               "| sed -e 's/<\\/description>//g' | sed 's/^\\s*//g' | sed 's/\\s*$//g'",
    "xml": "grep '<seg id' | sed -e 's/<seg id=\"[0-9]*\">\\s*//g' | sed -e 's/\\s*<\\/seg>\\s*//g' "
           "| sed -e \"s/\\’/\\'/g\"",
}


def _shell(cmd, path):
    return subprocess.run(f"cat {path} | {cmd}", shell=True, capture_output=True, check=False,
                          env=dict(os.environ, LC_ALL="C.UTF-8")).stdout.decode("utf-8")


@pytest.mark.parametrize("style", ["iwslt14", "iwslt17"])
def test_tags_equal_fairseq_s_shell_commands(tmp_path, style):
    f = tmp_path / "train.tags"
    text = TAGS + "".join(f"\t<title>T{i}</title> x {i} ’ \n<keywords>k</keywords>\n  plain line {i}\n" for i in range(50))
    f.write_text(text, encoding="utf-8")
    assert py("wce_fairseq_recipes.extract", "tags", "--style", style, str(f)) == _shell(SHELL[style], f)


def test_xml_equals_fairseq_s_shell_commands(tmp_path):
    f = tmp_path / "t.xml"
    f.write_text('<refset>\n<doc docid="7">\n' + "".join(
        f'<seg id="{i}">  Seg {i}: it’s &quot;q&quot; &amp; <b>  </seg>  \n<seg x="1">no id</seg>\n' for i in range(30))
        + "</doc>\n</refset>\n", encoding="utf-8")
    assert py("wce_fairseq_recipes.extract", "xml", "--style", "iwslt14", str(f)) == _shell(SHELL["xml"], f)


def test_split_equals_awk(tmp_path):
    f = tmp_path / "all.txt"
    f.write_text("".join(f"line {i}\n" for i in range(500)))
    py("wce_fairseq_recipes.extract", "split", str(f), str(tmp_path / "tr"), str(tmp_path / "va"), "--every", "23")
    assert (tmp_path / "va").read_text() == _shell("awk '{if (NR%23 == 0)  print $0; }'", f)
    assert (tmp_path / "tr").read_text() == _shell("awk '{if (NR%23 != 0)  print $0; }'", f)

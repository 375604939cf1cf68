"""Data preparation for the recipes under ``examples/`` (not part of the
plugin that ``--user-dir wce_fairseq`` loads): text extraction from the IWSLT
and WMT releases, Moses tokenisation and cleaning, a pair filter for the
SentencePiece pipelines, SentencePiece itself. Their dependencies come with
``pip install "wce_fairseq[recipes]"``.

* ``extract``      — train.tags / XML / SGML text, the every-k-th-line split
* ``moses``        — tokenizer.perl, lowercase.perl, detokenizer.perl, clean-corpus-n.perl
* ``pair_filter``  — the SentencePiece pipelines' filter (empty pairs, length, ratio)
* ``spm``          — SentencePiece training and encoding on a seeded sample
"""

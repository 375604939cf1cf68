import os

import pytest

# Without a GPU, run Triton kernels through its CPU interpreter. This must be
# set before triton is first imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=__import__("tests.helpers.impls", fromlist=["ALL"]).ALL)
def impl(request):
    """Every implementation, and auto; one that cannot run here is skipped with the reason (tests/helpers/impls.py)."""
    return request.param


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """``toy_data(n_train=, n_valid=, n_test=, vocab=)``: the quickstart's
    synthetic corpus through SentencePiece and fairseq-preprocess
    (tests/helpers/cli.py), made once per distinct argument set per session;
    returns the binarised data folder."""
    made = {}

    def get(n_train=600, n_valid=60, n_test=60, vocab=200):
        key = (n_train, n_valid, n_test, vocab)
        if key not in made:
            from tests.helpers.cli import make_toy_data

            root = tmp_path_factory.mktemp("toy-{}-{}-{}-{}".format(*key))
            made[key] = make_toy_data(str(root), *key)
        return made[key]

    return get

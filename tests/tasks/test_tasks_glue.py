"""GLUE reader, features and submission writer: tiny files in every official layout, and the real files."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tasks.data.features import PairExample
from tasks.data.glue import GLUE_TASKS, glue_features, glue_task, read_glue, read_glue_file, write_glue_predictions

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\t"
                   "gold_label")
MNLI_TEST_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"

# task -> (file name, file text, expected (text_a, text_b, label) per row). Layouts follow the GLUE download.
LAYOUTS = {
    "cola-train": ("cola", "train.tsv",
                   'gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe "rope" stretch over.\n',
                   [("The sailors rode the breeze.", None, "1"), ('The "rope" stretch over.', None, "0")]),
    "cola-test": ("cola", "test.tsv", "index\tsentence\n0\tBill left.\n1\tLeft Bill.\n",
                  [("Bill left.", None, None), ("Left Bill.", None, None)]),
    "sst-2-train": ("sst-2", "train.tsv", "sentence\tlabel\nit 's a charming journey . \t1\nhide units \t0\n",
                    [("it 's a charming journey . ", None, "1"), ("hide units ", None, "0")]),
    "sst-2-test": ("sst-2", "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n",
                   [("uneasy mishmash .", None, None)]),
    "mrpc-train": ("mrpc", "train.tsv",
                   "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                   '1\t702876\t702977\tHe said "no".\t"No, he said.\n0\t2108705\t2108831\tA b.\tC d.\n',
                   [('He said "no".', '"No, he said.', "1"), ("A b.", "C d.", "0")]),
    "mrpc-test": ("mrpc", "test.tsv",
                  "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1089874\t1089925\tX y.\tY x.\n",
                  [("X y.", "Y x.", None)]),
    "sts-b-dev": ("sts-b", "dev.tsv",
                  f"{STSB_HEADER}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man plays.\t"
                  "A man is playing.\t5.000\n1\tmain-news\theadlines\t2013\t0001\tnone\tnone\tA.\tB.\t0.750\n",
                  [("A man plays.", "A man is playing.", 5.0), ("A.", "B.", 0.75)]),
    "sts-b-test": ("sts-b", "test.tsv",
                   f"{STSB_HEADER}\n0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl.\tA boy.\n",
                   [("A girl.", "A boy.", None)]),
    "qqp-dev": ("qqp", "dev.tsv",
                "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n201359\t303345\t303346\tWhy?\tHow?\t0\n",
                [("Why?", "How?", "0")]),
    "qqp-test": ("qqp", "test.tsv", "id\tquestion1\tquestion2\n0\tWhat is it?\tIs it what?\n",
                 [("What is it?", "Is it what?", None)]),
    "mnli-train": ("mnli", "train.tsv",
                   f"{MNLI_TRAIN_HEADER}\n0\t31193\t31193n\tgovernment\t( ( A ) )\t( B )\t(ROOT A)\t(ROOT B)\t"
                   "Conceptually cream skimming.\tProduct and geography.\tneutral\tneutral\n",
                   [("Conceptually cream skimming.", "Product and geography.", "neutral")]),
    "mnli-dev": ("mnli", "dev_matched.tsv",
                 f"{MNLI_DEV_HEADER}\n0\t63735\t63735n\tslate\t( A )\t( B )\t(ROOT A)\t(ROOT B)\tThe new rights.\t"
                 "Everyone loves them.\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n",
                 [("The new rights.", "Everyone loves them.", "neutral")]),
    "mnli-mm-dev": ("mnli-mm", "dev_mismatched.tsv",
                    f"{MNLI_DEV_HEADER}\n0\t75290\t75290c\tletters\t( A )\t( B )\t(ROOT A)\t(ROOT B)\tYour gift.\t"
                    "Nothing given.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\t"
                    "contradiction\n",
                    [("Your gift.", "Nothing given.", "contradiction")]),
    "mnli-test": ("mnli", "test_matched.tsv",
                  f"{MNLI_TEST_HEADER}\n0\t31493\t31493\ttravel\t( A )\t( B )\t(ROOT A)\t(ROOT B)\t"
                  "Hierbas.\tA drink.\n",
                  [("Hierbas.", "A drink.", None)]),
    "qnli-dev": ("qnli", "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tWhat came?\tThe Cold War came.\tentailment\n",
                 [("What came?", "The Cold War came.", "entailment")]),
    "rte-train": ("rte", "train.tsv",
                  "index\tsentence1\tsentence2\tlabel\n0\tNo weapons found.\tWeapons found.\tnot_entailment\n"
                  "1\tA place.\tIt is a place.\tentailment\n",
                  [("No weapons found.", "Weapons found.", "not_entailment"),
                   ("A place.", "It is a place.", "entailment")]),
    "rte-test": ("rte", "test.tsv", "index\tsentence1\tsentence2\n0\tMexico City.\tA city.\n",
                 [("Mexico City.", "A city.", None)]),
    "wnli-dev": ("wnli", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged.\tIt is clogged.\t1\n",
                 [("The drain is clogged.", "It is clogged.", "1")]),
    "rte-hf-export": ("rte", "dev.tsv",
                      'sentence1\tsentence2\tlabel\tidx\n"He said ""hi"" twice."\tHe spoke.\t0\t0\n'
                      'Plain.\t"A tab\tinside."\t1\t1\n',
                      [('He said "hi" twice.', "He spoke.", "entailment"),
                       ("Plain.", "A tab\tinside.", "not_entailment")]),
    "mnli-hf-export": ("mnli", "dev_matched.tsv",
                       "premise\thypothesis\tlabel\tidx\nP0.\tH0.\t0\t0\nP1.\tH1.\t1\t1\nP2.\tH2.\t2\t2\n"
                       "P3.\tH3.\t-1\t3\n",
                       [("P0.", "H0.", "entailment"), ("P1.", "H1.", "neutral"), ("P2.", "H2.", "contradiction"),
                        ("P3.", "H3.", None)]),
    "sts-b-hf-export": ("sts-b", "test.tsv", "sentence1\tsentence2\tlabel\tidx\nA.\tB.\t3.2\t0\nC.\tD.\t-1.0\t1\n",
                        [("A.", "B.", 3.2), ("C.", "D.", None)]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_reads_each_official_layout(tmp_path, layout):
    task, name, text, expected = LAYOUTS[layout]
    folder = tmp_path / GLUE_TASKS[task].directory
    folder.mkdir()
    (folder / name).write_text(text, encoding="utf-8")
    split = next(split for split, file_name in GLUE_TASKS[task].files.items() if file_name == name)

    examples = read_glue(task, folder, split)

    assert [(e.text_a, e.text_b, e.label) for e in examples] == expected
    assert [e.guid for e in examples] == [f"{name[:-4]}-{i}" for i in range(len(expected))]


def test_every_task_has_a_layout_check_above():
    assert {layout[0] for layout in LAYOUTS.values()} == set(GLUE_TASKS)


@pytest.mark.parametrize(
    "task, text, line, message",
    [
        ("sst-2", "sentence\tlabel\ngood .\t1\nbad .\t0\textra\n", 3, "expected 2 tab-separated fields"),
        ("sst-2", "sentence\tlabel\ngood .\t1\nbad .\tnegative\n", 3, "unknown label 'negative'"),
        ("cola", "gj04\t1\t\tFine.\ngj04\t1\tToo few.\n", 2, "expected 4 tab-separated fields"),
        ("rte", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tA.\tB.\tcontradiction\n", 3,
         "unknown label 'contradiction'"),
        ("sts-b", f"{STSB_HEADER}\tscore\n0\tg\tf\ty\t0\tnone\tnone\tA.\tB.\thigh\n", 2, "is not a number"),
        ("rte", "sentence1\tsentence2\tlabel\tidx\nA.\tB.\t0\t0\n\nA.\tB.\t2\t1\n", 4, "unknown label id '2'"),
        ("qnli", "id\tquestion1\tquestion2\n0\tA?\tB?\n", 1, "not a GLUE qnli header"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, task, text, line, message):
    path = tmp_path / "dev.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"dev.tsv:{line}: .*{message}"):
        read_glue_file(path, task)


def test_task_names_and_splits(tmp_path):
    assert glue_task("SST2") is GLUE_TASKS["sst-2"] and glue_task("STS-B") is GLUE_TASKS["sts-b"]
    assert glue_task("sts-b").is_regression and glue_task("sts-b").num_labels == 1
    assert glue_task("mnli").num_labels == 3
    with pytest.raises(KeyError, match="unknown GLUE task"):
        glue_task("squad")
    with pytest.raises(KeyError, match="unknown split"):
        read_glue("mnli", tmp_path, "validation")


def test_submission_file(tmp_path):
    path = tmp_path / glue_task("rte").submission_file
    write_glue_predictions(path, "rte", np.array([0, 1, 1]))
    assert path.name == "RTE.tsv"
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n2\tnot_entailment\n"

    write_glue_predictions(path, "sts-b", [0.12345, 4.9996])
    assert path.read_text() == "index\tprediction\n0\t0.123\n1\t5.000\n"

    with pytest.raises(ValueError, match="0..2"):
        write_glue_predictions(path, "mnli", [0, 3])
    with pytest.raises(TypeError, match="label ids"):
        write_glue_predictions(path, "cola", [0.2, 0.9])


def test_features_pairs_and_labels(make_tokenizer):
    examples = [PairExample("dev-0", "The cat sat.", "A dog ran.", "entailment"),
                PairExample("dev-1", "Cats sat.", "No.", "not_entailment")]
    tokenizer = make_tokenizer(["The cat sat. A dog ran. No."])

    features = glue_features(examples, "rte", tokenizer, max_seq_length=12)

    assert {name: (array.dtype, array.shape) for name, array in features.items()} == {
        "input_ids": (np.int64, (2, 12)), "token_type_ids": (np.int64, (2, 12)),
        "attention_mask": (np.int64, (2, 12)), "labels": (np.int64, (2,))}
    assert features["labels"].tolist() == [0, 1]
    # "cats" is split into cat + ##s by the WordPiece vocabulary
    expected = ["[CLS]", "cat", "##s", "sat", ".", "[SEP]", "no", ".", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][1].tolist()) == expected
    assert features["token_type_ids"][1].tolist() == [0] * 6 + [1] * 3 + [0] * 3
    assert features["attention_mask"][1].tolist() == [1] * 9 + [0] * 3


def test_features_truncate_longest_first_and_regression(make_tokenizer):
    long_text = "one two three four five six seven eight nine ten"
    examples = [PairExample("dev-0", long_text, "big red dog", 3.5)]
    tokenizer = make_tokenizer([long_text, "big red dog"])

    features = glue_features(examples, "sts-b", tokenizer, max_seq_length=12)

    # 12 positions - 3 special tokens = 9; longest_first trims the 10-token text to 6 and keeps all 3 of the other
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]", "big", "red", "dog", "[SEP]"]
    assert features["labels"].dtype == np.float32 and features["labels"].tolist() == [3.5]


def test_unlabelled_test_file_has_no_labels(make_tokenizer, tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("index\tsentence\n0\tthe cat sat .\n1\tthe dog ran .\n", encoding="utf-8")
    features = glue_features(read_glue_file(path, "sst-2"), "sst-2", make_tokenizer(), max_seq_length=8)
    assert "labels" not in features and features["input_ids"].shape == (2, 8)


# ---- real files (SOURCES.md) ------------------------------------------------------------------------

REAL_COUNTS = [  # task, folder, split, rows, label counts from SOURCES.md
    ("sst-2", "SST-2", "train", 67349, {"1": 37569, "0": 29780}),
    ("sst-2", "SST-2", "dev", 872, {"1": 444, "0": 428}),
    ("cola", "CoLA", "train", 8551, {"1": 6023, "0": 8551 - 6023}),
    ("cola", "CoLA", "dev", 1043, {"1": 721, "0": 1043 - 721}),
    ("mrpc", "MRPC", "train", 3668, None),
    ("mrpc", "MRPC", "dev", 408, None),
    ("rte", "RTE/hf_export", "train", 2490, {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "RTE/hf_export", "dev", 277, {"entailment": 146, "not_entailment": 131}),
]


@pytest.mark.realdata
@pytest.mark.parametrize("task, folder, split, rows, label_counts", REAL_COUNTS)
def test_real_files_row_counts(shared_data, task, folder, split, rows, label_counts):
    examples = read_glue(task, shared_data("glue", *folder.split("/")), split)
    assert len(examples) == rows
    if label_counts is not None:
        assert Counter(example.label for example in examples) == label_counts
    assert all(example.text_a and (example.text_b is None) == (task in ("sst-2", "cola")) for example in examples)


@pytest.mark.realdata
def test_real_files_keep_text_verbatim(shared_data):
    sst2 = read_glue("sst-2", shared_data("glue", "SST-2"), "dev")
    assert all(example.text_a.endswith(" ") for example in sst2)  # GLUE's trailing space is kept
    mrpc_path = shared_data("glue", "MRPC", "dev.tsv")
    lines = mrpc_path.read_text(encoding="utf-8-sig").splitlines()[1:]
    mrpc = read_glue_file(mrpc_path, "mrpc")
    # quotes are ordinary characters in GLUE files: columns 4 and 5 come back exactly as written
    assert [(e.text_a, e.text_b) for e in mrpc] == [tuple(line.split("\t")[3:5]) for line in lines]
    rte = read_glue("rte", shared_data("glue", "RTE", "hf_export"), "dev")
    quoted = [e for e in rte if '"' in e.text_a + e.text_b]
    assert quoted and not any('""' in e.text_a + e.text_b for e in quoted)  # csv quoting is undone


@pytest.mark.realdata
def test_real_features_with_minilm(shared_data, minilm_tokenizer):
    examples = read_glue("mrpc", shared_data("glue", "MRPC"), "dev")
    features = glue_features(examples, "mrpc", minilm_tokenizer, max_seq_length=128)
    assert features["input_ids"].shape == (408, 128)
    first = features["input_ids"][0][features["attention_mask"][0] == 1].tolist()
    expected = minilm_tokenizer.build_inputs_with_special_tokens(
        minilm_tokenizer.convert_tokens_to_ids(minilm_tokenizer.tokenize(examples[0].text_a)),
        minilm_tokenizer.convert_tokens_to_ids(minilm_tokenizer.tokenize(examples[0].text_b)),
    )
    assert first == expected
    assert features["labels"].tolist() == [int(example.label) for example in examples]

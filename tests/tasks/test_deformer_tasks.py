"""The task layer of the DeFormer family: split-pair features (question part, passage part) for SQuAD v1.1/v2.0,
RACE and BoolQ, the CLI (finetune from a BERT checkpoint with a layer split, evaluate in another backend),
training parity of the deformer heads, distillation from a full model, and bad input.

Features are checked against the base model's own features of the same text: the question part followed by the
passage part, without the padding between them, is the base model's pair encoding (ids and token types).
"""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pytest

from backends.spec import InputSpec
from tasks.data.boolq import boolq_features
from tasks.data.features import PairExample
from tasks.data.race import RaceExample, option_text, race_features
from tasks.data.split_pair import PartLayout, join_parts, reads_split_pair, student_layout, window_starts
from tasks.data.squad import SquadAnswer, SquadExample, postprocess_squad, squad_features
from tasks.train.task import Options, Split, make_task

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def deformer_inputs(choices: bool = False) -> tuple:
    """The DeFormer's declared inputs (/work/notes/interfaces.md "Inputs"), in forward() order."""
    axes = ("batch", "choices", "seq") if choices else ("batch", "seq")
    return tuple(InputSpec(f"{part}_{feature}", "int64", axes, feature, text)
                 for part, text in (("question", "a"), ("passage", "b")) for feature in FEATURES)


SPLIT_CONFIG = SimpleNamespace(max_question_length=16)  # what reads_split_pair looks at


def joined(features: dict, row) -> tuple[list, list]:
    """(ids, token types) of the question part then the passage part of one row, each without its padding."""
    ids, types = [], []
    for part in ("question", "passage"):
        mask = features[f"{part}_attention_mask"][row].astype(bool)
        ids += features[f"{part}_input_ids"][row][mask].tolist()
        types += features[f"{part}_token_type_ids"][row][mask].tolist()
    return ids, types


def base_row(features: dict, row) -> tuple[list, list]:
    mask = features["input_ids"][row] != 0
    return features["input_ids"][row][mask].tolist(), features["token_type_ids"][row][mask].tolist()


CONTEXT = ("the cat sat on the mat . the dog sat on the cat . a man went to the city and the woman went home "
           "after school . he read a book , she wrote a long story about the old company .")
QUESTIONS = (("q1", "where did the dog sit ?", "on the cat"),
             ("q2", "what did she write about ?", "the old company"),
             ("q3", "who went home after school and why did the man go to the city ?", "the woman"),
             ("q4", "when did the cat sit on the mat ?", None))  # unanswerable (v2.0)


def squad_examples(version_2=False):
    examples = []
    for qas_id, question, answer in QUESTIONS:
        if answer is None and not version_2:
            continue
        answers = () if answer is None else (SquadAnswer(answer, CONTEXT.index(answer)),)
        examples.append(SquadExample(qas_id, "t", question, CONTEXT, answers, answer is None))
    return examples


def write_squad(path, examples):
    """A SQuAD JSON file of the examples (gzipped when the name ends in .gz); one paragraph per context."""
    paragraphs = {}
    for e in examples:
        paragraphs.setdefault(e.context, []).append(
            {"id": e.qas_id, "question": e.question, "is_impossible": e.is_impossible,
             "answers": [{"text": a.text, "answer_start": a.start} for a in e.answers]})
    data = {"version": "2.0", "data": [{"title": "t", "paragraphs": [{"context": c, "qas": q}
                                                                     for c, q in paragraphs.items()]}]}
    text = json.dumps(data).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def test_the_rebuilt_squad_train_file_is_found_gzipped(tmp_path):
    """../shared/data/squad/train-v1.1.reconstructed.json.gz: found in --data-dir and read through gzip."""
    examples = squad_examples()
    path = write_squad(tmp_path / "train-v1.1.reconstructed.json.gz", examples)
    task = make_task("squad", tmp_path)
    assert task.path("train") == path
    from tasks.data.squad import read_squad
    assert read_squad(path) == examples


def test_the_layout_is_read_from_the_tokenizer(make_tokenizer):
    layout = PartLayout.from_tokenizer(make_tokenizer())
    assert [i for i, _ in layout.question_prefix] == [2] and [i for i, _ in layout.question_suffix] == [3]  # CLS, SEP
    assert layout.passage_prefix == () and [i for i, _ in layout.passage_suffix] == [3]
    assert (layout.question_type, layout.passage_type) == (0, 1)
    assert reads_split_pair(SPLIT_CONFIG, deformer_inputs())
    assert not reads_split_pair(SimpleNamespace(), deformer_inputs())
    assert not reads_split_pair(SPLIT_CONFIG, (InputSpec("input_ids", "int64", ("batch", "seq"), "input_ids"),))


def test_window_starts_are_transformers_overflow():
    assert window_starts(5, 8, 2) == [0]
    assert window_starts(10, 4, 1) == [0, 3, 6]  # [0, 4) [3, 7) [6, 10)
    assert window_starts(11, 4, 1) == [0, 3, 6, 9]


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_windows_join_to_the_base_models_windows(make_tokenizer, version_2, tmp_path):
    """Each window's [question part; passage part] is the base model's window of the same question; the span
    targets point at the same tokens; unanswerable windows point at the question's first token."""
    examples = squad_examples(version_2)
    tokenizer = make_tokenizer([CONTEXT] + [q for _, q, _ in QUESTIONS])
    path = write_squad(tmp_path / "dev.json.gz", examples)
    task = make_task("squad_v2" if version_2 else "squad", files={"dev": path},
                     options=Options(max_seq_length=12, doc_stride=4, max_query_length=6, split_pair=True))
    split = task.load("dev", tokenizer, None, deformer_inputs())
    windows = split.windows
    features = split.inputs
    question_width = features["question_input_ids"].shape[1]
    assert question_width == 6 + 2 and features["passage_input_ids"].shape[1] == 12  # ragged: padded to the longest
    context_tokens = len(tokenizer(CONTEXT, add_special_tokens=False)["input_ids"])
    per_example = len(window_starts(context_tokens, 11, 4))
    assert len(windows) == per_example * len(examples)
    for index, example in enumerate(examples):
        # the base model with the same question length in its window: max_seq_length = question part + passage part
        question_tokens = min(6, len(tokenizer(example.question, add_special_tokens=False)["input_ids"]))
        base = squad_features([example], tokenizer, max_seq_length=question_tokens + 2 + 12, doc_stride=4,
                              max_query_length=6)
        rows = np.flatnonzero(windows.example_index == index)
        assert len(rows) == len(base)
        for window, row in enumerate(rows):
            assert joined(features, row) == base_row(base.inputs, window)
            # positions: the base's positions with the question part's padding in between
            shift = question_width - (question_tokens + 2)
            for name in ("start_positions", "end_positions"):
                expected = base.inputs[name][window]
                assert features[name][row] == (0 if expected == 0 else expected + shift)
            # offsets over the joint sequence: the base window's, at the same tokens
            real = np.concatenate([features["question_attention_mask"][row], features["passage_attention_mask"][row]])
            np.testing.assert_array_equal(windows.offsets[row][real.astype(bool)],
                                          base.offsets[window][base.inputs["attention_mask"][window].astype(bool)])
        if not example.answers:
            assert (features["start_positions"][rows] == 0).all() and (features["end_positions"][rows] == 0).all()
    answered = [i for i, e in enumerate(examples) if e.answers]
    assert any(features["start_positions"][windows.example_index == i].max() > 0 for i in answered)
    # decoding maps logits over the joint sequence back to passage characters
    start = np.full(windows.offsets.shape[:2], -5.0)
    end = start.copy()
    for row in range(len(windows)):
        if features["start_positions"][row] > 0:
            start[row, features["start_positions"][row]] = end[row, features["end_positions"][row]] = 5.0
        else:
            start[row, 0] = end[row, 0] = 9.0 if version_2 else -9.0
    answers, _ = postprocess_squad(examples, windows, start, end, version_2=version_2)
    assert answers == {e.qas_id: e.answers[0].text if e.answers else "" for e in examples}


def test_boolq_parts_join_to_the_base_pair_and_are_ragged(make_tokenizer):
    examples = [PairExample("b-0", "is the cat on the mat", "the cat sat on the mat .", "True"),
                PairExample("b-1", "did he go", "he went to the city and read a long book about the world .",
                            "False")]
    tokenizer = make_tokenizer([e.text_a + " " + e.text_b for e in examples])
    task = make_task("boolq", options=Options(max_seq_length=32, max_query_length=10, split_pair=True))
    features = task.features(Split({}, examples), tokenizer, deformer_inputs())
    base = boolq_features(examples, tokenizer, 64)
    for row in range(2):
        assert joined(features, row) == base_row(base, row)
    lengths = features["passage_attention_mask"].sum(1)
    assert lengths[0] < lengths[1] == features["passage_attention_mask"].shape[1]  # padded at the end only
    assert features["passage_attention_mask"][0, lengths[0]:].sum() == 0
    assert features["question_attention_mask"].sum(1).tolist() == [8, 5]
    assert features["labels"].tolist() == [1, 0]


def test_race_parts_carry_the_choices_axis(make_tokenizer):
    article = "the man went to the city . he read a book ."
    examples = [RaceExample("r-1", article, "where did the man go ?", ("home", "the city", "school", "the mat"), 1),
                RaceExample("r-2", article, "he read a _ .", ("book", "story", "cat", "dog"), 0)]
    tokenizer = make_tokenizer([article, "where did the man go ? home city school mat he read a book story"])
    task = make_task("race", options=Options(max_seq_length=20, max_query_length=12, split_pair=True))
    features = task.features(Split({}, examples), tokenizer, deformer_inputs(choices=True))
    assert features["question_input_ids"].shape[:2] == (2, 4) and features["passage_input_ids"].shape[:2] == (2, 4)
    base = race_features(examples, tokenizer, 40)  # the base reads (article, question with option)
    for example in range(2):
        for choice in range(4):
            ids, _ = joined({k: v[example] for k, v in features.items() if k != "labels"}, choice)
            question = tokenizer(option_text(examples[example].question, examples[example].options[choice]),
                                 add_special_tokens=False)["input_ids"]
            passage = tokenizer(article, add_special_tokens=False)["input_ids"]
            assert ids == [2, *question, 3, *passage, 3]
            assert sorted(ids) == sorted(base_row({k: v[example] for k, v in base.items()}, choice)[0])
    assert features["labels"].tolist() == [1, 0]


def test_an_empty_passage_is_refused_naming_the_example(make_tokenizer, tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"question": "is it", "passage": "\u200b", "answer": True}) + "\n")
    task = make_task("boolq", options=Options(split_pair=True), files={"dev": path})
    with pytest.raises(ValueError, match=r"dev.jsonl: dev-0: the passage is empty"):
        task.load("dev", make_tokenizer(), None, deformer_inputs())


def test_joined_parts_are_the_base_pair_and_positions_map_back(make_tokenizer):
    """A joint teacher's inputs (tasks/distill.py): the parts' real tokens then the padding; `positions` maps each
    position of [question part; passage part] into them (-1 at padding) and student_layout gathers through it."""
    examples = [PairExample("b-0", "is the cat on the mat", "the cat sat .", "True"),
                PairExample("b-1", "did he go", "he went to the city and read a long book .", "False")]
    tokenizer = make_tokenizer([e.text_a + " " + e.text_b for e in examples])
    features = make_task("boolq", options=Options(max_seq_length=32, max_query_length=10, split_pair=True)).features(
        Split({}, examples), tokenizer, deformer_inputs())
    parts = [{feature: features[f"{part}_{feature}"] for feature in FEATURES} for part in ("question", "passage")]
    joint, positions = join_parts(*parts)
    base = boolq_features(examples, tokenizer, 64)
    width = joint["input_ids"].shape[1]
    assert width == parts[0]["input_ids"].shape[1] + parts[1]["input_ids"].shape[1]
    for feature in FEATURES:
        np.testing.assert_array_equal(joint[feature], base[feature][:, :width])
    split_ids = np.concatenate([parts[0]["input_ids"], parts[1]["input_ids"]], axis=1)
    back = student_layout(joint["input_ids"], positions, -1)
    np.testing.assert_array_equal(back, np.where(positions >= 0, split_ids, -1))
    states = np.stack([joint["input_ids"], -joint["input_ids"]], axis=-1).astype(float)  # [rows, T, 2]
    np.testing.assert_array_equal(student_layout(states, positions, 0.0)[..., 1], -np.where(positions >= 0, split_ids,
                                                                                           0))


def test_span_and_hidden_state_distillation_losses_match_numpy(backend):
    """teachsl over start and end logits, teachhs over the real tokens, mixed with the hard span loss."""
    from backends import framework
    from tasks.distill import HIDDEN_WEIGHTS, TEACHER, hidden_mse_weights, prediction_loss
    from tasks.train import step_module

    rng = np.random.default_rng(0)
    rows, seq, width, T, alpha, weight = 3, 7, 4, 2.0, 0.4, 0.7
    student = {name: rng.normal(size=(rows, seq)) for name in ("start_logits", "end_logits")}
    student["last_hidden_state"] = rng.normal(size=(rows, seq, width))
    teacher = {TEACHER + name: rng.normal(size=array.shape) for name, array in student.items()}
    mask = (np.arange(seq)[None] < np.array([[7], [4], [2]])).astype(np.int64)
    batch = {**teacher, "start_positions": np.array([0, 3, 1]), "end_positions": np.array([2, 3, 1]),
             HIDDEN_WEIGHTS: hidden_mse_weights(mask, width)}

    def log_softmax(x):
        return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))

    soft = np.mean([np.mean(-(np.exp(log_softmax(teacher[TEACHER + n] / T)) * log_softmax(student[n] / T)).sum(-1))
                    * T * T for n in ("start_logits", "end_logits")])
    hard = np.mean([-np.mean(log_softmax(student[n])[np.arange(rows), batch[p]])
                    for n, p in (("start_logits", "start_positions"), ("end_logits", "end_positions"))])
    real = mask.astype(bool)
    hidden = np.mean((student["last_hidden_state"] - teacher[TEACHER + "last_hidden_state"])[real] ** 2)
    fw = framework(backend)
    tensor = lambda a: fw.from_numpy(np.asarray(a), None if a.dtype.kind == "i" else "float64")  # noqa: E731
    loss = prediction_loss(T, alpha, "ce", False, outputs=("start_logits", "end_logits"), hard="span",
                           hidden_weight=weight)
    value = loss(step_module(backend).OPS, {k: tensor(v) for k, v in student.items()},
                 {k: tensor(v) for k, v in batch.items()})
    assert float(fw.to_numpy(value)) == pytest.approx(alpha * soft + (1 - alpha) * hard + weight * hidden, rel=1e-12)


# ---- the command line --------------------------------------------------------------------------------------

SMALL = ["--max-seq-length", "24", "--doc-stride", "8", "--no-progress", "--dtype", "float64"]
SPLIT = ["--encoder2-layers", "0", "--assist-layers", "1", "--encoder3-layers", "1",
         "--config-overrides", "max_question_length=10"]
TRAIN = ["--do-train", "--epochs", "2", "--batch-size", "2", "--learning-rate", "1e-3"]


def run(capsys, *argv) -> tuple[int, str, str]:
    from tasks.__main__ import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny 2-layer BERT (config.json and vocab.txt: the numpy init) that the split turns into a DeFormer."""
    from .test_train_support import write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("bert"), "bert", num_hidden_layers=2)


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    from .test_train_support import write_squad as write_squad_files

    return write_squad_files(tmp_path_factory.mktemp("squad"))


def test_finetune_a_bert_folder_as_a_deformer_in_every_backend_and_evaluate_anywhere(bert_folder, squad_dir, tmp_path,
                                                                                      capsys):
    """A BERT folder with a layer split trains as the same DeFormer in every backend (float64: the same weights);
    the saved deformer folder evaluates in every backend to the same scores."""
    from backends.tensorfile import SafetensorsReader

    from ..conftest import BACKENDS
    from .test_train_support import max_weight_diff

    weights = {}
    for backend in BACKENDS:
        out = tmp_path / backend
        code, stdout, err = run(capsys, "finetune", "--task", "squad", "--model", bert_folder, "--backend", backend,
                                "--data-dir", squad_dir, "--output-dir", out, "--do-eval", *TRAIN, *SPLIT, *SMALL)
        assert code == 0, err
        config = json.loads((out / "config.json").read_text())
        assert (config["parity_family"], config["model_type"]) == ("deformer", "bert")
        assert [config[k] for k in ("encoder2_layers", "assist_layers", "encoder3_layers")] == [0, 1, 1]
        weights[backend] = dict(SafetensorsReader(out / "model.safetensors"))
        assert max_weight_diff(weights[backend], weights[BACKENDS[0]]) <= 1e-8, backend
    trained = json.loads((tmp_path / BACKENDS[0] / "eval_results.json").read_text())
    assert set(trained) >= {"eval_f1", "eval_exact_match"}
    for backend in BACKENDS:  # the folder is a deformer now: no split options needed
        code, stdout, err = run(capsys, "evaluate", "--task", "squad", "--model", tmp_path / BACKENDS[0], "--backend",
                                backend, "--data-dir", squad_dir, *SMALL)
        assert code == 0, err
        assert json.loads(stdout) == pytest.approx(trained, abs=1e-9), backend


@pytest.mark.parametrize("task", ["squad_v2", "race", "boolq"])
def test_finetune_a_deformer_on_each_task(task, bert_folder, tmp_path, capsys):
    from ..conftest import BACKENDS
    from .test_train_support import write_boolq, write_race
    from .test_train_support import write_squad as write_squad_files

    writers = {"squad_v2": lambda d: write_squad_files(d, version_2=True), "race": write_race, "boolq": write_boolq}
    data = writers[task](tmp_path / "data")
    code, stdout, err = run(capsys, "finetune", "--task", task, "--model", bert_folder, "--backend", BACKENDS[0],
                            "--data-dir", data, "--output-dir", tmp_path / "out", "--do-eval", *TRAIN,
                            "--max-steps", "2", "--config-overrides",
                            "encoder2_layers=1,assist_layers=1,encoder3_layers=0,max_question_length=10", *SMALL)
    assert code == 0, err
    results = json.loads(stdout)
    assert results["global_step"] == 2 and ("eval_f1" if task == "squad_v2" else "eval_acc") in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["encoder2_layers"], config["assist_layers"], config["encoder3_layers"]) == (1, 1, 0)


@pytest.mark.parametrize("case,expected", [
    (["--encoder2-layers", "0", "--assist-layers", "1", "--encoder3-layers", "2"],
     "--encoder2-layers 0 + --assist-layers 1 + --encoder3-layers 2 = 3: the split must add up to the model's 2 "
     "layers"),
    (["--config-overrides", "encoder2_layers=1,assist_layers=2,encoder3_layers=0"], "must add up to the model's 2"),
    (["--assist-layers", "1", "--config-overrides", "assist_layers=2"], "--assist-layers 1 and --config-overrides "
                                                                        "assist_layers=2 disagree"),
    ([*SPLIT, "--max-query-length", "9"], "--max-query-length 9: a question part of up to 11 tokens (2 special) "
                                          "exceeds the model's max_question_length 10"),
    ([*SPLIT[:-1], "max_question_length=20"], "--max-seq-length 24: the passage part's positions start at the "
                                              "model's max_question_length 20"),
    ([*SPLIT, "empty-passage"], "dev.jsonl: dev-1: the passage is empty"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(case, expected, bert_folder, tmp_path, capsys):
    from ..conftest import BACKENDS
    from .test_train_support import write_boolq

    data = write_boolq(tmp_path / "data", rows=4)
    if case[-1] == "empty-passage":
        case = case[:-1]
        lines = (data / "val.jsonl").read_text().splitlines()
        lines[1] = json.dumps({"question": "is it", "passage": " \u200b ", "answer": True})
        (data / "dev.jsonl").write_text("\n".join(lines) + "\n")
        (data / "val.jsonl").unlink()
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "finetune", "--task", "boolq", "--model", bert_folder, "--backend", BACKENDS[0],
                            "--data-dir", data, "--output-dir", out, "--do-eval", *TRAIN, *case, *SMALL)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert err.startswith("python -m tasks finetune: error: ") and not out.exists()


# ---- distillation ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def squad_teacher(bert_folder, squad_dir, tmp_path_factory):
    """The tiny BERT fine-tuned on the tiny SQuAD files as a full model: the DeFormer student's teacher."""
    from tasks.__main__ import main

    from ..conftest import BACKENDS

    teacher = tmp_path_factory.mktemp("teacher") / "bert-squad"
    assert main(["finetune", "--task", "squad", "--model", str(bert_folder), "--backend", BACKENDS[0], "--data-dir",
                 str(squad_dir), "--output-dir", str(teacher), *TRAIN, *SMALL]) == 0
    return teacher


def distill_losses(capsys, teacher, student, squad_dir, backend, output, *extra) -> np.ndarray:
    code, stdout, err = run(capsys, "distill", "--task", "squad", "--teacher-model-path", teacher, "--student",
                            student, "--backend", backend, "--data-dir", squad_dir, "--output-dir", output, "--do-eval",
                            *TRAIN, *SMALL, *extra)
    assert code == 0, err
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return np.array([entry["loss"] for entry in history if "loss" in entry])


@pytest.mark.skipif(len(__import__("backends").installed_frameworks()) < 2, reason="needs two backends")
def test_distill_a_deformer_from_a_full_model_in_another_backend(squad_teacher, bert_folder, squad_dir, tmp_path,
                                                                 capsys):
    """teachsl (span logits at temperature 2) and teachhs (last hidden states): the teacher's float64 outputs
    computed in another framework's process give the same losses as in the student's; the loss differs from the
    hard loss alone."""
    from ..conftest import BACKENDS

    options = ["--alpha", "0.5", "--temperature", "2", "--hidden-mse-weight", "0.5", *SPLIT]
    same = distill_losses(capsys, squad_teacher, bert_folder, squad_dir, BACKENDS[0], tmp_path / "same", *options)
    other = distill_losses(capsys, squad_teacher, bert_folder, squad_dir, BACKENDS[0], tmp_path / "other", *options,
                           "--teacher-backend", BACKENDS[-1])
    np.testing.assert_allclose(other, same, rtol=0, atol=1e-8)
    hard = distill_losses(capsys, squad_teacher, bert_folder, squad_dir, BACKENDS[0], tmp_path / "hard", "--alpha",
                          "0", *SPLIT)
    assert np.all(np.isfinite(same)) and np.abs(same - hard).max() > 1e-3
    assert (tmp_path / "other" / "eval" / "predictions.json").is_file()


@pytest.mark.skipif(len(__import__("backends").installed_frameworks()) < 2, reason="needs two backends")
def test_distilling_a_deformer_is_the_same_in_every_backend(squad_teacher, squad_dir, tmp_path, capsys):
    """The SQuAD runs' distill path in float64 (teachsl + teachhs from a full model, the teacher run in the
    student's backend, dropout on with the shared masks): every backend's per-update losses and dev predictions
    are the same, so what separates the backends' float32 runs is float32 rounding, nothing else."""
    from ..conftest import BACKENDS
    from .test_train_support import write_model_folder

    student = write_model_folder(tmp_path / "student", "bert", dropout=True, num_hidden_layers=2)
    options = ["--alpha", "0.5", "--temperature", "2", "--hidden-mse-weight", "1", *SPLIT]
    losses = {backend: distill_losses(capsys, squad_teacher, student, squad_dir, backend, tmp_path / backend,
                                      *options) for backend in BACKENDS}
    predictions = {backend: json.loads((tmp_path / backend / "eval" / "predictions.json").read_text())
                   for backend in BACKENDS}
    assert len(losses[BACKENDS[0]]) >= 4 and np.all(np.isfinite(losses[BACKENDS[0]]))
    for backend in BACKENDS[1:]:
        np.testing.assert_allclose(losses[backend], losses[BACKENDS[0]], rtol=0, atol=1e-12, err_msg=backend)
        assert predictions[backend] == predictions[BACKENDS[0]], backend


def test_distill_race_from_a_deformer_teacher_with_hidden_states(bert_folder, tmp_path, capsys):
    """A deformer 0/0/N folder teaches with the student's own inputs; the hidden-state MSE runs over the choices
    axis (the model's [examples * choices, seq, width] states)."""
    from ..conftest import BACKENDS
    from .test_train_support import write_race

    data = write_race(tmp_path / "data")
    common = ["--task", "race", "--backend", BACKENDS[0], "--data-dir", data, *TRAIN, "--max-steps", "2", *SMALL]
    teacher_split = "encoder2_layers=0,assist_layers=0,encoder3_layers=2,max_question_length=10"
    code, _, err = run(capsys, "finetune", "--model", bert_folder, "--output-dir", tmp_path / "teacher", *common,
                       "--config-overrides", teacher_split)
    assert code == 0, err
    losses = {}
    for name, extra in (("teach", ["--alpha", "0.5", "--hidden-mse-weight", "2"]), ("hard", ["--alpha", "0"])):
        code, _, err = run(capsys, "distill", "--teacher", tmp_path / "teacher", "--student", bert_folder,
                           "--output-dir", tmp_path / name, *common, *SPLIT, *extra)
        assert code == 0, err
        history = json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"]
        losses[name] = np.array([entry["loss"] for entry in history if "loss" in entry])
    assert len(losses["teach"]) == 2 and np.abs(losses["teach"] - losses["hard"]).max() > 1e-3


def test_a_fine_tuned_full_model_starts_a_deformer_with_its_span_head(squad_teacher, bert_folder, squad_dir, capsys):
    """bench/squad_minilm.py's -from-full runs: a BERT folder fine-tuned on SQuAD read with a layer split keeps
    every parameter, its span head included (no note of freshly initialised ones), where a folder without that
    head's weights (here: without any, the numpy init) is reported initialised."""
    from ..conftest import BACKENDS

    for model, fresh in ((squad_teacher, False), (bert_folder, True)):
        code, stdout, err = run(capsys, "evaluate", "--task", "squad", "--model", model, "--backend", BACKENDS[0],
                                "--data-dir", squad_dir, *SPLIT, *SMALL)
        assert code == 0, err
        assert ("initialised fresh" in err) == fresh, err

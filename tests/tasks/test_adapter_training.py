"""Adapter training: a frozen base model computes no gradient, gets no optimizer state and stays bit-identical;
every backend trains the same adapter and head; the CLI's adapter runs, adapter-only folders and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import make_runner, make_trainer, seeded_data, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def head_only(family_name: str, config, head: str) -> frozenset:
    """The task head's parameters: what trains when the base model is frozen and no adapter is added."""
    from backends.checkpoints.adapters import head_names

    return frozenset(head_names(family(family_name).param_shapes(config, head), family_name, config))


def computed_gradients(runner) -> set:
    """The canonical names whose gradient the last forward_backward computed (framework by framework)."""
    if hasattr(runner, "grads"):  # tf: the accumulated gradients of the watched variables
        return {names[0] for names, g in zip(runner.names, runner.grads) if g is not None}
    return {name for name, param in runner.params.items() if param.grad is not None}  # torch, paddle


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_parameters_get_no_gradient_no_state_and_stay_bit_identical(backend, tmp_path):
    config = tiny_config("bert")
    trainable = head_only("bert", config, "seqcls")
    assert trainable == {"classifier.weight", "classifier.bias"}
    runner = make_runner(backend, "bert", config, "seqcls", "float64", trainable=trainable)
    assert runner.trainable == trainable
    initial = {name: array.copy() for name, array in runner.get_params().items()}  # torch's may be views
    data = seeded_data("bert", config, "seqcls", rows=16)
    trainer = make_trainer(runner, data, tmp_path, max_steps=5, batch_size=4, learning_rate=1e-2, weight_decay=0.1)
    from tasks.train.losses import LOSSES

    runner.forward_backward({k: v[:4] for k, v in data.items()}, LOSSES["classification"])
    assert computed_gradients(runner) == trainable
    runner.discard_gradients()
    trainer.train()
    trained = runner.get_params()
    for name in initial:
        if name in trainable:
            assert not np.array_equal(trained[name], initial[name]), name
        else:  # bit-identical: no update, no weight decay
            assert trained[name].tobytes() == initial[name].tobytes(), name
    state = runner.optimizer_state()
    assert {key.partition(".")[2] for key in state} == trainable


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_trainable_name_is_refused(backend):
    with pytest.raises(ValueError, match="does not have: classifier.weights"):
        make_runner(backend, "bert", tiny_config("bert"), "seqcls", "float64", trainable={"classifier.weights"})


def test_head_names_of_each_family():
    assert head_only("funnel", tiny_config("funnel"), "qa") == {"qa_outputs.weight", "qa_outputs.bias"}
    assert head_only("roberta", tiny_config("roberta"), "seqcls") == {
        "classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert head_only("bert", tiny_config("bert"), "base") == frozenset()  # a bare body has no head


@pytest.mark.parametrize("family_name,adapter", [
    ("bert", "seq_bn[reduction_factor=4]"), ("bert", "lora[r=4,alpha=8,intermediate_lora=True]"),
    ("funnel", "par_bn[reduction_factor=4]"),
])
def test_adapter_training_is_the_same_in_every_backend(family_name, adapter, tmp_path):
    """20 AdamW updates of the adapter and head, base frozen, dropout on (shared masks), float64: the same losses
    and weights in every backend, and the base model bit-identical to its start."""
    from .test_train_parity import TRAIN_SHAPES, assert_same_training
    from tasks.train.adapters import trainable_names

    config = tiny_config(family_name, dropout=True, adapter=adapter, **TRAIN_SHAPES.get(family_name, {}))
    params = family(family_name).init_params(config, "seqcls", np.random.default_rng(0))
    trainable = trainable_names(params, family_name, config)
    assert any(".adapters.adapter." in name or ".loras.adapter." in name for name in trainable)
    initial, trained = assert_same_training(family_name, config, "seqcls", "float64", 1e-2, 1e-8, tmp_path,
                                            params=params, trainable=trainable)
    assert all(trained[name].tobytes() == initial[name].tobytes() for name in initial if name not in trainable)
    assert max(np.abs(trained[name] - initial[name]).max() for name in trainable if "adapter" in name) > 1e-4


# ---- the command line: adapter runs, adapter-only folders, bad input -------------------------------------

SMALL = ["--max-seq-length", "32", "--no-progress", "--batch-size", "4", "--learning-rate", "1e-2"]
LAYOUT = {"adapter_config.json", "head_config.json", "adapter.safetensors", "model_head.safetensors"}


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A tiny BERT checkpoint (weights, config.json, vocab.txt) with a pooler and no task head, dropout on."""
    from tasks.data.features import load_tokenizer
    from tasks.train.model import load_model, save_model

    from .test_train_support import write_model_folder

    config_only = write_model_folder(tmp_path_factory.mktemp("config"), "bert", dropout=True)
    source = load_model(str(config_only), "base", seed=7)
    folder = tmp_path_factory.mktemp("base")
    save_model(folder, source, source.params, load_tokenizer(config_only))
    return folder


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    from .test_train_support import write_glue

    return write_glue(tmp_path_factory.mktemp("glue"), "sst-2")


def run(capsys, *argv) -> tuple[int, str, str]:
    from tasks.__main__ import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def finetune(capsys, base_folder, glue_dir, out, *extra, backend=BACKENDS[0]):
    return run(capsys, "finetune", "--task", "sst-2", "--model", base_folder, "--backend", backend, "--data-dir",
               glue_dir, "--output-dir", out, *SMALL, *extra)


def test_adapter_run_saves_the_adapter_and_head_alone(base_folder, glue_dir, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    code, stdout, err = finetune(capsys, base_folder, glue_dir, out, "--do-train", "--do-eval", "--max-steps", 6,
                                 "--train-adapter", "--adapter-config", "seq_bn[reduction_factor=4]",
                                 "--adapter-name", "sst2", "--save-steps", 3)
    assert code == 0, err
    # 2 layers x (16*4 + 4 + 4*16 + 16) adapter + 2*16 + 2 classifier; of those and the 9,728 of BERT with its pooler
    assert "trainable parameters: 330 of 10,058 (3.28%)" in err, err
    assert LAYOUT <= {p.name for p in out.iterdir()} and not (out / "model.safetensors").exists()
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["name"] == "sst2" and saved["config"]["reduction_factor"] == 4 and saved["version"] == "adapters.1.3.0"
    from backends.tensorfile import SafetensorsReader

    assert sorted(SafetensorsReader(out / "model_head.safetensors")) == ["classifier.bias", "classifier.weight"]
    assert all(".adapters.sst2." in key for key in SafetensorsReader(out / "adapter.safetensors"))
    eval_acc = json.loads(stdout)["eval_acc"]

    # evaluate: the base model plus the adapter folder scores what the run scored
    code, stdout, err = run(capsys, "evaluate", "--task", "sst-2", "--model", base_folder, "--load-adapter", out,
                            "--backend", BACKENDS[-1], "--data-dir", glue_dir, "--max-seq-length", 32, "--no-progress")
    assert code == 0, err
    assert json.loads(stdout)["eval_acc"] == eval_acc

    # resume from the checkpoint at step 3: the same adapter as the uninterrupted run
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(out / "checkpoint-3", resumed / "checkpoint-3")
    code, _, err = finetune(capsys, base_folder, glue_dir, resumed, "--do-train", "--max-steps", 6, "--train-adapter",
                            "--adapter-config", "seq_bn[reduction_factor=4]", "--adapter-name", "sst2",
                            "--save-steps", 3, "--resume")
    assert code == 0, err
    for file in ("adapter.safetensors", "model_head.safetensors"):
        assert (resumed / file).read_bytes() == (out / file).read_bytes(), file


def test_the_adapters_library_loads_the_folder(base_folder, glue_dir, tmp_path, capsys):
    """adapters 1.3's BertForSequenceClassification (adapters.init) loads the folder with no missing or unexpected
    key and computes our logits (float32)."""
    adapters = pytest.importorskip("adapters")
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    out = tmp_path / "out"
    code, _, err = finetune(capsys, base_folder, glue_dir, out, "--do-train", "--do-eval", "--max-steps", 4,
                            "--train-adapter", "--adapter-config", "double_seq_bn", "--backend", "torch")
    assert code == 0, err
    model = BertForSequenceClassification.from_pretrained(str(base_folder), num_labels=2)
    adapters.init(model)
    info = {}
    name = model.load_adapter(str(out), use_safetensors=True, loading_info=info, set_active=True)
    assert name == "adapter" and info == {"missing_keys": [], "unexpected_keys": []}
    model.eval()
    from tasks.data.features import load_tokenizer
    from tasks.train.model import load_model
    from tasks.train.adapters import AdapterSetup
    from backends.checkpoints.adapters import read_adapter_folder
    from tasks.train.model import attach_adapter

    def base_model_not_needed():  # our folders carry their model config: the base is opened only for library folders
        raise AssertionError("read_adapter_folder opened the base model for a folder of ours")

    stored = read_adapter_folder(out, base=base_model_not_needed)
    source = attach_adapter(load_model(str(base_folder), "seqcls", 2, adapter=AdapterSetup(stored.adapter)),
                            AdapterSetup(stored.adapter), stored, str(base_folder))
    from tasks.train import runner_class

    runner = runner_class("torch")(source.family, source.config, source.head, source.params)
    batch = load_tokenizer(base_folder)(["the cat sat on the mat", "a good happy dog"], padding=True,
                                        return_tensors="np")
    ours = runner.predict({key: batch[key].astype(np.int64) for key in runner.input_names})["logits"]
    with torch.no_grad():
        theirs = model(**{key: torch.from_numpy(batch[key]) for key in runner.input_names}).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert np.abs(ours).max() > 1e-3


@pytest.fixture(scope="module")
def trained_adapter(base_folder, glue_dir, tmp_path_factory):
    """The adapter-only folder of one seq_bn update on the tiny BERT (what the bad-input cases load or misuse)."""
    from tasks.__main__ import main

    folder = tmp_path_factory.mktemp("trained") / "adapter"
    assert main([str(a) for a in ("finetune", "--task", "sst-2", "--model", base_folder, "--backend", BACKENDS[0],
                                  "--data-dir", glue_dir, "--output-dir", folder, *SMALL,
                                  "--do-train", "--max-steps", 1, "--train-adapter", "--adapter-config",
                                  "seq_bn")]) == 0
    return folder


@pytest.mark.parametrize("case,expected", [
    ("no config", "--train-adapter needs --adapter-config"),
    ("unknown method", "unknown adapter 'seq_bnn'"),
    ("unknown key", "unknown key 'reduction'"),
    ("config without training", "--adapter-config is for --train-adapter"),
    ("bad name", "adapter name 'my-adapter'"),
    ("not an adapter folder", "not an adapter folder"),
    ("adapter folder as model", "is an adapter-only folder"),
    ("other hidden size", "hidden_size 16, num_hidden_layers 2; --model"),
    ("other layer count", "num_hidden_layers 2; --model"),
])
def test_bad_adapter_input_gives_one_line_and_exit_2(case, expected, base_folder, glue_dir, trained_adapter, tmp_path,
                                                    capsys):
    flags = ["--do-train", "--max-steps", 1]
    adapter = ["--train-adapter", "--adapter-config", "seq_bn"]
    model = base_folder
    if case == "no config":
        adapter = ["--train-adapter"]
    elif case == "unknown method":
        adapter = ["--train-adapter", "--adapter-config", "seq_bnn"]
    elif case == "unknown key":
        adapter = ["--train-adapter", "--adapter-config", "seq_bn[reduction=4]"]
    elif case == "config without training":
        adapter = ["--adapter-config", "seq_bn"]
    elif case == "bad name":
        adapter += ["--adapter-name", "my-adapter"]
    elif case == "not an adapter folder":
        adapter += ["--load-adapter", base_folder]
    elif case in ("adapter folder as model", "other hidden size", "other layer count"):
        trained = trained_adapter
        if case == "adapter folder as model":
            model = trained
        else:
            from .test_train_support import write_model_folder

            change = {"hidden_size": 8} if case == "other hidden size" else {"num_hidden_layers": 3}
            model = write_model_folder(tmp_path / "other", "bert", **change)
            adapter += ["--load-adapter", trained]
    code, _, err = finetune(capsys, model, glue_dir, tmp_path / "out", *flags, *adapter)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_finetune_continues_a_loaded_adapter(base_folder, glue_dir, tmp_path, capsys):
    """--load-adapter in finetune: without --do-train it scores the folder as evaluate does; with --train-adapter
    training starts from it (its name and config kept); --help lists the adapter options."""
    import json

    from backends.checkpoints.adapters import read_adapter_folder

    first = tmp_path / "first"
    code, stdout, err = finetune(capsys, base_folder, glue_dir, first, "--do-train", "--do-eval", "--max-steps", 3,
                                 "--train-adapter", "--adapter-config", "lora[r=2]", "--adapter-name", "probe")
    assert code == 0, err
    scored = tmp_path / "scored"
    code, again, err = finetune(capsys, base_folder, glue_dir, scored, "--do-eval", "--load-adapter", first)
    assert code == 0, err
    assert json.loads(again)["eval_acc"] == json.loads(stdout)["eval_acc"]
    second = tmp_path / "second"
    code, _, err = finetune(capsys, base_folder, glue_dir, second, "--do-train", "--max-steps", 2,
                            "--train-adapter", "--load-adapter", first)
    assert code == 0, err
    before, after = read_adapter_folder(first), read_adapter_folder(second)
    assert (after.name, after.adapter) == ("probe", "lora[r=2]")
    assert any(not np.array_equal(after.params[k], before.params[k]) for k in before.params)
    from tasks.__main__ import main

    assert main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--train-adapter", "--adapter-config", "--adapter-name", "--load-adapter"))

"""Adapter folders saved by the `adapters` library itself (no "parity" key): read given the base model, in every
backend they give the library's logits, `tasks evaluate --load-adapter` scores them; what is not read is refused
in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
SENTENCES = ["the cat sat on the mat", "a good happy dog", "nothing at all"]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A tiny BERT checkpoint with a pooler and no task head (dropout off)."""
    from tasks.data.features import load_tokenizer
    from tasks.train.model import load_model, save_model

    from .test_train_support import write_model_folder

    config_only = write_model_folder(tmp_path_factory.mktemp("config"), "bert")
    source = load_model(str(config_only), "base", seed=3)
    folder = tmp_path_factory.mktemp("base")
    save_model(folder, source, source.params, load_tokenizer(config_only))
    return folder


def library_folder(base_folder, out, config: str, num_labels: int = 3, **save):
    """What a user of the library writes: a transformers task class with adapters.init, adapter `lib` added
    and trained (here: its weights and the head's drawn at random), saved with its head. Returns the model."""
    adapters = pytest.importorskip("adapters")
    torch = pytest.importorskip("torch")
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(str(base_folder), num_labels=num_labels)
    adapters.init(model)
    model.add_adapter("lib", config=config)
    model.train_adapter("lib")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:  # the adapter and the head: non-trivial values (LoRA's B starts at 0)
                param.copy_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    model.save_adapter(str(out), "lib", with_head=True, **save)
    model.eval()
    return model


@pytest.mark.parametrize("config,save", [("seq_bn[reduction_factor=4]", {"use_safetensors": True}),
                                         ("lora[r=2, alpha=4]", {}),  # the library's default torch .bin files
                                         ("double_seq_bn", {"use_safetensors": True})])
def test_library_folder_gives_the_library_logits_in_every_backend(config, save, base_folder, tmp_path):
    torch = pytest.importorskip("torch")
    from backends.adapters import parse_adapter_config
    from backends.checkpoints.adapters import read_adapter_folder
    from tasks.data.features import load_tokenizer
    from tasks.train import runner_class
    from tasks.train.adapters import AdapterSetup
    from tasks.train.model import attach_adapter, load_model, model_family_and_config

    out = tmp_path / "library"
    model = library_folder(base_folder, out, config, **save)
    assert "parity" not in json.loads((out / "adapter_config.json").read_text())
    stored = read_adapter_folder(out, base=lambda: model_family_and_config(str(base_folder)))
    assert (stored.name, stored.head, stored.config.num_labels) == ("lib", "seqcls", 3)
    assert parse_adapter_config(stored.adapter) == parse_adapter_config(config)
    batch = load_tokenizer(base_folder)(SENTENCES, padding=True, return_tensors="np")
    with torch.no_grad():
        theirs = model(**{key: torch.from_numpy(value) for key, value in batch.items()}).logits.numpy()
    setup = AdapterSetup(stored.adapter, stored.name)
    source = attach_adapter(load_model(str(base_folder), "seqcls", 3, adapter=setup), setup, stored,
                            str(base_folder))
    assert not source.fresh
    for backend in BACKENDS:
        runner = runner_class(backend)(source.family, source.config, source.head, source.params)
        ours = runner.predict({key: batch[key].astype(np.int64) for key in runner.input_names})["logits"]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=backend)
    assert np.abs(theirs).max() > 1e-2


def test_evaluate_loads_a_library_folder(base_folder, tmp_path, capsys):
    """`tasks evaluate --load-adapter` on the library's folder scores what the library's model predicts."""
    torch = pytest.importorskip("torch")
    from tasks.__main__ import main
    from tasks.data.features import load_tokenizer

    from .test_train_support import write_glue

    out = tmp_path / "library"
    model = library_folder(base_folder, out, "seq_bn[reduction_factor=4]", num_labels=2, use_safetensors=True)
    data = write_glue(tmp_path / "glue", "sst-2")
    code = main(["evaluate", "--task", "sst-2", "--model", str(base_folder), "--load-adapter", str(out), "--backend",
                 BACKENDS[-1], "--data-dir", str(data), "--max-seq-length", "32", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    rows = [line.split("\t") for line in (data / "dev.tsv").read_text().splitlines()[1:]]
    batch = load_tokenizer(base_folder)([text for text, _ in rows], padding=True, truncation=True, max_length=32,
                                        return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).numpy()
    expected = float(np.mean(predicted == np.array([int(label) for _, label in rows])))
    assert json.loads(stdout)["eval_acc"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("case,expected", [
    ("no base", "a folder saved by the adapters library is read given its base model"),
    ("flex head", "a flex head of BertAdapterModel"),
    ("other family class", "model_class 'RobertaForSequenceClassification' is not a bert task class"),
    ("prefix tuning", "architecture 'prefix_tuning' is not computed here"),
    ("unknown key", "unknown key 'reduction'"),
    ("no head", "an adapter saved without its head"),
    ("other hidden size", "hidden_size 8; the base model has hidden_size 16"),
])
def test_library_folders_we_do_not_read_are_refused_in_one_line(case, expected, base_folder, tmp_path):
    from backends.checkpoints.adapters import read_adapter_folder
    from backends.errors import BadInput
    from tasks.train.model import model_family_and_config

    out = tmp_path / "library"
    library_folder(base_folder, out, "seq_bn", use_safetensors=True)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    head_config = json.loads((out / "head_config.json").read_text())
    if case == "flex head":
        head_config.update(model_class="BertAdapterModel", config={"head_type": "classification", "num_labels": 3})
    elif case == "other family class":
        head_config["model_class"] = "RobertaForSequenceClassification"
    elif case == "prefix tuning":
        adapter_config["config"] = {"architecture": "prefix_tuning", "prefix_length": 30}
    elif case == "unknown key":
        adapter_config["config"]["reduction"] = 4
    elif case == "no head":
        (out / "head_config.json").unlink()
    elif case == "other hidden size":
        adapter_config["hidden_size"] = 8
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    if (out / "head_config.json").exists():
        (out / "head_config.json").write_text(json.dumps(head_config))
    base = None if case == "no base" else model_family_and_config(str(base_folder))
    with pytest.raises(BadInput) as error:
        read_adapter_folder(out, base=None if base is None else (lambda: base))
    message = str(error.value)
    assert expected in message and "\n" not in message, message

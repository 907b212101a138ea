"""`--model FOLDER`: any checkpoint layout the checkpoint layer reads starts a task, as transformers'
from_pretrained of a task class would: the shared body is taken, the task head initialised, the rest noted."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family
from backends.errors import BadInput
from converters import Options, convert
from tasks.train.model import ModelSource, load_model, save_model

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=40)


def save_hf(folder, class_name, seed=0, **kwargs):
    """A tiny checkpoint saved by transformers' own class, as a hub download looks."""
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(transformers.BertConfig(**TINY), **kwargs)
    model.save_pretrained(folder)
    return {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}


def numpy_init(config, head, seed=0):
    return family("bert").init_params(config, head, np.random.default_rng(seed))


def test_masked_lm_checkpoint_starts_a_classifier(tmp_path):
    stored = save_hf(tmp_path / "mlm", "BertForMaskedLM")
    source = load_model(str(tmp_path / "mlm"), "seqcls", num_labels=3)
    assert source.family == "bert" and source.config.num_labels == 3
    for name, array in source.params.items():
        if name.startswith("bert.encoder") or name.startswith("bert.embeddings"):
            np.testing.assert_array_equal(array, stored[name])
    # BertForMaskedLM has no pooler: it and the classifier get the numpy init, the MLM head is left out
    assert sorted(source.fresh) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias",
                                    "classifier.weight"]
    init = numpy_init(source.config, "seqcls")
    for name in source.fresh:
        np.testing.assert_array_equal(source.params[name], init[name])
    assert {name for name in source.unused if name.startswith("cls.predictions")} >= {
        "cls.predictions.bias", "cls.predictions.transform.dense.weight"}


def test_poolerless_export_starts_a_classifier(tmp_path):
    stored = save_hf(tmp_path / "bare", "BertModel", add_pooling_layer=False)
    source = load_model(str(tmp_path / "bare"), "seqcls", num_labels=2)
    assert sorted(source.fresh) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias",
                                    "classifier.weight"]
    np.testing.assert_array_equal(source.params["bert.embeddings.word_embeddings.weight"],
                                  stored["embeddings.word_embeddings.weight"])
    assert source.unused == []


def test_paddlenlp_folder_gives_the_same_start_as_transformers(tmp_path):
    save_hf(tmp_path / "hf", "BertModel")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(64)) + "\n")
    convert("hf2paddle", tmp_path / "hf", tmp_path / "paddle", Options())
    from_hf = load_model(str(tmp_path / "hf"), "qa")
    from_paddle = load_model(str(tmp_path / "paddle"), "qa")
    assert from_paddle.fresh == from_hf.fresh == ["qa_outputs.weight", "qa_outputs.bias"]
    for name, array in from_hf.params.items():
        np.testing.assert_array_equal(from_paddle.params[name], array)


def test_saved_model_loads_back_exactly(tmp_path):
    config = family("bilstm").presets["bilstm-sst2"].config
    config = family("bilstm").shrink(config)
    params = family("bilstm").init_params(config, "seqcls", np.random.default_rng(3))
    save_model(tmp_path / "saved", ModelSource("bilstm", config, "seqcls", params), params)
    loaded = load_model(str(tmp_path / "saved"), "seqcls", seed=7)
    assert loaded.fresh == [] and loaded.unused == []
    for name, array in params.items():
        np.testing.assert_array_equal(loaded.params[name], array)


def test_a_shifted_tensor_range_is_refused(tmp_path):
    save_hf(tmp_path / "hf", "BertModel")
    weights = tmp_path / "hf" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    header = data[8:8 + header_length].decode()
    # point the first entry's range at bytes of another tensor: the reader must refuse the file
    start = header.index('"data_offsets":[0,') + len('"data_offsets":[')
    end = header.index("]", start)
    first, last = map(int, header[start:end].split(","))
    moved = f"{first + 4},{last + 4}".ljust(end - start)
    data[8 + start:8 + end] = moved.encode()
    weights.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"model\.safetensors: .*(overlapping or shifted|spans)"):
        load_model(str(tmp_path / "hf"), "seqcls")

"""Optional parts and several heads in one checkpoint: a missing pooler is a note (an error with --strict), --head
keeps one head and reports the rest, tied copies are checked, and the checkpoint layer tells which canonical
parameters it holds for any head (what fine-tuning from a pre-training checkpoint needs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends import family
from backends.checkpoints import open_checkpoint
from backends.checkpoints.formats import get as get_format

from .conftest import convert, random_params, tiny_config, write_hf

CONFIG = tiny_config("bert")


def without_pooler(params: dict) -> dict:
    return {name: array for name, array in params.items() if "pooler" not in name}


def test_missing_pooler_is_a_note_and_strict_makes_it_an_error(tmp_path, capsys):
    source = write_hf(tmp_path / "src", "bert", "base", params=without_pooler(random_params("bert", CONFIG, "base")))
    assert convert("hf2paddle", source, tmp_path / "strict", "--strict") == 2
    assert "lacks pooler.dense.weight, pooler.dense.bias: PaddleNLP BertModel will initialise them (--strict)" in \
        capsys.readouterr().err
    assert not (tmp_path / "strict").exists()
    assert convert("hf2paddle", source, tmp_path / "paddle", "--json", tmp_path / "summary.json") == 0
    assert "will initialise" in capsys.readouterr().err
    notes = json.loads((tmp_path / "summary.json").read_text())["notes"]
    assert len(notes) == 1 and "pooler.dense.weight" in notes[0]
    checkpoint = open_checkpoint("paddle", tmp_path / "paddle")
    try:
        assert checkpoint.head == "base" and checkpoint.absent == ["pooler.dense.weight", "pooler.dense.bias"]
        params = checkpoint.params()  # what our ports load: the family's seeded init stands in for the pooler
        init = family("bert").init_params(CONFIG, "base", np.random.default_rng(0))
        assert np.array_equal(params["pooler.dense.weight"], init["pooler.dense.weight"])
        assert set(params) == set(family("bert").param_shapes(CONFIG, "base"))
    finally:
        checkpoint.close()


def test_a_head_that_does_not_use_the_pooler_carries_it(tmp_path, capsys):
    """PaddleNLP's BertForQuestionAnswering holds a pooler; transformers' does not build one: written all the
    same (a note), so that paddle -> hf -> paddle gives it back."""
    params = {**random_params("bert", CONFIG, "qa"),
              **{"bert." + k: v for k, v in random_params("bert", CONFIG, "base").items() if "pooler" in k}}
    source = write_hf(tmp_path / "src", "bert", "qa", params=params)
    assert convert("hf2paddle", source, tmp_path / "paddle") == 0
    assert "does not use" not in capsys.readouterr().err  # PaddleNLP builds it
    assert convert("paddle2hf", tmp_path / "paddle", tmp_path / "hf") == 0
    assert "bert.pooler.dense.weight" in capsys.readouterr().err
    back = get_format("hf").read(tmp_path / "hf")
    assert sorted(back.tensors) == sorted(params)
    back.close()


def test_head_picks_one_and_reports_the_rest(tmp_path, capsys):
    params = random_params("bert", CONFIG, "pretraining")
    source = write_hf(tmp_path / "src", "bert", "pretraining", params=params)
    assert convert("hf2tf", source, tmp_path / "all", "--json", tmp_path / "all.json") == 0
    assert json.loads((tmp_path / "all.json").read_text())["head"] == "pretraining"
    assert convert("hf2tf", source, tmp_path / "mlm", "--head", "mlm", "--json", tmp_path / "mlm.json") == 0
    summary = json.loads((tmp_path / "mlm.json").read_text())
    assert summary["head"] == "mlm"
    assert summary["left_out"] == ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    assert "leaves out 2 parameters of other heads" in capsys.readouterr().err
    # without --head, parameters no head of the family has are still errors
    extra = write_hf(tmp_path / "extra", "bert", "mlm", params={**random_params("bert", CONFIG, "mlm"),
                                                                "cls.foo.weight": np.zeros(2, np.float32)})
    assert convert("hf2tf", extra, tmp_path / "x", "--head", "mlm") == 2
    assert "unexpected keys (1): cls.foo.weight" in capsys.readouterr().err


def test_a_tied_copy_must_match(tmp_path, capsys):
    source = write_hf(tmp_path / "src", "bert", "mlm")
    assert convert("hf2paddle", source, tmp_path / "paddle") == 0
    state = get_format("paddle").read(tmp_path / "paddle")
    arrays = {name: ref.load() for name, ref in state.tensors.items()}
    state.close()
    assert np.array_equal(arrays["cls.predictions.decoder.weight"], arrays["bert.embeddings.word_embeddings.weight"])
    assert np.array_equal(arrays["cls.predictions.decoder.bias"], arrays["cls.predictions.decoder_bias"])
    arrays["cls.predictions.decoder.weight"] = arrays["cls.predictions.decoder.weight"] + 1
    with open(tmp_path / "paddle" / "model_state.pdparams", "wb") as out:
        import pickle

        pickle.dump(arrays, out, protocol=4)
    assert convert("paddle2hf", tmp_path / "paddle", tmp_path / "hf") == 2
    assert "cls.predictions.decoder.weight is a tied copy of bert.embeddings.word_embeddings.weight" in \
        capsys.readouterr().err


def test_untied_decoder_is_a_parameter(tmp_path, capsys):
    config = CONFIG.replace(extra={"tie_word_embeddings": False})
    params = random_params("bert", config, "mlm")
    assert "cls.predictions.decoder.weight" in params
    source = write_hf(tmp_path / "src", "bert", "mlm", config=config, params=params)
    assert convert("hf2paddle", source, tmp_path / "paddle") == 0
    assert convert("paddle2hf", tmp_path / "paddle", tmp_path / "hf") == 0
    back = get_format("hf").read(tmp_path / "hf")
    assert back.tensors["cls.predictions.decoder.weight"].load().tobytes() == \
        params["cls.predictions.decoder.weight"].tobytes()
    back.close()
    assert convert("hf2tf", source, tmp_path / "tf") == 2
    assert "cls.predictions.decoder.weight has no place in transformers TensorFlow's BertForMaskedLM" in \
        capsys.readouterr().err


@pytest.mark.parametrize("stored_head", ["pretraining", "base"])
def test_holds_maps_a_checkpoint_to_any_head(tmp_path, stored_head):
    """Fine-tuning starts a classification head from a pre-training or base checkpoint: the body is held
    (under the head's prefix or without it), the classifier is not."""
    source = write_hf(tmp_path / "src", "bert", stored_head)
    checkpoint = open_checkpoint("hf", source)
    try:
        held = checkpoint.holds("seqcls")
        shapes = family("bert").param_shapes(CONFIG, "seqcls")
        assert sorted(set(shapes) - set(held)) == ["classifier.bias", "classifier.weight"]
        assert all(checkpoint.load(held[name]).shape == shapes[name] for name in held)
        prefix = "bert." if stored_head == "pretraining" else ""
        assert held["bert.embeddings.word_embeddings.weight"] == prefix + "embeddings.word_embeddings.weight"
    finally:
        checkpoint.close()

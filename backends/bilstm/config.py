"""BiLSTMConfig: the BiLSTM student of Tang et al. (2019), framework-free, and its presets."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config_base import ConfigBase, check_positive_int, check_probability
from ..spec import Preset
from .weights import parameter_count


@dataclass
class BiLSTMConfig(ConfigBase):
    """Word embedding -> one bidirectional LSTM layer -> ReLU fully-connected layer -> classifier.

    `hidden_size` is per direction; with `pair` both sentences go through the shared BiLSTM and the
    classifier reads [h1, h2, h1 * h2, |h1 - h2|].
    """

    model_type = "bilstm"

    vocab_size: int = 30522
    embedding_dim: int = 300
    hidden_size: int = 150
    fc_hidden_size: int = 200
    num_labels: int = 2
    dropout: float = 0.1
    padding_idx: int | None = 0
    pair: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self):
        check_positive_int(self, "vocab_size", "embedding_dim", "hidden_size", "fc_hidden_size", "num_labels")
        check_probability(self, "dropout")
        if self.padding_idx is not None and (not isinstance(self.padding_idx, int) or isinstance(self.padding_idx, bool)
                                             or not 0 <= self.padding_idx < self.vocab_size):
            self.fail("padding_idx", f"must be null or index the vocabulary (size {self.vocab_size})")
        if not isinstance(self.pair, bool):
            self.fail("pair", "must be true or false")

    @property
    def features_size(self) -> int:
        """Width of the fully-connected layer's input: one sentence vector (the last forward and the first
        backward hidden state) or, for a pair, four."""
        return 2 * self.hidden_size * (4 if self.pair else 1)


# Tang et al. (2019) and their code (castorini/d-bert: confs/birnn_sst2_150.json, siarnn_qqb.json):
# BiLSTM 150 per direction for SST-2, 300 for QQP, ReLU layer 200, dropout 0.1 / 0.2. Their BiLSTM reads
# two 300-d word2vec channels side by side (one frozen, one fine-tuned: a 600-d input, 0.96M parameters
# besides the embeddings for SST-2); the presets keep one 300-d channel over BERT's uncased vocabulary.
_SST2 = BiLSTMConfig(hidden_size=150, fc_hidden_size=200, dropout=0.1)
_PAIR = BiLSTMConfig(hidden_size=300, fc_hidden_size=200, dropout=0.2, pair=True)


def _describe(config, setting: str) -> str:
    return (f"{setting}: {config.embedding_dim}-d embeddings, BiLSTM {config.hidden_size} per direction, "
            f"ReLU FC {config.fc_hidden_size}; {parameter_count(config, embeddings=False):,} parameters "
            f"+ {config.vocab_size * config.embedding_dim:,} embedding")


PRESETS = {
    "bilstm-sst2": Preset("bilstm-sst2", "bilstm", _SST2, "seqcls", _describe(_SST2, "Tang et al. 2019 SST-2 student")),
    "bilstm-pair": Preset("bilstm-pair", "bilstm", _PAIR, "seqcls",
                          _describe(_PAIR, "Tang et al. 2019 siamese student (QQP), [h1, h2, h1*h2, |h1-h2|]")),
}

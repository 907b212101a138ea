"""The BiLSTM student (no transformers class: our own names) in our safetensors layout only: the folders
`python -m tasks` saves, which parity and tasks read back through the checkpoint layer."""
from backends.weights import RuleSet, SAME_NAMES

from . import FormatRules, head_classes

CLASSES = head_classes("bilstm", "transformers")  # our port class names (transformers has none)

FORMATS = {"hf": FormatRules(RuleSet([SAME_NAMES], "bilstm safetensors"), CLASSES)}

"""The BiLSTM's one head (ours: no transformers or PaddleNLP class)."""
from ..spec import Head

HEADS = {"seqcls": Head("BiLSTMForSequenceClassification", ("logits",))}

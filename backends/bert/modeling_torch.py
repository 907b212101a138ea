"""BERT in PyTorch: the reference the Paddle and TF ports mirror, class by class.

Dtype-clean: every tensor is computed in the parameters' dtype. Parameter names are transformers'
state_dict names (the tied MLM decoder is the word-embedding matrix, as in transformers'
`named_parameters`). Every model returns a dict: its final outputs, then "hidden_states" (embeddings
and every layer), "attentions" (probabilities) and "attention_scores" (pre-softmax, masked keys
shifted by MASK_BIAS: what TinyBERT's attention loss compares). RoBERTa and TinyBERT subclass these.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._fw.torch import activation, attention_weights_wanted
from ..adapters.layers_torch import add_adapters, residual_block
from ..spec import port_heads
from .heads import HEADS as REGISTRY

# added to the scores of masked keys: Google's BERT, TinyBERT, PaddleNLP and transformers' TF classes use
# -10000 (transformers' PyTorch classes use the dtype's minimum; the softmax is the same, exp underflows to 0)
MASK_BIAS = -10000.0


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def create_position_ids(self, input_ids, inputs_embeds):
        """[B, T] absolute positions 0 .. T-1."""
        batch, seq_len = inputs_embeds.shape[:2]
        return torch.arange(seq_len, device=inputs_embeds.device).expand(batch, seq_len)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None, position_ids=None):
        """position_ids, when given, replace the family's own (create_position_ids)."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = self.create_position_ids(input_ids, inputs_embeds)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x):
        """[B, T, N*D] -> [B, N, T, D]"""
        batch, seq_len, _ = x.shape
        return x.reshape(batch, seq_len, self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def key_value(self, states):
        """(keys, values) [B, N, S, D] of states [B, S, N*D]: what forward takes as `key_value`."""
        return self.split_heads(self.key(states)), self.split_heads(self.value(states))

    def forward(self, hidden_states, attention_bias, key_value=None):
        """Returns (context [B, T, N*D], probabilities and pre-softmax scores [B, N, T, S]). The keys and values
        are `key_value` when given (key_value() of other states, projected once for many queries: attention_bias
        then covers its S keys), else those of hidden_states (S = T). Probabilities and scores are None under
        without_attention_weights (eval mode)."""
        query = self.split_heads(self.query(hidden_states))
        key, value = self.key_value(hidden_states) if key_value is None else key_value
        if not attention_weights_wanted() and (not self.training or self.dropout.p == 0):
            # torch only: no caller reads the probabilities (backends/_fw/torch, without_attention_weights), so the
            # fused kernel computes the same softmax(QK^T / sqrt(D) + bias) V without materialising them
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_bias.to(query.dtype))
            context = context.permute(0, 2, 1, 3)
            return context.reshape(*context.shape[:2], -1), None, None
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size) + attention_bias
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(self.dropout(probs), value).permute(0, 2, 1, 3)
        return context.reshape(*context.shape[:2], -1), probs, scores


class BertSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        # LayerNorm(output + input_tensor), with this module's bottleneck adapter if the config has one
        return residual_block(self, self.dropout(self.dense(hidden_states)), input_tensor, self.LayerNorm)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, attention_bias, key_value=None):
        context, probs, scores = self.self(hidden_states, attention_bias, key_value)
        return self.output(context, hidden_states), probs, scores


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        # LayerNorm(output + input_tensor), with this module's bottleneck adapter if the config has one
        return residual_block(self, self.dropout(self.dense(hidden_states)), input_tensor, self.LayerNorm)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, attention_bias, key_value=None):
        """key_value: the (keys, values) the queries of hidden_states attend over, when not their own
        (BertSelfAttention.key_value)."""
        attention_output, probs, scores = self.attention(hidden_states, attention_bias, key_value)
        return self.output(self.intermediate(attention_output), attention_output), probs, scores


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_bias):
        """Returns {"last_hidden_state", "hidden_states" (input and every layer), "attentions", "attention_scores"}."""
        all_hidden_states, all_attentions, all_scores = [hidden_states], [], []
        for layer in self.layer:
            hidden_states, probs, scores = layer(hidden_states, attention_bias)
            all_hidden_states.append(hidden_states)
            all_attentions.append(probs)
            all_scores.append(scores)
        return {"last_hidden_state": hidden_states, "hidden_states": all_hidden_states,
                "attentions": all_attentions, "attention_scores": all_scores}


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


def attention_bias(attention_mask, dtype):
    """[B, T] mask of 1 (keep) / 0 (masked key) -> additive [B, 1, 1, T] scores bias in `dtype`."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_BIAS


class BertModel(nn.Module):
    """Embeddings, encoder and (unless add_pooling_layer=False) the tanh pooler over the first token."""

    embeddings_class = BertEmbeddings
    encoder_class = BertEncoder  # a family with another encoder (same outputs) sets its own

    def __init__(self, config, add_pooling_layer=True):
        super().__init__()
        self.config = config
        self.embeddings = self.embeddings_class(config)
        self.encoder = self.encoder_class(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        add_adapters(self.encoder.layer, config, "bert", config.hidden_size)  # config.adapter (None: none)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                position_ids=None):
        """inputs_embeds, when given, replaces only the word-embedding lookup (input_ids may come too); position_ids,
        when given, the family's own positions."""
        if input_ids is None and inputs_embeds is None:
            raise ValueError("give input_ids or inputs_embeds")
        like = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(like.shape, dtype=torch.int64, device=like.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
        embedding_output = self.embeddings(input_ids, token_type_ids, inputs_embeds, position_ids)
        outputs = self.encoder(embedding_output, attention_bias(attention_mask, embedding_output.dtype))
        if self.pooler is not None:
            outputs["pooler_output"] = self.pooler(outputs["last_hidden_state"])
        return outputs


class BertPreTrainedHead(nn.Module):
    """A task head over a base model held under `base_model_prefix` (the canonical names' prefix)."""

    base_model_prefix = "bert"
    base_model_class = BertModel
    add_pooling_layer = True

    def __init__(self, config):
        super().__init__()
        self.config = config
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=self.add_pooling_layer))

    @property
    def base_model(self):
        return getattr(self, self.base_model_prefix)

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()


class BertForSequenceClassification(BertPreTrainedHead):
    """num_labels scores from the pooled first token (one score: regression)."""

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.classifier(self.dropout(outputs["pooler_output"])), **outputs}


class BertForMultipleChoice(BertPreTrainedHead):
    """Inputs [B, choices, T]; one score per choice from the pooled first token."""

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        like = input_ids if input_ids is not None else inputs_embeds[..., 0]
        num_choices, seq_len = like.shape[1], like.shape[2]
        flat = lambda t: None if t is None else t.reshape(-1, seq_len, *t.shape[3:])  # noqa: E731
        outputs = self.base_model(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(inputs_embeds))
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        return {"logits": logits, **outputs}


class BertForQuestionAnswering(BertPreTrainedHead):
    """Answer-span start and end scores for every token."""

    add_pooling_layer = False

    def __init__(self, config):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.qa_outputs(outputs["last_hidden_state"])
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1], **outputs}


class BertForTokenClassification(BertPreTrainedHead):
    """num_labels scores for every token."""

    add_pooling_layer = False

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.classifier(self.dropout(outputs["last_hidden_state"])), **outputs}


def tied_decoder(hidden_states, word_embeddings, bias):
    """Vocabulary scores with the decoder weight tied to the [vocab, hidden] word embeddings."""
    return torch.matmul(hidden_states, word_embeddings.t()) + bias


def untied_decoder(config):
    """The decoder's own [vocab, hidden] matrix when tie_word_embeddings is false; None when it is tied."""
    return None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)


def decode(hidden_states, decoder, word_embeddings, bias):
    """Vocabulary scores through the untied decoder, or the word embeddings when tied."""
    if decoder is None:
        return tied_decoder(hidden_states, word_embeddings, bias)
    return decoder(hidden_states) + bias


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """transform, then the decoder: the word embeddings (tied), or its own matrix when tie_word_embeddings is false."""

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = untied_decoder(config)

    def forward(self, hidden_states, word_embeddings):
        return decode(self.transform(hidden_states), self.decoder, word_embeddings, self.bias)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output, word_embeddings):
        return self.predictions(sequence_output, word_embeddings)


class BertForMaskedLM(BertPreTrainedHead):
    """Vocabulary scores for every token; the decoder is the word-embedding matrix (tied)."""

    add_pooling_layer = False

    def __init__(self, config):
        super().__init__(config)
        self.cls = BertOnlyMLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.cls(outputs["last_hidden_state"], self.get_input_embeddings().weight)
        return {"logits": logits, **outputs}


class BertPreTrainingHeads(nn.Module):
    """The MLM head and the next-sentence classifier over the pooled first token."""

    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output, pooled_output, word_embeddings):
        return self.predictions(sequence_output, word_embeddings), self.seq_relationship(pooled_output)


class BertForPreTraining(BertPreTrainedHead):
    """Vocabulary scores for every token (MLM) and next-sentence scores (Google's pre-training heads)."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = BertPreTrainingHeads(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        prediction_logits, seq_relationship_logits = self.cls(
            outputs["last_hidden_state"], outputs["pooler_output"], self.get_input_embeddings().weight)
        return {"prediction_logits": prediction_logits, "seq_relationship_logits": seq_relationship_logits, **outputs}


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())

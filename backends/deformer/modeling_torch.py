"""DeFormer-assist in PyTorch: the reference the Paddle and TF ports mirror, class by class.

The base family's (BERT's or RoBERTa's) embeddings, layers and pooler under its names, rewired (config split
E2/A/E3 of the N layers):
- the passage alone through layers 1 .. E2+A (question-independent: `encode_passage`, cacheable);
- the question alone through layers 1 .. E2, then through the A assist layers, where its queries attend over
  the keys and values of [question states; the passage's states entering the same layer] (the same layer's
  weights; the passage runs that layer on its own). A passage's keys and values are projected once per passage
  and shared by every question that reads it: a passage_cache of P passages with a `passage_index` [B] (the
  passage of each question) serves B questions, the way many questions are answered against one cached passage;
- the joint [question; passage] states after layer E2+A through the last E3 layers.
Positions: question 0 .. Tq-1, passage from max_question_length on (RoBERTa: both from pad_token_id + 1, padding
at pad_token_id, counted over the attention mask), so a passage's encoding never depends on its question.

Every model returns a dict: the head's final outputs, "last_hidden_state" [B, Tq+Tp, H] and "hidden_states"
(embeddings and every layer) over the joint sequence (the question's and the passage's states side by side
below the joint layers), "attentions" and "attention_scores" (pre-softmax) of the question's queries below the
joint layers ([B, heads, Tq, Tq] question-only, [B, heads, Tq, Tq+Tp] assist) and of every token in the joint
layers ([B, heads, T, T]), and "pooler_output" where the head pools (output_layers=False: the head's outputs,
"last_hidden_state" and "pooler_output" alone). E2 = A = 0 is the base model on the concatenation [question; passage].
"""
from __future__ import annotations

import torch
from torch import nn

from ..bert import modeling_torch as bert
from ..roberta import modeling_torch as roberta
from ..spec import port_heads
from .heads import HEADS as REGISTRY

# base family -> its embeddings (RoBERTa's have a padding row in the position table)
EMBEDDINGS = {"bert": bert.BertEmbeddings, "roberta": roberta.RobertaEmbeddings}
# what an encode_passage() result holds (the passage_cache forward() takes)
CACHE_KEYS = ("passage_states", "passage_attention_mask")
# what a passage_cache may add: [B] the passage (row of the cache) each question reads; absent: question b, row b
PASSAGE_INDEX = "passage_index"
# the inputs whose word embeddings the parity harness feeds as forward() arguments (backends/run.py)
EMBEDDED_INPUTS = {"question_input_ids": "question_inputs_embeds", "passage_input_ids": "passage_inputs_embeds"}


class DeformerEncoder(nn.Module):
    """The base encoder's layers (`encoder.layer.<i>`), run as question-only, assist and joint layers."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([bert.BertLayer(config) for _ in range(config.num_hidden_layers)])

    def encode_passage(self, hidden_states, attention_bias):
        """The passage alone through layers 1 .. E2+A: [its embeddings, each of those layers' outputs]."""
        states = [hidden_states]
        for layer in self.layer[:self.config.passage_layers]:
            states.append(layer(states[-1], attention_bias)[0])
        return states

    def forward(self, question_states, question_bias, passage_states, joint_bias, passage_index=None,
                output_layers=True, folded_bias=None):
        """question_states: the question's embeddings [B, Tq, H]; passage_states: encode_passage's list ([P, Tp, H]
        each); passage_index: [B] the passage (row of passage_states) each question reads, None: question b reads
        passage b; joint_bias: the additive mask bias of [question; its passage] keys; folded_bias (with
        output_layers=False): folded_assist_bias(), the assist layers then run the B questions folded into one
        sequence (assist_folded). Returns BertEncoder's outputs over the joint sequence; output_layers=False: only
        "last_hidden_state" (no per-layer states, attentions and scores are gathered)."""
        split = self.config.encoder2_layers
        all_hidden_states, all_attentions, all_scores = [], [], []

        def joint(question, layer):  # [question; its passage] states entering layer `layer` (0: the embeddings)
            return torch.cat([question, per_question(passage_states[layer], passage_index)], 1)

        if output_layers:
            all_hidden_states.append(joint(question_states, 0))
        for i, layer in enumerate(self.layer[:self.config.passage_layers]):
            if i < split:  # question-only
                question_states, probs, scores = layer(question_states, question_bias)
            elif folded_bias is not None:  # assist, every question at once over the passages' shared keys
                question_states, probs, scores = assist_folded(layer, question_states, passage_states[i], folded_bias)
            else:  # assist: the question's queries over [question; passage entering this layer]
                question_states, probs, scores = layer(question_states, joint_bias,
                                                       assist_key_value(layer, question_states, passage_states[i],
                                                                        passage_index))
            if output_layers:
                all_hidden_states.append(joint(question_states, i + 1))
                all_attentions.append(probs)
                all_scores.append(scores)
        hidden_states = all_hidden_states[-1] if output_layers else joint(question_states, self.config.passage_layers)
        for layer in self.layer[self.config.passage_layers:]:  # joint
            hidden_states, probs, scores = layer(hidden_states, joint_bias)
            if output_layers:
                all_hidden_states.append(hidden_states)
                all_attentions.append(probs)
                all_scores.append(scores)
        if not output_layers:
            return {"last_hidden_state": hidden_states}
        return {"last_hidden_state": hidden_states, "hidden_states": all_hidden_states,
                "attentions": all_attentions, "attention_scores": all_scores}


def assist_key_value(layer, question_states, passage_states, passage_index):
    """(keys, values) [B, heads, Tq + Tp, D] of [question; its passage] in an assist layer: the passage's are
    projected once per passage ([P, Tp, H] states) and then shared by the questions reading it (passage_index)."""
    attention = layer.attention.self
    question_keys, question_values = attention.key_value(question_states)
    passage_keys, passage_values = (per_question(x, passage_index) for x in attention.key_value(passage_states))
    return torch.cat([question_keys, passage_keys], 2), torch.cat([question_values, passage_values], 2)


def assist_folded(layer, question_states, passage_states, folded_bias):
    """An assist layer over B questions [B, Tq, H] folded into one sequence [1, B*Tq, H] whose queries attend over
    [every question's keys; every passage's keys] ([P, Tp, H] states, projected once), folded_bias keeping each
    question's own and its passage's: the softmax of assist_key_value's keys (the others' exp(MASK_BIAS + s)
    underflow to exactly 0) without a per-question copy of its passage's keys and values (serving: ~10 questions
    per passage, where those copies cost about as much as the layer's matmuls)."""
    batch, length, width = question_states.shape
    folded = question_states.reshape(1, batch * length, width)
    attention = layer.attention.self
    question_keys, question_values = attention.key_value(folded)
    passage_keys, passage_values = attention.key_value(passage_states.reshape(1, -1, width))
    key_value = torch.cat([question_keys, passage_keys], 2), torch.cat([question_values, passage_values], 2)
    output, probs, scores = layer(folded, folded_bias, key_value)
    return output.reshape(batch, length, width), probs, scores


def folded_assist_bias(question_mask, passage_mask, passage_index, dtype):
    """[1, 1, B*Tq, B*Tq + P*Tp] additive bias for assist_folded: question b's queries keep its own unmasked
    keys (question_mask [B, Tq]) and those of its passage passage_index[b] (passage_mask [P, Tp])."""
    batch, length = question_mask.shape
    passages = passage_mask.shape[0]
    own = torch.eye(batch, dtype=question_mask.dtype, device=question_mask.device)[:, :, None] * question_mask
    reads = (passage_index[:, None] == torch.arange(passages, device=passage_index.device)).to(passage_mask.dtype)
    keep = torch.cat([own.reshape(batch, 1, -1), (reads[:, :, None] * passage_mask).reshape(batch, 1, -1)], 2)
    keep = keep.expand(batch, length, keep.shape[-1]).reshape(1, 1, batch * length, -1)
    return (1.0 - keep.to(dtype)) * bert.MASK_BIAS


def per_question(passage_tensor, passage_index):
    """Rows [P, ...] of passages -> [B, ...], the row of each question's passage (None: the same rows)."""
    return passage_tensor if passage_index is None else passage_tensor[passage_index]


class DeformerModel(bert.BertModel):
    """The base family's embeddings, the DeFormer encoder and (unless add_pooling_layer=False) the pooler over
    the joint sequence's first token (the question's [CLS] / <s>)."""

    encoder_class = DeformerEncoder
    embedded_inputs = EMBEDDED_INPUTS

    @property
    def embeddings_class(self):
        return EMBEDDINGS[self.config.base_family]

    def part_position_ids(self, attention_mask, first: int):
        """[B, T] positions of one part starting at `first` (0: question, max_question_length: passage): BERT
        first .. first+T-1; RoBERTa counts unmasked tokens from pad_token_id + 1 + first, padding at pad_token_id."""
        if self.config.base_family == "roberta":
            return (torch.cumsum(attention_mask, 1) + first) * attention_mask + self.config.pad_token_id
        batch, seq_len = attention_mask.shape
        return torch.arange(first, first + seq_len, device=attention_mask.device).expand(batch, seq_len)

    def embed_part(self, input_ids, attention_mask, token_type_ids, inputs_embeds, first: int):
        """(embeddings, int64 attention mask) of one part; a missing mask is all ones, missing token types zeros."""
        like = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(like.shape, dtype=torch.int64, device=like.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
        attention_mask = attention_mask.to(torch.int64)
        positions = self.part_position_ids(attention_mask, first)
        return self.embeddings(input_ids, token_type_ids, inputs_embeds, positions), attention_mask

    def encode_passage(self, passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                       passage_inputs_embeds=None):
        """{"passage_states": [embeddings, outputs of layers 1 .. E2+A] each [B, Tp, H], "passage_attention_mask"}:
        what forward(..., passage_cache=...) takes instead of the passage's inputs."""
        check_part(passage_input_ids, passage_inputs_embeds, "passage")
        states, mask = self.embed_part(passage_input_ids, passage_attention_mask, passage_token_type_ids,
                                       passage_inputs_embeds, self.config.max_question_length)
        return {"passage_states": self.encoder.encode_passage(states, bert.attention_bias(mask, states.dtype)),
                "passage_attention_mask": mask}

    def forward(self, question_input_ids=None, question_attention_mask=None, question_token_type_ids=None,
                passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                passage_cache=None, question_inputs_embeds=None, passage_inputs_embeds=None, output_layers=True):
        """question_/passage_inputs_embeds, when given, replace only the word-embedding lookups; passage_cache
        (encode_passage's result for the same passages, or for P passages with a "passage_index" [B] naming each
        question's: many questions share one passage's keys and values) replaces the passage's inputs;
        output_layers=False leaves out the per-layer "hidden_states", "attentions" and "attention_scores"."""
        check_part(question_input_ids, question_inputs_embeds, "question", self.config.max_question_length)
        question, question_mask = self.embed_part(question_input_ids, question_attention_mask,
                                                  question_token_type_ids, question_inputs_embeds, 0)
        if passage_cache is None:
            passage_cache = self.encode_passage(passage_input_ids, passage_attention_mask, passage_token_type_ids,
                                                passage_inputs_embeds)
        passage_states, passage_index = check_cache(passage_cache, self.config, question.shape[0])
        passage_mask = per_question(passage_cache["passage_attention_mask"], passage_index)
        joint_mask = torch.cat([question_mask, passage_mask], 1)
        folded_bias = None
        if passage_index is not None and not output_layers:  # many questions per passage, final outputs only
            folded_bias = folded_assist_bias(question_mask, passage_cache["passage_attention_mask"].to(torch.int64),
                                             passage_index, question.dtype)
        outputs = self.encoder(question, bert.attention_bias(question_mask, question.dtype), passage_states,
                               bert.attention_bias(joint_mask, question.dtype), passage_index, output_layers,
                               folded_bias)
        if self.pooler is not None:
            outputs["pooler_output"] = self.pooler(outputs["last_hidden_state"])
        return outputs


def check_part(input_ids, inputs_embeds, part: str, max_length: int | None = None) -> None:
    """One part's ids or embeddings are given, and (question) no longer than max_question_length."""
    if input_ids is None and inputs_embeds is None:
        raise ValueError(f"give {part}_input_ids or {part}_inputs_embeds")
    length = (input_ids if input_ids is not None else inputs_embeds[..., 0]).shape[-1]
    if max_length is not None and length > max_length:
        raise ValueError(f"{part} of {length} tokens: longer than max_question_length={max_length} (the passage's "
                         "positions start there)")


def check_cache(passage_cache, config, questions: int) -> tuple:
    """(passage states, passage_index or None) of a cache made by encode_passage of a model with this split and
    width, whose passage_index (if any) names one of its passages for each of the `questions`."""
    missing = [key for key in CACHE_KEYS if key not in passage_cache]
    if missing:
        raise ValueError(f"passage_cache lacks {', '.join(missing)} (give what encode_passage returns)")
    states = list(passage_cache["passage_states"])
    if len(states) != config.passage_layers + 1 or states[0].shape[-1] != config.hidden_size:
        raise ValueError(f"passage_cache holds {len(states)} states of width {states[0].shape[-1]}; this model "
                         f"(split {config.split}, hidden_size {config.hidden_size}) needs {config.passage_layers + 1} "
                         f"of width {config.hidden_size}")
    index, passages = passage_cache.get(PASSAGE_INDEX), states[0].shape[0]
    if index is None:
        if passages != questions:
            raise ValueError(f"passage_cache holds {passages} passages for {questions} questions: give its "
                             f"{PASSAGE_INDEX} (the passage of each question)")
        return states, None
    if tuple(index.shape) != (questions,) or index.dtype != torch.int64:
        raise ValueError(f"{PASSAGE_INDEX} of shape {tuple(index.shape)} and dtype {index.dtype}: one int64 per "
                         f"question ({questions}) expected")
    if questions:
        first, last = int(index.min()), int(index.max())
        if not 0 <= first <= last < passages:
            raise ValueError(f"{PASSAGE_INDEX} names passages {first} .. {last}; the cache holds {passages}")
    return states, index


class DeformerPreTrainedHead(bert.BertPreTrainedHead):
    """A task head over a DeformerModel held under the base family's prefix (`bert` or `roberta`)."""

    base_model_class = DeformerModel
    embedded_inputs = EMBEDDED_INPUTS

    @property
    def base_model_prefix(self):
        return self.config.base_family

    def encode_passage(self, passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                       passage_inputs_embeds=None):
        """The base model's encode_passage (see DeformerModel)."""
        return self.base_model.encode_passage(passage_input_ids, passage_attention_mask, passage_token_type_ids,
                                              passage_inputs_embeds)


class DeformerForQuestionAnswering(DeformerPreTrainedHead, bert.BertForQuestionAnswering):
    """Answer-span start and end scores for every token of [question; passage] (length Tq + Tp)."""

    def forward(self, question_input_ids=None, question_attention_mask=None, question_token_type_ids=None,
                passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                passage_cache=None, question_inputs_embeds=None, passage_inputs_embeds=None, output_layers=True):
        outputs = self.base_model(question_input_ids, question_attention_mask, question_token_type_ids,
                                  passage_input_ids, passage_attention_mask, passage_token_type_ids, passage_cache,
                                  question_inputs_embeds, passage_inputs_embeds, output_layers)
        logits = self.qa_outputs(outputs["last_hidden_state"])
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1], **outputs}


class DeformerForSequenceClassification(DeformerPreTrainedHead):
    """num_labels scores from the question's first token, pooled as the base family does: BERT's pooler, dropout
    and classifier; RoBERTa's classification head (no pooler)."""

    def __init__(self, config):
        super().__init__(config)
        if config.base_family == "roberta":
            self.classifier = roberta.RobertaClassificationHead(config)
        else:
            self.dropout = nn.Dropout(config.classifier_dropout_prob)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    @property
    def add_pooling_layer(self):
        return self.config.base_family == "bert"

    def forward(self, question_input_ids=None, question_attention_mask=None, question_token_type_ids=None,
                passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                passage_cache=None, question_inputs_embeds=None, passage_inputs_embeds=None, output_layers=True):
        outputs = self.base_model(question_input_ids, question_attention_mask, question_token_type_ids,
                                  passage_input_ids, passage_attention_mask, passage_token_type_ids, passage_cache,
                                  question_inputs_embeds, passage_inputs_embeds, output_layers)
        if self.config.base_family == "roberta":
            return {"logits": self.classifier(outputs["last_hidden_state"]), **outputs}
        return {"logits": self.classifier(self.dropout(outputs["pooler_output"])), **outputs}


class DeformerForMultipleChoice(DeformerPreTrainedHead, bert.BertForMultipleChoice):
    """Question and passage inputs [B, choices, T]; one score per choice from the pooled first token. A
    passage_cache holds the passages of every choice: encode_passage of [B, choices, Tp] inputs ([B*choices, ...])."""

    def encode_passage(self, passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                       passage_inputs_embeds=None):
        return super().encode_passage(*map(flat_choices, (passage_input_ids, passage_attention_mask,
                                                          passage_token_type_ids, passage_inputs_embeds)))

    def forward(self, question_input_ids=None, question_attention_mask=None, question_token_type_ids=None,
                passage_input_ids=None, passage_attention_mask=None, passage_token_type_ids=None,
                passage_cache=None, question_inputs_embeds=None, passage_inputs_embeds=None, output_layers=True):
        num_choices = (question_input_ids if question_input_ids is not None else question_inputs_embeds).shape[1]
        outputs = self.base_model(*map(flat_choices, (
            question_input_ids, question_attention_mask, question_token_type_ids, passage_input_ids,
            passage_attention_mask, passage_token_type_ids)), passage_cache, flat_choices(question_inputs_embeds),
            flat_choices(passage_inputs_embeds), output_layers)
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        return {"logits": logits, **outputs}


def flat_choices(tensor):
    """[B, choices, T, ...] -> [B*choices, T, ...] (None stays None)."""
    return None if tensor is None else tensor.reshape(-1, *tensor.shape[2:])


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())

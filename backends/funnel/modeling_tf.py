"""Funnel-Transformer in TensorFlow: the PyTorch reference (modeling_torch.py), class by class.

Built on `_fw.tf.nn` layers (plain tf.Module objects, no Keras), so parameter names are attribute paths
exactly as in torch; comments mark where TF needs something different. nn.Linear stores its
weight [in, out] (the port rules transpose it).
"""
from __future__ import annotations

import tensorflow as tf

from .._fw.tf import activation, nn, tanh
from ..adapters.layers_tf import add_adapters, residual_block
from ..spec import port_heads
from . import positions
from .heads import HEADS as REGISTRY

INF = 1e6  # masked attention scores get -INF, as in transformers
CLS_TOKEN_TYPE_ID = 2


class FunnelEmbeddings(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        return self.dropout(self.layer_norm(inputs_embeds))


class FunnelAttentionStructure(nn.Layer):
    """Position tables, token-type and <cls> masks, and the pooling of all of them between blocks."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.sin_dropout = nn.Dropout(config.hidden_dropout)
        self.cos_dropout = nn.Dropout(config.hidden_dropout)

    def init_attention_inputs(self, inputs_embeds, attention_mask, token_type_ids):
        seq_len = inputs_embeds.shape[1]
        position_embeds = self.get_position_embeds(seq_len, inputs_embeds)
        token_type_mat = self.token_type_ids_to_mat(token_type_ids)
        cls_mask = None
        if self.config.separate_cls:
            # tf.pad takes [before, after] per axis, first axis first
            cls_mask = tf.pad(tf.ones([seq_len - 1, seq_len - 1], dtype=inputs_embeds.dtype), [[1, 0], [1, 0]])
        return position_embeds, token_type_mat, attention_mask, cls_mask

    @staticmethod
    def token_type_ids_to_mat(token_type_ids):
        """[B, T, T] True where two tokens share a segment; <cls> shares both."""
        same = token_type_ids[:, :, None] == token_type_ids[:, None]
        is_cls = token_type_ids == CLS_TOKEN_TYPE_ID
        return same | is_cls[:, :, None] | is_cls[:, None]

    def get_position_embeds(self, seq_len, like):
        """factorized: (phi, pi, psi, omega); relative_shift: per block [unpooled, pooled] tables."""
        d_model = self.config.d_model
        # float64 numpy tables rounded once to the model dtype (tf.cast of a Python float goes through float32)
        as_tensor = lambda array: tf.cast(array, like.dtype)  # noqa: E731
        if self.config.attention_type == "factorized":
            sin, cos = map(as_tensor, positions.factorized_sinusoid(d_model, seq_len))
            sin_d, cos_d = self.sin_dropout(sin), self.cos_dropout(cos)
            phi = tf.concat([sin_d, sin_d], axis=-1)
            psi = tf.concat([cos, sin], axis=-1)
            pi = tf.concat([cos_d, cos_d], axis=-1)
            omega = tf.concat([-sin, cos], axis=-1)
            return phi, pi, psi, omega
        sin, cos = map(as_tensor, positions.relative_sinusoid(d_model, seq_len))
        pos_embed = tf.concat([self.sin_dropout(sin), self.cos_dropout(cos)], axis=-1)
        index = lambda rows: None if rows is None else tf.gather(pos_embed, rows)  # noqa: E731
        return [[index(unpooled), index(pooled)]
                for unpooled, pooled in positions.relative_shift_indices(self.config, seq_len)]

    def stride_pool(self, tensor, axis):
        """Keep every other position along `axis` (axes, or a tuple of tensors), <cls> kept apart."""
        if tensor is None:
            return None
        if isinstance(axis, (list, tuple)):
            for ax in axis:
                tensor = self.stride_pool(tensor, ax)
            return tensor
        if isinstance(tensor, (list, tuple)):
            return type(tensor)(self.stride_pool(x, axis) for x in tensor)
        axis %= tensor.ndim
        if self.config.separate_cls:
            tensor = tf.concat([tensor[(slice(None),) * axis + (slice(0, 1),)], tensor], axis=axis)  # torch: narrow
        stop = -1 if self.config.separate_cls and self.config.truncate_seq else None
        return tensor[(slice(None),) * axis + (slice(None, stop, 2),)]

    def pool_tensor(self, tensor, mode="mean"):
        """Pool pairs along axis 1 of a [B, T] or [B, T, D] tensor (a last odd token stays alone)."""
        if tensor is None:
            return None
        if self.config.separate_cls:
            suffix = tensor[:, :-1] if self.config.truncate_seq else tensor
            tensor = tf.concat([tensor[:, :1], suffix], axis=1)
        length = tensor.shape[1]
        pairs = tf.reshape(tensor[:, : length - length % 2], [tensor.shape[0], length // 2, 2, *tensor.shape[2:]])
        if mode == "mean":
            pooled = tf.reduce_mean(pairs, axis=2)
        elif mode == "max":
            pooled = tf.reduce_max(pairs, axis=2)  # ties share the gradient, as torch's amax
        else:  # "min"
            pooled = tf.reduce_min(pairs, axis=2)
        if length % 2:
            pooled = tf.concat([pooled, tensor[:, -1:]], axis=1)
        return pooled

    def pre_attention_pooling(self, output, attention_inputs):
        position_embeds, token_type_mat, attention_mask, cls_mask = attention_inputs
        if self.config.pool_q_only:
            if self.config.attention_type == "factorized":
                position_embeds = self.stride_pool(position_embeds[:2], 0) + position_embeds[2:]
            token_type_mat = self.stride_pool(token_type_mat, 1)
            cls_mask = self.stride_pool(cls_mask, 0)
        else:
            if self.config.attention_type == "factorized":
                position_embeds = self.stride_pool(position_embeds, 0)
            token_type_mat = self.stride_pool(token_type_mat, [1, 2])
            cls_mask = self.stride_pool(cls_mask, [0, 1])
            attention_mask = self.pool_tensor(attention_mask, mode="min")
        output = self.pool_tensor(output, mode=self.config.pooling_type)
        return output, (position_embeds, token_type_mat, attention_mask, cls_mask)

    def post_attention_pooling(self, attention_inputs):
        position_embeds, token_type_mat, attention_mask, cls_mask = attention_inputs
        if self.config.pool_q_only:
            if self.config.attention_type == "factorized":
                position_embeds = position_embeds[:2] + self.stride_pool(position_embeds[2:], 0)
            token_type_mat = self.stride_pool(token_type_mat, 2)
            cls_mask = self.stride_pool(cls_mask, 1)
            attention_mask = self.pool_tensor(attention_mask, mode="min")
        return position_embeds, token_type_mat, attention_mask, cls_mask


def relative_shift_gather(positional_attn, context_len, shift):
    """Turn scores against every relative distance [B, N, T, R] into scores against keys [B, N, T, C]."""
    batch, n_head, seq_len, max_rel_len = positional_attn.shape
    positional_attn = tf.reshape(positional_attn, [batch, n_head, max_rel_len, seq_len])[:, :, shift:]
    positional_attn = tf.reshape(positional_attn, [batch, n_head, seq_len, max_rel_len - shift])
    return positional_attn[..., :context_len]


class FunnelRelMultiheadAttention(nn.Layer):
    def __init__(self, config, block_index):
        super().__init__()
        self.config = config
        self.block_index = block_index
        d_model, n_head, d_head = config.d_model, config.n_head, config.d_head
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)
        self.attention_dropout = nn.Dropout(config.attention_dropout)
        self.q_head = nn.Linear(d_model, n_head * d_head, bias=False)
        self.k_head = nn.Linear(d_model, n_head * d_head)
        self.v_head = nn.Linear(d_model, n_head * d_head)
        self.r_w_bias = self.parameter([n_head, d_head], "r_w_bias")
        self.r_r_bias = self.parameter([n_head, d_head], "r_r_bias")
        self.r_kernel = self.parameter([d_model, n_head, d_head], "r_kernel")
        self.r_s_bias = self.parameter([n_head, d_head], "r_s_bias")
        self.seg_embed = self.parameter([2, n_head, d_head], "seg_embed")
        self.post_proj = nn.Linear(n_head * d_head, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=config.layer_norm_eps)
        self.scale = 1.0 / d_head**0.5

    def relative_positional_attention(self, position_embeds, q_head, context_len, cls_mask):
        """Scores from relative positions, [B, N, T, C]."""
        if self.config.attention_type == "factorized":
            phi, pi, psi, omega = position_embeds
            q_r_attention = tf.einsum("binh,dnh->bind", q_head + self.r_r_bias * self.scale, self.r_kernel)
            positional_attn = (tf.einsum("bind,jd->bnij", q_r_attention * phi[:, None], psi)
                               + tf.einsum("bind,jd->bnij", q_r_attention * pi[:, None], omega))
        else:
            shift = 2 if q_head.shape[1] != context_len else 1
            r = position_embeds[self.block_index][shift - 1]
            r_head = tf.einsum("td,dnh->tnh", r, self.r_kernel)
            positional_attn = tf.einsum("binh,tnh->bnit", q_head + self.r_r_bias * self.scale, r_head)
            positional_attn = relative_shift_gather(positional_attn, context_len, shift)
        return positional_attn if cls_mask is None else positional_attn * cls_mask

    def relative_token_type_attention(self, token_type_mat, q_head, cls_mask):
        """Scores from same/different segment, [B, N, T, C]."""
        token_type_bias = tf.einsum("bind,snd->bnis", q_head + self.r_s_bias * self.scale, self.seg_embed)
        diff_token_type, same_token_type = token_type_bias[..., :1], token_type_bias[..., 1:]
        token_type_attn = tf.where(token_type_mat[:, None], same_token_type, diff_token_type)  # broadcasts (TF2 where)
        return token_type_attn if cls_mask is None else token_type_attn * cls_mask

    def forward(self, query, key, value, attention_inputs):
        position_embeds, token_type_mat, attention_mask, cls_mask = attention_inputs
        batch, seq_len, _ = query.shape
        context_len = key.shape[1]
        n_head, d_head = self.config.n_head, self.config.d_head
        q_head = tf.reshape(self.q_head(query), [batch, seq_len, n_head, d_head]) * self.scale
        k_head = tf.reshape(self.k_head(key), [batch, context_len, n_head, d_head])
        v_head = tf.reshape(self.v_head(value), [batch, context_len, n_head, d_head])
        content_score = tf.einsum("bind,bjnd->bnij", q_head + self.r_w_bias * self.scale, k_head)
        positional_attn = self.relative_positional_attention(position_embeds, q_head, context_len, cls_mask)
        token_type_attn = self.relative_token_type_attention(token_type_mat, q_head, cls_mask)
        attn_score = content_score + positional_attn + token_type_attn
        attn_score = attn_score - INF * (1 - attention_mask[:, None, None])
        attn_prob = self.attention_dropout(tf.nn.softmax(attn_score, axis=-1))
        attn_vec = tf.einsum("bnij,bjnd->bind", attn_prob, v_head)
        attn_out = self.hidden_dropout(self.post_proj(tf.reshape(attn_vec, [batch, seq_len, n_head * d_head])))
        # layer_norm(query + attn_out), with this module's bottleneck adapter if the config has one
        return residual_block(self, attn_out, query, self.layer_norm), attn_prob


class FunnelPositionwiseFFN(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.linear_1 = nn.Linear(config.d_model, config.d_inner)
        self.activation_function = activation(config.hidden_act)
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.linear_2 = nn.Linear(config.d_inner, config.d_model)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, hidden):
        h = self.activation_dropout(self.activation_function(self.linear_1(hidden)))
        return residual_block(self, self.dropout(self.linear_2(h)), hidden, self.layer_norm)


class FunnelLayer(nn.Layer):
    def __init__(self, config, block_index):
        super().__init__()
        self.attention = FunnelRelMultiheadAttention(config, block_index)
        self.ffn = FunnelPositionwiseFFN(config)

    def forward(self, query, key, value, attention_inputs):
        output, attn_prob = self.attention(query, key, value, attention_inputs)
        return self.ffn(output), attn_prob


class FunnelEncoder(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.attention_structure = FunnelAttentionStructure(config)
        self.blocks = nn.LayerList(
            [nn.LayerList([FunnelLayer(config, b) for _ in range(size)]) for b, size in enumerate(config.block_sizes)])
        add_adapters([layer for block in self.blocks for layer in block], config, "funnel", config.d_model)

    def forward(self, inputs_embeds, attention_mask, token_type_ids):
        """Returns (last hidden, hidden states incl. the embeddings, attention probabilities)."""
        attention_mask = tf.cast(attention_mask, inputs_embeds.dtype)
        attention_inputs = self.attention_structure.init_attention_inputs(inputs_embeds, attention_mask, token_type_ids)
        hidden = inputs_embeds
        all_hidden_states, all_attentions = [inputs_embeds], []
        for block_index, block in enumerate(self.blocks):
            pooling_flag = block_index > 0 and hidden.shape[1] > (2 if self.config.separate_cls else 1)
            if pooling_flag:
                pooled_hidden, attention_inputs = self.attention_structure.pre_attention_pooling(
                    hidden, attention_inputs)
            for layer_index, layer in enumerate(block):
                for repeat_index in range(self.config.block_repeats[block_index]):
                    do_pooling = pooling_flag and layer_index == 0 and repeat_index == 0
                    if do_pooling:
                        query = pooled_hidden
                        key = value = hidden if self.config.pool_q_only else pooled_hidden
                    else:
                        query = key = value = hidden
                    hidden, attn_prob = layer(query, key, value, attention_inputs)
                    if do_pooling:
                        attention_inputs = self.attention_structure.post_attention_pooling(attention_inputs)
                    all_hidden_states.append(hidden)
                    all_attentions.append(attn_prob)
        return hidden, all_hidden_states, all_attentions


def upsample(x, stride, target_len, separate_cls, truncate_seq):
    """Repeat each token `stride` times along the sequence to reach `target_len` (<cls> kept once)."""
    if stride == 1:
        return x
    if separate_cls:
        cls, x = x[:, :1], x[:, 1:]
    output = tf.repeat(x, repeats=stride, axis=1)  # tf.repeat is torch's repeat_interleave
    if not separate_cls:
        return output[:, :target_len]
    if truncate_seq:
        output = tf.pad(output, [[0, 0], [0, stride - 1], [0, 0]])
    return tf.concat([cls, output[:, : target_len - 1]], axis=1)


class FunnelDecoder(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.attention_structure = FunnelAttentionStructure(config)
        self.layers = nn.LayerList([FunnelLayer(config, 0) for _ in range(config.num_decoder_layers)])
        # the decoder's layers come after the encoder's in the adapters' layer index
        add_adapters(self.layers, config, "funnel", config.d_model, first_index=sum(config.block_sizes))

    def forward(self, final_hidden, first_block_hidden, attention_mask, token_type_ids):
        upsampled_hidden = upsample(final_hidden, stride=2 ** (len(self.config.block_sizes) - 1),
                                    target_len=first_block_hidden.shape[1], separate_cls=self.config.separate_cls,
                                    truncate_seq=self.config.truncate_seq)
        hidden = upsampled_hidden + first_block_hidden
        all_hidden_states, all_attentions = [hidden], []
        attention_mask = tf.cast(attention_mask, hidden.dtype)
        attention_inputs = self.attention_structure.init_attention_inputs(hidden, attention_mask, token_type_ids)
        for layer in self.layers:
            hidden, attn_prob = layer(hidden, hidden, hidden, attention_inputs)
            all_hidden_states.append(hidden)
            all_attentions.append(attn_prob)
        return hidden, all_hidden_states, all_attentions


def _default_inputs(input_ids, inputs_embeds, attention_mask, token_type_ids):
    """Fill the default masks; inputs_embeds, when given, replaces the word-embedding lookup."""
    if input_ids is None and inputs_embeds is None:
        raise ValueError("give input_ids or inputs_embeds")
    like = inputs_embeds[..., 0] if inputs_embeds is not None else input_ids
    if attention_mask is None:
        attention_mask = tf.ones(like.shape, dtype=tf.int64)
    if token_type_ids is None:
        token_type_ids = tf.zeros(like.shape, dtype=tf.int64)
    return attention_mask, token_type_ids


class FunnelBaseModel(nn.Layer):
    """Embeddings and the pooling encoder, no decoder (the "-base" checkpoints)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = FunnelEmbeddings(config)
        self.encoder = FunnelEncoder(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        attention_mask, token_type_ids = _default_inputs(input_ids, inputs_embeds, attention_mask, token_type_ids)
        embeddings = self.embeddings(input_ids, inputs_embeds=inputs_embeds)
        hidden, hidden_states, attentions = self.encoder(embeddings, attention_mask, token_type_ids)
        return {"last_hidden_state": hidden, "hidden_states": hidden_states, "attentions": attentions}


class FunnelModel(nn.Layer):
    """Embeddings, pooling encoder and the upsampling decoder back to full length."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = FunnelEmbeddings(config)
        self.encoder = FunnelEncoder(config)
        self.decoder = FunnelDecoder(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        attention_mask, token_type_ids = _default_inputs(input_ids, inputs_embeds, attention_mask, token_type_ids)
        embeddings = self.embeddings(input_ids, inputs_embeds=inputs_embeds)
        encoded, enc_hidden_states, enc_attentions = self.encoder(embeddings, attention_mask, token_type_ids)
        # as transformers: the decoder adds the hidden state after block_sizes[0] encoder layer passes
        first_block_hidden = enc_hidden_states[self.config.block_sizes[0]]
        hidden, dec_hidden_states, dec_attentions = self.decoder(encoded, first_block_hidden, attention_mask,
                                                                 token_type_ids)
        return {"last_hidden_state": hidden, "hidden_states": enc_hidden_states + dec_hidden_states,
                "attentions": enc_attentions + dec_attentions}


class FunnelClassificationHead(nn.Layer):
    def __init__(self, config, n_labels):
        super().__init__()
        self.linear_hidden = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.linear_out = nn.Linear(config.d_model, n_labels)

    def forward(self, hidden):
        return self.linear_out(self.dropout(tanh(self.linear_hidden(hidden))))


class FunnelPreTrainedHead(nn.Layer):
    """A task head over a base model held as `funnel` (the canonical names' prefix), as BERT's heads."""

    base_model_class = FunnelBaseModel

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.funnel = self.base_model_class(config)

    def get_input_embeddings(self):
        return self.funnel.get_input_embeddings()


class FunnelForSequenceClassification(FunnelPreTrainedHead):
    def __init__(self, config):
        super().__init__(config)
        self.classifier = FunnelClassificationHead(config, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.funnel(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.classifier(outputs["last_hidden_state"][:, 0]), **outputs}


class FunnelForMultipleChoice(FunnelPreTrainedHead):
    """Inputs [B, choices, T]; one score per choice from the <cls> state."""

    def __init__(self, config):
        super().__init__(config)
        self.classifier = FunnelClassificationHead(config, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        like = inputs_embeds[..., 0] if inputs_embeds is not None else input_ids
        num_choices, seq_len = like.shape[1], like.shape[2]
        flat = lambda t: None if t is None else tf.reshape(t, [-1, seq_len, *t.shape[3:]])  # noqa: E731
        outputs = self.funnel(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(inputs_embeds))
        logits = tf.reshape(self.classifier(outputs["last_hidden_state"][:, 0]), [-1, num_choices])
        return {"logits": logits, **outputs}


class FunnelForQuestionAnswering(FunnelPreTrainedHead):
    base_model_class = FunnelModel  # the span head reads the decoder's full-length states

    def __init__(self, config):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.funnel(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.qa_outputs(outputs["last_hidden_state"])
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1], **outputs}


class FunnelDiscriminatorPredictions(nn.Layer):
    """ELECTRA-style replaced-token detection: dense, activation, one score per token (no dropout)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.activation_function = activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.d_model, 1)

    def forward(self, discriminator_hidden_states):
        hidden = self.activation_function(self.dense(discriminator_hidden_states))
        return self.dense_prediction(hidden)[..., 0]  # [B, T]: squeezes only the unit axis, even for batch 1


class FunnelForPreTraining(FunnelPreTrainedHead):
    """The published checkpoints' head: a discriminator score per token over the full-length decoder output."""

    base_model_class = FunnelModel  # over the full-length decoder output

    def __init__(self, config):
        super().__init__(config)
        self.discriminator_predictions = FunnelDiscriminatorPredictions(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.funnel(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.discriminator_predictions(outputs["last_hidden_state"]), **outputs}


class FunnelLMHead(nn.Layer):
    """transformers' `lm_head`, a Linear d_model -> vocab_size. With tie_word_embeddings its weight is the
    word-embedding matrix, given to forward; otherwise its own weight, kept in the embeddings' and torch's
    [vocab, d_model] layout (a tf_nn.Linear would store [d_model, vocab]): the port rules leave it as it is."""

    def __init__(self, config):
        super().__init__()
        self.weight = None if config.tie_word_embeddings else self.parameter(
            [config.vocab_size, config.d_model], "weight")
        self.bias = self.parameter([config.vocab_size], "bias")

    def forward(self, hidden, word_embeddings):
        weight = word_embeddings if self.weight is None else self.weight
        return tf.matmul(hidden, weight, transpose_b=True) + self.bias


class FunnelForMaskedLM(FunnelPreTrainedHead):
    """Vocabulary scores for every token of the full-length decoder output."""

    base_model_class = FunnelModel  # over the full-length decoder output

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = FunnelLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.funnel(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.lm_head(outputs["last_hidden_state"], self.get_input_embeddings().weight)
        return {"logits": logits, **outputs}


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())

"""A scalar reward model that mean-pools an encoder's last hidden states: score(x) = wᵀ mean_t h_t(x).

``transformers`` has no standard ``*ForSequenceClassification`` head that scores the mean of the token states (BERT's
reads the pooler on [CLS]), so ``bayesmicro export`` writes this module into the exported folder with the weights
and registers it in ``config.json``'s ``auto_map``. ``AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)`` then builds it without bayesmicro installed: this file imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPooledRewardConfig(PretrainedConfig):
    """``backbone``: the encoder's own config as a dict (``model_type`` included); the score has one output."""

    model_type = "bayesmicro_mean_pooled_reward"

    def __init__(self, backbone: dict | None = None, **kwargs):
        self.backbone = dict(backbone or {})
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        values = dict(self.backbone)
        return AutoConfig.for_model(values.pop("model_type"), **values)


class MeanPooledRewardModel(PreTrainedModel):
    """Encoder + bias-free linear score on the attention-masked mean of the last hidden states: logits (b, 1)."""

    config_class = MeanPooledRewardConfig
    base_model_prefix = "backbone"

    def __init__(self, config: MeanPooledRewardConfig):
        super().__init__(config)
        inner = config.backbone_config()
        self.backbone = AutoModel.from_config(inner)
        self.score = torch.nn.Linear(inner.hidden_size, 1, bias=False)
        self.post_init()

    def _init_weights(self, module):  # the weights always come from the exported folder
        if module is self.score:
            torch.nn.init.zeros_(module.weight)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                **kwargs) -> SequenceClassifierOutput:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               **extra).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.mse_loss(logits[:, 0], labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)

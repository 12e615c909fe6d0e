"""Training engines and the encoding they share.

- :mod:`~resources.training.encoding` - chat formatting, tokenization with loss on the response only, losses
- :mod:`~resources.training.warmup` - the warm-up AdamW loop, ``WarmupParams``, saving weights plus optimizer state
- :mod:`~resources.training.warm_start` - split the warm-up rows off the candidates, train the warm student
- :mod:`~resources.training.warm_student_cache` - reuse a published warm student whose inputs all match
- :mod:`~resources.training.trl_trainers` - teacher DPO with TRL, ``DPOParams`` / ``SFTParams`` / ``LoraParams``
- :mod:`~resources.training.launch` - ``accelerate launch`` for multi-GPU training in a subprocess
"""

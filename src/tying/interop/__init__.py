"""tying.interop: ties inside the tools ML engineers use.

- :mod:`tying.interop.hf`: ``save_pretrained`` / ``from_pretrained`` /
  ``resize_token_embeddings`` for Plan-tied Hugging Face models (also importable
  as :mod:`tying.hf`);
- :mod:`tying.interop.lora`: peft LoRA adapters on tied weights (their merge and
  unload in :mod:`tying.interop.lora_unload`);
- :mod:`tying.interop.quantization`: dynamic int8 quantization of tied models;
- :mod:`tying.interop.graph_quantization`: FX (``prepare_fx``) and PT2E
  (``prepare_pt2e``) quantization of tied models;
- :mod:`tying.interop.pruning`: ``torch.nn.utils.prune`` on tied weights.

Each module imports its outside package lazily; what is missing is named with
the extra to install (``pip install 'tying[interop]'``).
"""

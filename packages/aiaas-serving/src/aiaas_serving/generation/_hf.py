"""Loading a Llama-family model from a Hugging Face folder (config, safetensors, tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from aiaas_serving.generation._config import LlamaConfig
from aiaas_serving.generation._errors import ModelFileInvalid
from aiaas_serving.generation._loaded import GenerationModel, finish_model, runtime_device
from aiaas_serving.generation._model import LlamaForCausalLM
from aiaas_serving.generation._tokenizer import GenerationTokenizer

__all__ = ["load_hf_folder"]

_WEIGHT_PREFIXES = ("model.", "lm_head.")


def load_hf_folder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> GenerationModel:
    """Load a model saved the Hugging Face way: ``config.json``, ``*.safetensors`` (sharded or
    not), ``tokenizer.json``, and the chat template from ``chat_template.jinja`` or
    ``tokenizer_config.json``. Nothing is downloaded.

    A missing or malformed file raises :class:`ModelFileInvalid` naming it; a non-Llama
    ``model_type`` :class:`ModelArchitectureUnsupported`.
    """
    from safetensors.torch import load_file  # noqa: PLC0415 -- only when loading a model

    folder = Path(path)
    target = runtime_device(device)
    if not folder.is_dir():
        raise ModelFileInvalid(f"no model folder at {folder}: check the path")
    config_data = _json(folder / "config.json", required=True)
    config = LlamaConfig.from_hf_dict(config_data)
    generation = _json(folder / "generation_config.json", required=False)
    weight_files = sorted(folder.glob("*.safetensors"))
    if not weight_files:
        raise ModelFileInvalid(
            f"{folder} holds no *.safetensors weights: save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    state: dict[str, torch.Tensor] = {}
    for file in weight_files:
        try:
            tensors = load_file(str(file))
        except Exception as exc:  # noqa: BLE001 -- safetensors raises its own untyped errors
            raise ModelFileInvalid(
                f"{file.name} is not a readable safetensors file ({type(exc).__name__})"
            ) from None
        state.update(
            {key: value for key, value in tensors.items() if key.startswith(_WEIGHT_PREFIXES)}
        )
    model = LlamaForCausalLM.uninitialized(config)
    model.load_hf_state_dict({key: value.float() for key, value in state.items()})
    del state

    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelFileInvalid(
            f"{folder} has no tokenizer.json: save the tokenizer with a fast tokenizer's "
            "save_pretrained"
        )
    tokenizer_config = _json(folder / "tokenizer_config.json", required=False)
    template_file = folder / "chat_template.jinja"
    if template_file.is_file():
        tokenizer_config["chat_template"] = template_file.read_text(encoding="utf-8")
    eos: list[object] = []
    for source in (config_data, generation):
        value = source.get("eos_token_id")
        eos.extend(value if isinstance(value, list) else [] if value is None else [value])
    tokenizer = GenerationTokenizer.from_tokenizer_json(
        tokenizer_file.read_text(encoding="utf-8"),
        tokenizer_config,
        eos_token_ids=[token for token in eos if isinstance(token, int)],
        bos_token_id=config.bos_token_id,
    )
    return GenerationModel(
        name=name or folder.name,
        config=config,
        model=finish_model(model, dtype=dtype, device=target),
        tokenizer=tokenizer,
        dtype=dtype,
        device=target,
    )


def _json(file: Path, *, required: bool) -> dict[str, Any]:
    if not file.is_file():
        if required:
            raise ModelFileInvalid(f"{file.parent} has no {file.name}: it is not a model folder")
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileInvalid(f"{file.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFileInvalid(f"{file.name} must hold a JSON object")
    return data

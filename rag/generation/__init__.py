"""Answer engines behind one interface (``base.Generator``).

- ``llama``: a local GGUF model in llama.cpp (imported only when used);
- ``fake``: deterministic, for tests;
- ``worker``: runs either in a supervised child process, so a native crash of the model
  runtime (a segfault, an abort, an out-of-memory kill) cannot take the service down.
"""

from rag.generation.base import (
    ChatMessage,
    Completion,
    EngineState,
    EngineUnavailable,
    Generator,
)
from rag.generation.fake import FakeGenerator

__all__ = [
    "ChatMessage",
    "Completion",
    "EngineState",
    "EngineUnavailable",
    "FakeGenerator",
    "Generator",
]

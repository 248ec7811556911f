"""The answer-engine interface: what the reader needs of any model runtime.

One interface serves the in-process llama.cpp engine, the deterministic fake, the supervised
worker process that wraps either, and (later) a remote OpenAI-compatible model server:

- ``stream_chat``: answer text piece by piece (chat clients that want raw streaming);
- ``complete``: a whole answer with the log-probability of every token it chose, so the reader
  can judge it before anybody sees it;
- ``score``: the log-probabilities a model gives to candidate answers, each read as a complete
  reply (its tokens, then the end-of-turn token) after the same prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

if TYPE_CHECKING:
    from rag.generation.states import StateReport


class ChatMessage(TypedDict):
    role: str
    content: str


class EngineUnavailable(RuntimeError):
    """The answer engine cannot answer now (loading, restarting after a crash, failed).

    ``retry_after`` is the number of seconds after which trying again makes sense.
    """

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


EngineStateName = Literal["ready", "loading", "restarting", "failed", "not-loaded"]


@dataclass
class EngineState:
    """What ``/healthz`` says about the answer engine."""

    state: EngineStateName
    detail: str = ""
    restarts: int = 0
    pid: int | None = None
    info: dict[str, object] = field(default_factory=dict)


@dataclass
class Completion:
    """A whole answer and how sure the model was of each token it chose."""

    text: str
    #: Natural-log probability of each generated token, the end-of-turn token included when
    #: the answer ended by itself.
    token_logprobs: list[float] = field(default_factory=list)
    #: True when the model ended the answer (end-of-turn), False when ``max_tokens`` cut it.
    finished: bool = True
    prompt_tokens: int = 0
    #: Prompt tokens llama.cpp could reuse from its cache (the common prefix of the last prompt).
    cached_tokens: int = 0
    #: Prompt tokens read back from a stored state (``rag/generation/states.py``) instead.
    state_tokens: int = 0
    #: Seconds from the call to the first generated token (prompt reading).
    first_token_s: float = 0.0
    #: Seconds spent generating after the first token.
    decode_s: float = 0.0


def collect(stream: Iterator[str]) -> list[str]:
    """The pieces of a stream, stopping (and closing it) if the caller goes away."""
    from rag.generation.cancel import check

    pieces: list[str] = []
    try:
        for piece in stream:
            check()
            pieces.append(piece)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return pieces


class Generator(ABC):
    """An answer engine. Implementations must be usable from one thread at a time."""

    name: str = "generator"

    @abstractmethod
    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        """Yield answer text piece by piece; closing the iterator stops generation."""

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        """The whole answer. Engines without token probabilities return none (``[]``).

        ``contrast`` (the request without its evidence) and ``alpha`` ask for context-aware
        decoding; an engine that cannot read two requests' logits side by side (this default,
        a remote model server) decodes ``messages`` plainly."""
        pieces = collect(self.stream_chat(messages, max_tokens=max_tokens, temperature=temperature))
        return Completion(text="".join(pieces))

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        """Log-probability of every token of each candidate reply, end-of-turn token last.

        An engine that cannot score returns ``[]`` (the reader then decides without it).
        """
        return []

    def prepare_prefixes(
        self, prefixes: list[list[ChatMessage]], *, tails: Sequence[str]
    ) -> StateReport | None:
        """Precompute the model state after each prompt prefix (instructions + a passage), so
        a prompt starting with one is read from there; ``tails`` are the texts that may follow
        the last message's content. None: this engine keeps no states."""
        return None

    def remember_prefix(self, messages: list[ChatMessage], *, tails: Sequence[str]) -> bool:
        """Keep the state of prefix ``messages`` of the prompt just read, if it had none
        stored (least recently used entries make room). False: nothing kept."""
        return False

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model (an estimate where the engine cannot tell)."""
        return max(1, len(text) // 3)

    def state(self) -> EngineState:
        return EngineState("ready")

    def unavailable(self) -> EngineUnavailable | None:
        """Why the engine cannot answer right now (with a retry time), or None if it can."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook; most engines hold nothing to free
        """Free the engine (stop a worker process)."""

"""Answer engines: llama.cpp running a local GGUF model, and a deterministic fake for tests."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

from rag.text import fold, words


class ChatMessage(TypedDict):
    role: str
    content: str


class Generator(ABC):
    """Streams the pieces of a chat completion."""

    name: str

    @abstractmethod
    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        """Yield answer text piece by piece; closing the iterator stops generation."""


class LlamaCppGenerator(Generator):
    """A GGUF model through llama-cpp-python, using the chat template embedded in the file.

    One model, one generation at a time: llama.cpp contexts are not thread-safe, so a lock is
    held for the whole stream (the HTTP layer queues requests in front of it).
    """

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama

        self.name = model_path.stem
        self.model_path = model_path
        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=512,
            verbose=False,
        )
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        with self.lock:
            stream: Any = self._llm.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=1 if temperature == 0 else 40,
                repeat_penalty=1.05,
                stream=True,
            )
            try:
                for part in stream:
                    delta = part["choices"][0]["delta"].get("content")
                    if delta:
                        yield delta
            finally:
                stream.close()


_PASSAGE = re.compile(r"^\[(\d+)\][^\n]*\n(.*?)(?=^\[\d+\]|\Z|^Câu hỏi:|^Question:)", re.M | re.S)
_SENT = re.compile(r"[^.!?\n]+[.!?]?")


class FakeGenerator(Generator):
    """Deterministic stand-in: queued replies first, else an extractive answer.

    The extractive answer is the passage sentence sharing the most syllables with the question,
    cited with its passage number; with too little overlap it abstains. It lets every layer above
    be tested quickly and exactly, with no model.
    """

    def __init__(self, replies: list[str] | None = None, *, abstain_text: str = "") -> None:
        self.name = "fake"
        self.replies = list(replies or [])
        self.calls: list[list[ChatMessage]] = []
        self.abstain_text = abstain_text or "Không tìm thấy thông tin này trong các bài viết."

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self.calls.append(list(messages))
        reply = self.replies.pop(0) if self.replies else self._extract(messages[-1]["content"])
        yield from re.findall(r"\S+\s*", reply)[:max_tokens]

    def _extract(self, prompt: str) -> str:
        question = prompt.rsplit("Câu hỏi:", 1)[-1] if "Câu hỏi:" in prompt else prompt
        q = {fold(w) for w in words(question) if len(w) > 1}
        best: tuple[float, str, str] = (0.0, "", "")
        for n, body in _PASSAGE.findall(prompt):
            for sent in _SENT.findall(body):
                overlap = len(q & {fold(w) for w in words(sent)})
                if overlap > best[0]:
                    best = (overlap, sent.strip(), n)
        if not q or best[0] < max(2, 0.4 * len(q)):
            return self.abstain_text
        return f"{best[1]} [{best[2]}]"

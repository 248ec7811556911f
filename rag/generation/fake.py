"""A deterministic answer engine for tests: queued replies first, else an extractive answer."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Sequence

from rag.generation.base import ChatMessage, Completion, Generator, collect
from rag.generation.states import StateReport
from rag.text import fold, words

_PASSAGE = re.compile(r"^\[(\d+)\][^\n]*\n(.*?)(?=^\[\d+\]|\Z|^Câu hỏi:|^Question:)", re.M | re.S)
_SENT = re.compile(r"[^.!?\n]+[.!?]?")


class FakeGenerator(Generator):
    """Deterministic stand-in for a model.

    The extractive answer is the passage sentence sharing the most syllables with the question,
    cited with its passage number; with too little overlap it abstains. ``score`` gives each
    candidate the log of the share of its words found in the prompt's passages, so answers
    taken from the passages score high and invented ones low. ``delay_s`` sleeps before every
    piece (tests that need a generation in flight). It lets every layer above be tested
    quickly and exactly, with no model.
    """

    def __init__(
        self,
        replies: list[str] | None = None,
        *,
        abstain_text: str = "",
        delay_s: float = 0.0,
    ) -> None:
        self.name = "fake"
        self.replies = list(replies or [])
        self.calls: list[list[ChatMessage]] = []
        self.abstain_text = abstain_text or "Không tìm thấy thông tin này trong các bài viết."
        self.delay_s = delay_s
        self.prefixes: list[list[ChatMessage]] = []
        self.remembered: list[list[ChatMessage]] = []

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self.calls.append(list(messages))
        reply = self.replies.pop(0) if self.replies else self._extract(messages[-1]["content"])
        for piece in re.findall(r"\S+\s*", reply)[:max_tokens]:
            if self.delay_s:
                time.sleep(self.delay_s)
            yield piece

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        # Extractive already: the answer comes from the evidence whatever ``contrast`` says.
        pieces = collect(self.stream_chat(messages, max_tokens=max_tokens, temperature=temperature))
        text = "".join(pieces)
        [logprobs] = self.score(messages, [text]) if pieces else [[0.0]]
        return Completion(
            text=text,
            token_logprobs=[*logprobs[: len(pieces)], logprobs[-1]],
            finished=True,
            prompt_tokens=sum(self.count_tokens(m["content"]) for m in messages),
        )

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        prompt = messages[-1]["content"] if messages else ""
        bodies = " ".join(body for _, body in _PASSAGE.findall(prompt))
        known = {fold(w) for w in words(bodies)}
        out = []
        for cand in candidates:
            toks = [fold(w) for w in words(re.sub(r"\[\d+\]", " ", cand))]
            if not toks:
                out.append([-5.0])
                continue
            share = sum(t in known for t in toks) / len(toks)
            lp = math.log(max(share, 0.01))
            out.append([lp] * len(toks) + [lp])
        return out

    def prepare_prefixes(
        self, prefixes: list[list[ChatMessage]], *, tails: Sequence[str]
    ) -> StateReport:
        """Records the prefixes (no model, so no state): each counts as computed."""
        self.prefixes = [list(m) for m in prefixes]
        return StateReport(computed=len(prefixes))

    def remember_prefix(self, messages: list[ChatMessage], *, tails: Sequence[str]) -> bool:
        """Records the prefix; the fake keeps no state."""
        self.remembered.append(list(messages))
        return False

    def count_tokens(self, text: str) -> int:
        return max(1, len(re.findall(r"\S+", text)))

    def _extract(self, prompt: str) -> str:
        question = prompt.rsplit("Câu hỏi:", 1)[-1] if "Câu hỏi:" in prompt else prompt
        question = question.rsplit("Question:", 1)[-1] if "Question:" in question else question
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

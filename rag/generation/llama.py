"""llama.cpp running a local GGUF model (llama-cpp-python), with token log-probabilities.

CPU choice, measured (see README "Answer engine, CPUs and crashes"): on Intel Xeons with AMX,
llama.cpp repacks Q4_K weights into its AMX buffer type and then segfaults in the first decode
(upstream llama.cpp issue 20824, ``ggml_backend_amx_mul_mat``). Loading with the model
parameter ``use_extra_bufts = false`` avoids the AMX buffers. The same switch also turns off
the CPU "repack" buffers for Q4_K, which measured slower at reading prompts on the AVX2 and the
AVX-512 machines too, so "auto" turns them off everywhere — setting ``extra_buffers`` ("auto",
"on", "off") overrides the choice.

This module touches a few private attributes of ``llama_cpp.Llama`` (``_ctx``, ``_batch``,
``_model``, ``input_ids``, ``n_tokens``) to read logits for every token of a candidate in one
decode; they are stable in the pinned version (0.3.36) and covered by the e2e tests.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.generation.base import ChatMessage, Completion, Generator
from rag.generation.cancel import check
from rag.generation.states import StateReport, StateStore, engine_key, token_hash

ExtraBuffers = Literal["auto", "on", "off"]
_MARK = "\u2063RAGMARK\u2063"


def system_info() -> str:
    """llama.cpp's own line of the CPU features this build uses (``AVX2 = 1 | …``)."""
    import llama_cpp

    raw: bytes = llama_cpp.llama_print_system_info()
    return raw.decode(errors="replace").strip()


def build_features(info: str | None = None) -> dict[str, bool]:
    """The ``NAME = 1`` flags of llama.cpp's system info, as a dict."""
    info = system_info() if info is None else info
    return {k: v == "1" for k, v in re.findall(r"([A-Z0-9_]+) = (\d)", info)}


def use_extra_buffers(choice: ExtraBuffers, info: str | None = None) -> tuple[bool, str]:
    """Whether to let llama.cpp repack weights into extra buffer types, and why."""
    if choice == "on":
        return True, "extra buffer types on (setting extra_buffers=on)"
    if choice == "off":
        return False, "extra buffer types off (setting extra_buffers=off)"
    feats = build_features(info)
    if feats.get("AMX_INT8"):
        return False, (
            "extra buffer types off: this llama.cpp build uses AMX, whose Q4_K path crashes "
            "(llama.cpp issue 20824)"
        )
    # Measured with `rag bench-engine` (2 cores, 1.5B Q4_K_M, ~500-token prompt, medians): on
    # an AVX-512 AMD EPYC off reads prompts 1.26x faster (122 vs 97 tok/s) and decodes 0.83x;
    # on an AVX2-only AMD EPYC 1.18x (49.0 vs 41.6 tok/s) and 0.86x (14.8 vs 17.2;
    # bench/reports/engine-2026-12-03-amd-avx2). Answers here are prompt-bound (~370 new prompt
    # tokens, ~20 generated), so off answers sooner on every CPU measured.
    simd = "AVX-512" if feats.get("AVX512") else "AVX2" if feats.get("AVX2") else "this"
    return False, (
        f"extra buffer types off: on this {simd} build the plain kernels read prompts faster "
        "than the repacked ones (measured: README)"
    )


class LlamaCppGenerator(Generator):
    """A GGUF model through llama-cpp-python, using the chat template embedded in the file.

    One model, one generation at a time: llama.cpp contexts are not thread-safe, so a lock is
    held for every call. llama-cpp-python keeps the KV cache of the last prompt, so a prompt
    that starts like the previous one (the fixed instructions) is read only from where they
    differ.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        n_threads: int,
        extra_buffers: ExtraBuffers = "auto",
        states_dir: Path | None = None,
        states_max_bytes: int = 0,
    ) -> None:
        import llama_cpp
        import llama_cpp.llama as llama_module
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = model_path.stem
        self.model_path = model_path
        self.system_info = system_info()
        self.extra_buffers, self.extra_buffers_reason = use_extra_buffers(extra_buffers)
        defaults = llama_cpp.llama_model_default_params
        context_defaults = llama_cpp.llama_context_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = self.extra_buffers
            return params

        def context_params() -> Any:
            # Candidate answers are scored side by side, one sequence each, all sharing the
            # prompt's cells of one (unified) KV cache.
            params = context_defaults()
            params.n_seq_max = SCORE_SEQUENCES + 1
            params.kv_unified = True
            return params

        # Llama() takes neither use_extra_bufts nor n_seq_max: give it defaults with ours set.
        with _PARAMS_LOCK:
            llama_module.llama_cpp.llama_model_default_params = model_params  # type: ignore[attr-defined]
            llama_module.llama_cpp.llama_context_default_params = context_params  # type: ignore[attr-defined]
            try:
                self._llm = Llama(
                    model_path=str(model_path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_batch=512,
                    verbose=False,
                )
            finally:
                llama_module.llama_cpp.llama_model_default_params = defaults  # type: ignore[attr-defined]
                llama_module.llama_cpp.llama_context_default_params = context_defaults  # type: ignore[attr-defined]
        self.lock = threading.Lock()
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{model_path.name} has no chat template in its metadata")
        model = self._llm._model
        eos = self._llm.token_eos()
        bos = self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )
        self._end_of_turn = self._find_end_of_turn()
        self.n_vocab = int(self._llm.n_vocab())
        self.last_cached_tokens = 0
        #: Prompt tokens of the last prefill read back from a stored state (0: none used).
        self.last_state_tokens = 0
        #: Prefills that started from a stored state, and the prompt tokens they skipped.
        self.state_loads = 0
        self.state_tokens_loaded = 0
        self.states: StateStore | None = None
        if states_dir is not None and states_max_bytes > 0:
            key = engine_key(model_path, getattr(llama_cpp, "__version__", "?"))
            self.states = StateStore(states_dir / key, max_bytes=states_max_bytes)

    # --- prompt and tokens ----------------------------------------------------------------
    def _prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        result = self._formatter(messages=list(messages))  # type: ignore[arg-type]
        return list(
            self._llm.tokenize(
                result.prompt.encode(), add_bos=not result.added_special, special=True
            )
        )

    def _find_end_of_turn(self) -> int:
        """The token that closes an assistant reply in this model's chat template."""
        formatter = type(self._formatter)(
            template=self._formatter.template,
            eos_token=self._formatter.eos_token,
            bos_token=self._formatter.bos_token,
            add_generation_prompt=False,
        )
        text = formatter(
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK}]
        ).prompt
        tail = text.split(_MARK, 1)[-1]
        toks = self._llm.tokenize(tail.encode(), add_bos=False, special=True) if tail else []
        for tok in toks:
            if self._is_end(tok):
                return int(tok)
        return int(self._llm.token_eos())

    def _is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token))

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def _logits_row(self, i: int) -> np.ndarray:
        ptr = self._llm._ctx.get_logits_ith(i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    @staticmethod
    def _logprob(row: np.ndarray, token: int) -> float:
        top = float(row.max())
        return float(row[token] - top - np.log(np.exp(row - top).sum()))

    def _cached_prefix(self, tokens: list[int]) -> int:
        llm = self._llm
        n = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        """Put ``tokens`` in the KV cache (reusing the cached prefix, or a stored state of a
        longer prefix); return the logits after the last one."""
        llm = self._llm
        keep = min(self._cached_prefix(tokens), len(tokens) - 1)
        self.last_state_tokens = 0
        if self.states is not None:
            found = self.states.longest(tokens, longer_than=keep)
            if found is not None:
                if self._load_state(tokens, *found):
                    keep = self.last_state_tokens = found[0]
                    self.state_loads += 1
                    self.state_tokens_loaded += keep
                else:  # the cache was cleared for it: read the whole prompt
                    keep = 0
                    self.states.discard(tokens[: found[0]])
        self.last_cached_tokens = keep
        llm.n_tokens = keep
        llm.eval(tokens[keep:])
        return self._logits_row(-1).copy()

    def _load_state(self, tokens: list[int], n: int, data: bytes) -> bool:
        """Replace the KV cache with a stored state of ``tokens[:n]``."""
        import ctypes

        import llama_cpp

        llm = self._llm
        ctx = llm._ctx.ctx
        llama_cpp.llama_memory_seq_rm(llm._ctx.memory, -1, -1, -1)
        llm.n_tokens = 0
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(ctx, buf, len(data), 0) != len(data):
            llama_cpp.llama_memory_seq_rm(llm._ctx.memory, -1, -1, -1)
            return False
        llm.input_ids[:n] = tokens[:n]
        llm.n_tokens = n
        return True

    def _save_state(self, n: int | None = None) -> bytes:
        """The KV cells of sequence 0 (its first ``n`` positions; all without ``n``), as
        bytes. A part is copied to a scratch sequence first (cells are shared, not copied)."""
        import ctypes

        import llama_cpp

        ctx = self._llm._ctx.ctx
        memory = self._llm._ctx.memory
        seq = 0
        if n is not None:
            seq = SCORE_SEQUENCES  # the last of the scoring sequences: free between calls
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, n)
        try:
            size = llama_cpp.llama_state_seq_get_size(ctx, seq)
            buf = (ctypes.c_uint8 * size)()
            got = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq)
            return bytes(buf[:got])
        finally:
            if seq:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)

    def prefix_tokens(self, messages: list[ChatMessage], tails: Sequence[str]) -> list[int]:
        """The tokens every prompt shares that is ``messages`` with one of ``tails`` (or
        nothing) appended to the last message: the part a stored state can stand for whatever
        follows (the tokenizer may merge the end of the text with what comes next)."""
        variants = []
        for tail in [*tails, ""]:
            last = {**messages[-1], "content": messages[-1]["content"] + tail}
            variants.append(self._prompt_tokens([*messages[:-1], last]))  # type: ignore[list-item]
        n = min(len(v) for v in variants)
        for i in range(n):
            if len({v[i] for v in variants}) > 1:
                n = i
                break
        return variants[0][:n]

    def prepare_prefixes(
        self, prefixes: list[list[ChatMessage]], *, tails: Sequence[str]
    ) -> StateReport:
        """Store the state after each prefix (see ``prefix_tokens``); keep those already
        stored, remove the stored ones no prefix needs any more, skip what the cap leaves no
        room for."""
        report = StateReport()
        store = self.states
        if store is None:
            report.messages.append("passage states are off (setting passage_states_mb = 0)")
            return report
        t0 = time.perf_counter()
        with self.lock:
            wanted = [self.prefix_tokens(m, tails) for m in prefixes]
            keep = {token_hash(t) for t in wanted}
            report.removed = store.retain(keep)
            for tokens in wanted:
                check()
                if store.has(tokens):
                    report.kept += 1
                    continue
                if report.skipped:  # full: every entry left is one that is wanted
                    report.skipped += 1
                    continue
                self._prefill_exact(tokens)
                data = self._save_state()
                if store.put(tokens, data, protect=keep):
                    report.computed += 1
                else:
                    report.skipped += 1
            report.bytes = store.usage()
        report.seconds = time.perf_counter() - t0
        if report.skipped:
            report.messages.append(
                f"the state store is full ({report.bytes / 1e6:.0f} MB of "
                f"{store.max_bytes / 1e6:.0f} MB): {report.skipped} passages have no state "
                "and are read in full; raise passage_states_mb to keep them all"
            )
        return report

    def remember_prefix(self, messages: list[ChatMessage], *, tails: Sequence[str]) -> bool:
        """Keep the state of the prefix ``messages`` (see ``prefix_tokens``) of the prompt just
        read, if that prompt was read without one: a passage that had none (the store was
        full) gets one, the least recently used entries making room. True if stored."""
        store = self.states
        if store is None:
            return False
        with self.lock:
            tokens = self.prefix_tokens(messages, tails)
            if store.has(tokens) or self._cached_prefix(tokens) < len(tokens):
                return False
            return store.put(tokens, self._save_state(len(tokens)))

    def _prefill_exact(self, tokens: list[int]) -> None:
        """The KV cache holds exactly ``tokens`` (the cached prefix reused)."""
        import llama_cpp

        llm = self._llm
        keep = min(self._cached_prefix(tokens), len(tokens))
        llm.n_tokens = keep
        if keep < len(tokens):
            llm.eval(tokens[keep:])
        llama_cpp.llama_memory_seq_rm(llm._ctx.memory, 0, len(tokens), -1)
        llm.n_tokens = len(tokens)

    # --- the interface --------------------------------------------------------------------
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

    def _prefill_side(self, tokens: list[int], prompt: list[int]) -> tuple[np.ndarray, int]:
        """Put ``tokens`` in KV sequence ``SIDE`` (its prefix shared with ``prompt``, already in
        sequence 0, is shared, not read again); return the logits after it and its length."""
        import llama_cpp

        llm = self._llm
        memory = llm._ctx.memory
        batch = llm._batch.batch
        common = 0
        for a, b in zip(tokens, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        llama_cpp.llama_memory_seq_rm(memory, SIDE, -1, -1)
        llama_cpp.llama_memory_seq_cp(memory, 0, SIDE, 0, common)
        pos = common
        while pos < len(tokens):
            check()
            part = tokens[pos : pos + llm.n_batch]
            for j, tok in enumerate(part):
                batch.token[j] = tok
                batch.pos[j] = pos + j
                batch.seq_id[j][0] = SIDE
                batch.n_seq_id[j] = 1
                batch.logits[j] = j == len(part) - 1
            batch.n_tokens = len(part)
            llm._ctx.decode(llm._batch)
            pos += len(part)
        return self._logits_row(-1).copy(), len(tokens)

    def _step_both(self, token: int, side_pos: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode ``token`` in sequence 0 (after the prompt and answer so far) and in sequence
        ``SIDE`` at ``side_pos``, in one batch; the logits after each."""
        llm = self._llm
        batch = llm._batch.batch
        for j, (seq, pos) in enumerate(((0, llm.n_tokens), (SIDE, side_pos))):
            batch.token[j] = token
            batch.pos[j] = pos
            batch.seq_id[j][0] = seq
            batch.n_seq_id[j] = 1
            batch.logits[j] = True
        batch.n_tokens = 2
        llm._ctx.decode(llm._batch)
        llm.input_ids[llm.n_tokens] = token
        llm.n_tokens += 1
        return self._logits_row(0).copy(), self._logits_row(1).copy()

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        """Greedy (or sampled, from ``seed``) answer with the log-probability of every chosen
        token (under ``messages``).

        With ``contrast`` (the same request without its evidence) and ``alpha`` > 0, tokens
        are chosen by context-aware decoding (Shi et al. 2023, "Trusting Your Evidence"):
        ``(1 + alpha) * log p(token | messages) - alpha * log p(token | contrast)``, among the
        tokens at least ``PLAUSIBLE`` times as likely as the best under ``messages`` — what the
        evidence makes likelier wins over what the model would say anyway. Both are decoded
        side by side in one batch (two KV sequences)."""
        t0 = time.perf_counter()
        with self.lock:
            llm = self._llm
            prompt = self._prompt_tokens(messages)
            if len(prompt) + max_tokens > llm.n_ctx():
                raise ValueError(
                    f"the prompt has {len(prompt)} tokens; with {max_tokens} to generate it "
                    f"exceeds the context window ({llm.n_ctx()}, setting n_ctx)"
                )
            row = self._prefill(prompt)
            state_tokens = self.last_state_tokens
            side: np.ndarray | None = None
            side_pos = 0
            if contrast is not None and alpha > 0:
                side, side_pos = self._prefill_side(self._prompt_tokens(contrast), prompt)
            first_s = time.perf_counter() - t0
            out: list[int] = []
            logprobs: list[float] = []
            finished = False
            rng = np.random.default_rng(seed)
            try:
                while len(out) < max_tokens:
                    check()  # the caller went away: stop at this token
                    scores = row if side is None else _contrasted(row, side, alpha)
                    if temperature > 0:
                        p = np.exp((scores - scores.max()) / temperature)
                        token = int(rng.choice(len(p), p=p / p.sum()))
                    else:
                        token = int(scores.argmax())
                    logprobs.append(self._logprob(row, token))
                    if self._is_end(token):
                        finished = True
                        break
                    out.append(token)
                    if side is None:
                        llm.eval([token])
                        row = self._logits_row(-1).copy()
                    else:
                        row, side = self._step_both(token, side_pos)
                        side_pos += 1
            finally:
                if side is not None:
                    import llama_cpp

                    llama_cpp.llama_memory_seq_rm(llm._ctx.memory, SIDE, -1, -1)
            decode_s = time.perf_counter() - t0 - first_s
            text = llm.detokenize(out).decode("utf-8", errors="replace")
            return Completion(
                text=text,
                token_logprobs=logprobs,
                finished=finished,
                prompt_tokens=len(prompt),
                cached_tokens=self.last_cached_tokens,
                state_tokens=state_tokens,
                first_token_s=first_s,
                decode_s=decode_s,
            )

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        """Each candidate read as the whole reply after the prompt, end-of-turn token last.

        The prompt is read once (sequence 0). Candidates are then decoded side by side in one
        batch, each in its own sequence that shares the prompt's KV cells: on a CPU one batch
        of a hundred tokens costs what three or four separate small decodes cost.
        """
        if not candidates:
            return []
        import llama_cpp

        with self.lock:
            llm = self._llm
            prompt = self._prompt_tokens(messages)
            first = self._prefill(prompt)
            n_past = len(prompt)
            # A candidate fits the context window and one batch (longer ones are cut).
            room = max(1, min(llm.n_ctx() - n_past - 2, llm.n_batch))
            seqs = []
            for cand in candidates:
                toks = [int(t) for t in llm.tokenize(cand.encode(), add_bos=False, special=False)]
                seqs.append([*toks[:room], self._end_of_turn])
            results: list[list[float]] = [[self._logprob(first, t[0])] for t in seqs]
            memory = llm._ctx.memory
            batch = llm._batch.batch
            todo = [i for i, t in enumerate(seqs) if len(t) > 1]
            while todo:
                check()
                group: list[int] = []
                used = 0
                for i in todo:
                    need = len(seqs[i]) - 1
                    if group and (len(group) >= SCORE_SEQUENCES or used + need > llm.n_batch):
                        break
                    group.append(i)
                    used += need
                todo = todo[len(group) :]
                rows: list[tuple[int, int, int]] = []  # (candidate, token index, batch row)
                j = 0
                for seq, i in enumerate(group, 1):
                    llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
                    llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, n_past)
                    for k, tok in enumerate(seqs[i][:-1]):
                        batch.token[j] = tok
                        batch.pos[j] = n_past + k
                        batch.seq_id[j][0] = seq
                        batch.n_seq_id[j] = 1
                        batch.logits[j] = True
                        rows.append((i, k + 1, j))
                        j += 1
                batch.n_tokens = j
                try:
                    llm._ctx.decode(llm._batch)
                    for i, k, row in rows:
                        results[i].append(self._logprob(self._logits_row(row), seqs[i][k]))
                finally:
                    for seq in range(1, len(group) + 1):
                        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            return results


#: Candidates decoded side by side in one batch (each its own KV sequence).
SCORE_SEQUENCES = 16
#: The KV sequence of the request without evidence in context-aware decoding (free then: the
#: scoring sequences are used only inside ``score``).
SIDE = 1
#: Context-aware decoding considers only tokens at least this share as likely as the best one
#: under the evidence (the "adaptive plausibility" cut of contrastive decoding, Li et al. 2023).
PLAUSIBLE = 0.1


def _log_softmax(row: np.ndarray) -> np.ndarray:
    top = float(row.max())
    out: np.ndarray = row - top - float(np.log(np.exp(row - top).sum()))
    return out


def _contrasted(row: np.ndarray, side: np.ndarray, alpha: float) -> np.ndarray:
    with_evidence = _log_softmax(row)
    without = _log_softmax(side)
    plausible = with_evidence >= with_evidence.max() + np.log(PLAUSIBLE)
    out: np.ndarray = np.where(plausible, (1 + alpha) * with_evidence - alpha * without, -np.inf)
    return out


_PARAMS_LOCK = threading.Lock()

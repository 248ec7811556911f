"""Prompts for the answer model: fixed instructions first (llama.cpp reuses that prefix),
then the numbered passages, then the question."""

from __future__ import annotations

from rag.generation import ChatMessage
from rag.types import Passage

NOT_FOUND_VI = "Không tìm thấy thông tin này trong các bài viết."
NOT_FOUND_EN = "Not found in the articles."

SYSTEM_VI = (
    "Bạn là trợ lý hỏi đáp về các bài báo tiếng Việt. Chỉ dùng thông tin trong các đoạn trích "
    "được đánh số [1], [2], … mà người dùng đưa ra; không dùng hiểu biết riêng, "
    "không bịa số liệu.\n"
    "Trả lời thẳng vào câu hỏi, ngắn gọn, bằng tiếng Việt, không nhắc lại câu hỏi; chép đúng "
    "tên riêng và con số như trong đoạn trích. Sau mỗi ý ghi số của đoạn trích chứa ý đó "
    "trong ngoặc vuông, như [2].\n"
    f'Nếu các đoạn trích không chứa câu trả lời, chỉ trả lời đúng một câu: "{NOT_FOUND_VI}"'
)

# No "if not found, say …" line: with it the model replied "not found" to 9 of the 12 English
# answerable questions of the gold set's dev split (3 right); without it and asked for the answer
# itself, 9 of 12 were right. Whether to give an answer is the calibrated confidence's call
# (``rag/reader.py``), which still scores the "not found" reply.
SYSTEM_EN = (
    "You answer questions about Vietnamese news articles. Use only the numbered passages [1], "
    "[2], … given by the user; never use outside knowledge and never invent figures.\n"
    "Reply in English with the answer itself (a name, number, date or short phrase, names and "
    "numbers exactly as written in the passages), then the number of the passage it comes from "
    "in square brackets, like: Hà Nội [2]"
)


# Worked examples, given as earlier chat turns (``prompt_examples``): made-up passages about
# nothing in any article, each answered with the short phrase itself (not the question
# repeated) and the number of the item that holds it, a figure from another item beside it.
EXAMPLES_VI: list[ChatMessage] = [
    {
        "role": "user",
        "content": "Các đoạn trích:\n\n[1]\nNăm 2023, tỉnh Hòa Lâm đón 1,2 triệu lượt khách "
        "du lịch, tăng 15% so với năm trước.\n\n[2]\nTại hội nghị xúc tiến đầu tư ngày 12/4, "
        "tỉnh đã trao giấy chứng nhận cho 8 dự án với tổng vốn 3.500 tỷ đồng.\n\n"
        "Câu hỏi: Tại hội nghị xúc tiến đầu tư, tỉnh Hòa Lâm trao giấy chứng nhận cho bao "
        "nhiêu dự án?",
    },
    {"role": "assistant", "content": "8 dự án, tổng vốn 3.500 tỷ đồng [2]."},
    {
        "role": "user",
        "content": "Các đoạn trích:\n\n[1]\nHiệp hội Cà phê được thành lập năm 1990 tại "
        "Buôn Ma Thuột.\n\n[2]\nÔng Lê Quang Minh, Chủ tịch Hiệp hội, cho rằng ngành cần tập "
        "trung vào ba việc: nâng chất lượng, xây dựng thương hiệu và mở rộng thị trường.\n\n"
        "Câu hỏi: Theo Chủ tịch Hiệp hội, ngành cà phê cần tập trung vào những việc gì?",
    },
    {
        "role": "assistant",
        "content": "Nâng chất lượng, xây dựng thương hiệu và mở rộng thị trường [2].",
    },
]
_PASSAGES_EN = (
    "Passages:\n\n[1]\nNăm 2023, tỉnh Hòa Lâm đón 1,2 triệu lượt khách du lịch, tăng 15% so "
    "với năm trước.\n\n[2]\nTại hội nghị xúc tiến đầu tư ngày 12/4, Phó Chủ tịch tỉnh Trần Thu "
    "Hà đã trao giấy chứng nhận cho 8 dự án.\n\nQuestion: "
)
EXAMPLES_EN: list[ChatMessage] = [
    {
        "role": "user",
        "content": _PASSAGES_EN
        + "How many projects received certificates at the investment conference?",
    },
    {"role": "assistant", "content": "8 projects [2]"},
    {
        "role": "user",
        "content": _PASSAGES_EN + "Which provincial vice chair handed over the certificates?",
    },
    {"role": "assistant", "content": "Trần Thu Hà [2]"},
]


# English questions, read against Vietnamese articles (``english_translate``): the model first
# writes the question in Vietnamese; retrieval and the evidence sentences then match the
# articles' own words, and the answer prompt shows the model both versions.
# (An instruction in Vietnamese did worse on dev: eval/reports/tried/prompt-variants.md.)
TRANSLATE_SYSTEM = (
    "Translate the user's question into Vietnamese. Keep names, numbers and abbreviations as "
    "they are. Write only the Vietnamese question."
)


def translation_messages(question: str) -> list[ChatMessage]:
    return [
        {"role": "system", "content": TRANSLATE_SYSTEM},
        {"role": "user", "content": question},
    ]


def examples(english: bool) -> list[ChatMessage]:
    return EXAMPLES_EN if english else EXAMPLES_VI


def format_passages(passages: list[Passage]) -> str:
    # No titles in the headers: small models answer with a passage's title when they see one.
    return "\n\n".join(f"[{i}]\n{p.chunk.text}" for i, p in enumerate(passages, 1))


def labels(english: bool) -> tuple[str, str]:
    """The headers of the passages and of the question."""
    return ("Passages", "Question") if english else ("Các đoạn trích", "Câu hỏi")


def prefix_messages(
    passage_text: str, *, english: bool, worked: bool = False
) -> tuple[list[ChatMessage], list[str]]:
    """The start every prompt shares whose first passage is ``passage_text`` (the part a stored
    model state stands for, see ``Generator.prepare_prefixes``) and the texts that may follow
    it in ``build_messages``: the next passage's number or the question."""
    label_p, label_q = labels(english)
    messages: list[ChatMessage] = [
        {"role": "system", "content": SYSTEM_EN if english else SYSTEM_VI},
        *(examples(english) if worked else []),
        {"role": "user", "content": f"{label_p}:\n\n[1]\n{passage_text}"},
    ]
    return messages, ["\n\n[2]\n", f"\n\n{label_q}: "]


def build_messages(
    question: str,
    passages: list[Passage],
    *,
    english: bool,
    history: list[ChatMessage],
    worked: bool = False,
    vietnamese: str = "",
) -> list[ChatMessage]:
    """The prompt: instructions, the worked examples if ``worked``, earlier turns, then the
    numbered evidence and the question (an English one followed by its Vietnamese version
    ``vietnamese`` where there is one)."""
    system = SYSTEM_EN if english else SYSTEM_VI
    label_p, label_q = labels(english)
    messages: list[ChatMessage] = [{"role": "system", "content": system}]
    if worked:
        messages += examples(english)
    # Earlier turns are kept short: their answers only, so the prompt stays small.
    for turn in history[-4:]:
        if turn["role"] in ("user", "assistant"):
            messages.append({"role": turn["role"], "content": turn["content"][:600]})
    body = f"{label_p}:\n\n{format_passages(passages)}\n\n{label_q}: {question}"
    if english and vietnamese:
        body += f"\n(In Vietnamese: {vietnamese})"
    messages.append({"role": "user", "content": body})
    return messages


def without_evidence(messages: list[ChatMessage], *, english: bool) -> list[ChatMessage]:
    """``messages`` (from ``build_messages``) with the evidence taken out of the last one:
    the same instructions, earlier turns and question — what context-aware decoding contrasts
    the answer with (what the model would say without the articles)."""
    label_q = labels(english)[1]
    last = messages[-1]["content"]
    _, sep, question = last.rpartition(f"\n\n{label_q}: ")
    if not sep:
        return messages
    return [*messages[:-1], {"role": "user", "content": f"{label_q}: {question}"}]

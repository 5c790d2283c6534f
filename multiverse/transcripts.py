"""Read files of model output: raw completions, or evaluation transcripts like ../shared/corpus.

A corpus transcript holds a header line with the problem, ``模型解答: `` and the whole chat (system,
user, assistant), then an extracted-answer section repeating it lowercased, and the reference answer.
Only the assistant's turn is model output.
"""

from dataclasses import dataclass
from pathlib import Path

QUESTION_MARK, ANSWER_MARK, EXTRACTED_MARK, REFERENCE_MARK = "问题: ", "模型解答: ", "提取的答案:", "参考答案:"
ASSISTANT_TURN = "<|im_start|>assistant\n"


@dataclass
class Transcript:
    path: str
    prompt: str  # everything the model was given, chat-formatted when known
    completion: str  # what the model wrote
    reference: str | None = None  # the reference answer, when the file carries one
    question: str | None = None  # the problem as the header states it, when the file has one


def read_transcript(path) -> Transcript:
    text = Path(path).read_text(encoding="utf-8")
    reference = question = None
    if text.startswith(QUESTION_MARK) and ANSWER_MARK in text:
        # The header runs up to the blank line before the answer mark; a problem may span several lines.
        question = text[len(QUESTION_MARK):text.index(ANSWER_MARK)].removesuffix("\n\n")
    if REFERENCE_MARK in text:
        reference = text.rsplit(REFERENCE_MARK, 1)[1].split("\n", 1)[0].strip() or None
    if ANSWER_MARK in text:
        body = text.split(ANSWER_MARK, 1)[1]
        for mark in (EXTRACTED_MARK, REFERENCE_MARK):
            body = body.split(mark, 1)[0]
        body = body.rstrip("\n")
        if ASSISTANT_TURN in body:
            head, completion = body.split(ASSISTANT_TURN, 1)
            return Transcript(str(path), head + ASSISTANT_TURN, completion, reference, question)
        return Transcript(str(path), "", body, reference, question)
    return Transcript(str(path), "", text, reference, question)


def completion_text(tokenizer, ids) -> str:
    """The text of generated ``ids`` with every tag kept, whether the tokenizer marks the tags special or not.

    ``skip_special_tokens=True`` would drop the tags of the published tokenizer (they are special there,
    as the reference adds them), and with them the structure and the ``</Think>`` that grading reads
    after. So only the other special tokens (``<|im_end|>``, padding ``<|endoftext|>``) are left out.
    """
    from .modeling_multiverse.tags import TAGS

    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    drop = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special and t.content not in TAGS}
    drop |= set(tokenizer.all_special_ids) - set(tokenizer.convert_tokens_to_ids(list(TAGS)))
    return tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)

"""Read files of model output: raw completions, or evaluation transcripts like ../shared/corpus.

A corpus transcript holds a header line with the problem, ``模型解答: `` and the whole chat (system,
user, assistant), then an extracted-answer section repeating it lowercased, and the reference answer.
Only the assistant's turn is model output.
"""

from dataclasses import dataclass
from pathlib import Path

ANSWER_MARK, EXTRACTED_MARK, REFERENCE_MARK = "模型解答: ", "提取的答案:", "参考答案:"
ASSISTANT_TURN = "<|im_start|>assistant\n"


@dataclass
class Transcript:
    path: str
    prompt: str  # everything the model was given, chat-formatted when known
    completion: str  # what the model wrote
    reference: str | None = None  # the reference answer, when the file carries one


def read_transcript(path) -> Transcript:
    text = Path(path).read_text(encoding="utf-8")
    reference = None
    if REFERENCE_MARK in text:
        reference = text.rsplit(REFERENCE_MARK, 1)[1].split("\n", 1)[0].strip() or None
    if ANSWER_MARK in text:
        body = text.split(ANSWER_MARK, 1)[1]
        for mark in (EXTRACTED_MARK, REFERENCE_MARK):
            body = body.split(mark, 1)[0]
        body = body.rstrip("\n")
        if ASSISTANT_TURN in body:
            head, completion = body.split(ASSISTANT_TURN, 1)
            return Transcript(str(path), head + ASSISTANT_TURN, completion, reference)
        return Transcript(str(path), "", body, reference)
    return Transcript(str(path), "", text, reference)

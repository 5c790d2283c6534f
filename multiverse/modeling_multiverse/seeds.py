"""Seed policies: what the engine forces at a sample's start, at a fork, at a merge, and when a queue runs out.

``Seeds`` forces what the model was trained to see: ``\\n<Path>\\n{label}:`` at each path of a fork and
``\\n<Conclusion>`` at a merge, encoded by the tokenizer (or the config's char table); a branch whose forced
tokens ran out samples. ``ReplaySeeds`` reproduces given completions (``forced_completions``, parity tests and
benchmarks): each branch is forced the tokens of the stream it reproduces, parsed like training data, and
stops when they run out. The engine asks one policy and never knows which it holds.
"""

import numpy as np

from .parser import IncrementalParser, default_label
from .structure import Stream
from .tags import CONCLUSION_SEED, LABEL_PATTERN, PATH_SEED


class Seeds:
    """Forced token ids of path and conclusion seeds, from the tokenizer or the config's char table."""

    replay = False

    def __init__(self, tokenizer=None, char_ids: dict | None = None):
        if tokenizer is None and not char_ids:
            raise ValueError("parallel generate needs `tokenizer=` (or config.multiverse_seed_token_ids, written by "
                             "`multiverse convert`) to seed each path with `\\n<Path>\\n1:`")
        self.tokenizer, self.char_ids = tokenizer, char_ids or {}
        self.char_of = {v: k for k, v in self.char_ids.items()}

    def encode(self, text: str, tag_ids: list) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.encode(text, add_special_tokens=False)
        from .tags import TAG_PATTERN, TAGS

        ids, pos = [], 0
        for m in TAG_PATTERN.finditer(text):
            ids += [self.char_ids[c] for c in text[pos:m.start()]]
            ids.append(tag_ids[TAGS.index(m.group())])
            pos = m.end()
        return ids + [self.char_ids[c] for c in text[pos:]]

    def label(self, outline_ids: list) -> str:
        if self.tokenizer is not None:
            text = self.tokenizer.decode(outline_ids)
        else:
            text = "".join(self.char_of.get(t, "\x00") for t in outline_ids)  # a label as long as nesting makes it
        m = LABEL_PATTERN.match(text)
        return m.group(1) if m else ""

    def path(self, parent: Stream, k: int, outline_ids: list, tag_ids: list) -> tuple[str, list[int]]:
        label = self.path_label(parent, k, outline_ids)
        return label, self.encode(PATH_SEED.format(label=label), tag_ids)

    def path_label(self, parent: Stream, k: int, outline_ids: list) -> str:
        """The label outline ``k`` spells out ("1.2: ..."), else its place."""
        return self.label(outline_ids) or default_label(parent, k)

    def conclusion(self, tag_ids: list) -> list[int]:
        return self.encode(CONCLUSION_SEED, tag_ids)

    # --- the engine's policy interface -------------------------------------------------------------
    def at_start(self, branch, prompt: int, prompt_sid: int) -> list[int]:
        return []

    def at_fork(self, parent, k: int, outline_ids: list, tag_ids: list, child) -> tuple[str, list[int]]:
        return self.path(parent.stream, k, outline_ids, tag_ids)

    def at_merge(self, parent, tag_ids: list) -> list[int]:
        return self.conclusion(tag_ids)

    def stops_when_empty(self, branch) -> bool:
        return False  # a seed is a prefix: the model takes over


class ReplaySeeds:
    """Forced replay of ``completions[p]`` after prompt ``p`` (or of ``completions[row]`` for each output row when
    there is one per row): the tokens of every stream of prompt + completion."""

    replay = True

    def __init__(self, prompts: list, completions: list, tag_ids: list):
        self.prompts, self.completions, self.tag_ids = prompts, completions, tag_ids
        self.per_row = len(completions) != len(prompts)
        self.scripts = {}  # script key -> {sid: tokens, "forks": {sid: [[child sid, ...] per fork]}}
        self.sid = {}  # branch -> the parsed stream it reproduces (-1: none, it stops at once)

    def key(self, branch) -> int:
        return branch.sample if self.per_row else branch.prompt

    def script(self, key: int, prompt: int) -> dict:
        if key not in self.scripts:  # parsed when the prompt is admitted, not all up front
            ids = list(self.prompts[prompt]) + list(self.completions[key])
            parser = IncrementalParser(False, True, "tokens", None)
            parser.feed_ids(ids, self.tag_ids)
            per_sid, arr, n = {}, np.asarray(ids), len(self.prompts[prompt])
            for start, end, sid, _ in parser.runs:
                start = max(start, n)
                if end > start:
                    per_sid.setdefault(sid, []).extend(arr[start:end].tolist())
            per_sid["forks"] = parser.fork_children
            self.scripts[key] = per_sid
        return self.scripts[key]

    def at_start(self, branch, prompt: int, prompt_sid: int) -> list[int]:
        self.sid[branch] = prompt_sid
        return self.script(self.key(branch), prompt).get(prompt_sid, [])

    def at_fork(self, parent, k: int, outline_ids: list, tag_ids: list, child) -> tuple[str, list[int]]:
        script = self.scripts[self.key(child)]
        forks = script["forks"].get(self.sid[parent], [])
        fork_index = len(parent.forks)  # the parent's forks so far: this one is next
        sids = forks[fork_index] if fork_index < len(forks) else []
        self.sid[child] = sids[k] if k < len(sids) else -1
        # the label is only a name: the script holds the seed tokens
        return default_label(parent.stream, k), script.get(self.sid[child], [])

    def at_merge(self, parent, tag_ids: list) -> list[int]:
        return []  # the parent's script holds its conclusion

    def path_label(self, parent: Stream, k: int, outline_ids: list) -> str:
        return default_label(parent, k)  # a label is only a name here: the script holds the tokens

    def stops_when_empty(self, branch) -> bool:
        return True  # the replayed completion ends here

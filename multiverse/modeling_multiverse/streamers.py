"""Streaming parallel decoding.

A *branch streamer* (``generate(streamer=...)`` with an ``on_token`` method) is called by the engine with
``on_token(branch, token)``, ``on_fork(parent, children)``, ``on_merge(parent, children)`` and ``end()``; in a
continuous batch ``branch.prompt`` and ``branch.sample`` say which prompt and output row a branch decodes, and
``on_prompt_start(prompt, roots)`` / ``on_prompt_end(prompt)`` are called, where defined, when a prompt is
admitted into a cache row and when its row is freed. ``LinearStreamer`` adapts a TextStreamer-style streamer
(``put``/``end``) to one output row.
"""

import torch


class LinearStreamer:
    """Feeds a TextStreamer-style streamer (``put``/``end``) the completion in training order.

    Paths decode together, but the text shows path 1 live and each later path as soon as the one
    before it has closed, so the printed text is exactly the decoded sequence.
    """

    def __init__(self, streamer):
        self.streamer = streamer
        self.stack = None  # [branch, next token, next fork, next child]

    def on_token(self, branch, token):
        if self.stack is None:
            root = branch
            while root.parent is not None:
                root = root.parent
            self.stack = [[root, 0, 0, 0]]
        self.flush()

    def on_fork(self, parent, children):
        pass

    def on_merge(self, parent, children):
        self.flush()

    def flush(self):
        out = []
        while self.stack:
            frame = self.stack[-1]
            br, i, f, c = frame
            cut = br.forks[f][0] if f < len(br.forks) else len(br.tokens)
            if i < cut:
                out += br.tokens[i:cut]
                frame[1] = cut
                continue
            if f < len(br.forks):
                children = br.forks[f][1]
                if c < len(children):
                    self.stack.append([children[c], 0, 0, 0])
                    continue
                frame[2], frame[3] = f + 1, 0
                continue
            if not br.done:
                break
            self.stack.pop()
            if self.stack:
                self.stack[-1][3] += 1
        if out:
            self.streamer.put(torch.tensor(out))

    def end(self):
        self.flush()
        self.streamer.end()

"""Text views of a parallel generation: a tree of the branches and a line of statistics."""


def branch_tree(stats: dict) -> str:
    """One line per branch, indented by depth: label, tokens, and the decode steps it was active."""
    children: dict = {}
    for br in stats["branches"]:
        children.setdefault(br["parent"], []).append(br)
    lines = []
    # An explicit stack, not recursion: a tree is as deep as the nesting, and a prompt may nest hundreds deep.
    stack = [(root, 0) for root in reversed(children.get(None, []))]
    while stack:
        br, depth = stack.pop()
        state = "" if br["closed"] or br["parent"] is None else "  (not closed)"
        lines.append(f"{'  ' * depth}{'└─ ' if depth else ''}{br['label']:<6} {br['tokens']:>5} tokens  "
                     f"steps {br['start_step']}-{br['end_step']}{state}")
        stack.extend((child, depth + 1) for child in reversed(children.get(br["id"], [])))
    return "\n".join(lines)


def stats_line(stats: dict) -> str:
    events = ", ".join(f"{k}={v}" for k, v in sorted(stats["events"].items()) if v) or "none"
    return (f"tokens={stats['tokens']} steps={stats['steps']} parallelism={stats['parallelism']:.2f} "
            f"forks={stats['forks']} max_depth={stats['max_depth']} seconds={stats['seconds']:.2f} events: {events}")

"""One parallel generation drawn over decode steps: a self-contained HTML page (inline CSS and SVG).

Rows are branches in tree order. A solid bar is a branch emitting tokens; a dashed line is a branch
waiting for the paths it forked. Circles mark forks, diamonds merges, crosses paths cut by a budget.
The band on top counts the branches decoded at each step: its height is the parallelism over time.

Steps are the engine's: numbered from 1, and a branch emits during ``start_step..end_step`` inclusive
(the root reports 0, "from the start"). Step ``s`` is drawn as the cell ``[s-1, s]`` of the axis, so a
fork sits where the parent's bar ends and the paths' bars begin.
"""

import html
from pathlib import Path

from ..modeling_multiverse.tags import TAG_PATTERN

LABEL_W, PLOT_W, ROW_H, BAR_H, TOP_H, PAD = 240, 840, 26, 14, 80, 16
COLORS = ("#4c566a", "#2e86de", "#e67e22", "#27ae60", "#8e44ad", "#c0392b")


def full_label(branch: dict, by_id: dict) -> str:
    """``1.2`` for path 2 inside path 1. Tolerates engines that already report full labels."""
    parent = by_id.get(branch["parent"])
    if parent is None:
        return "root"
    label = str(branch["label"])
    if parent["parent"] is None or "." in label:
        return label
    return f"{full_label(parent, by_id)}.{label}"


def timeline_rows(stats: dict) -> list[dict]:
    """Branches in depth-first order, each with its active step intervals (inclusive), forks and merges."""
    branches = stats["branches"]
    by_id = {b["id"]: b for b in branches}
    children: dict = {}
    for b in branches:
        children.setdefault(b["parent"], []).append(b)
    rows = []

    def last_step(b):  # a branch cut while waiting on its paths lasts as long as they do
        return max([b["end_step"]] + [last_step(c) for c in children.get(b["id"], [])])

    def walk(b, block=None):
        forks = {}
        for c in children.get(b["id"], []):
            forks.setdefault(c["start_step"], []).append(c)
        groups = []
        for step, kids in sorted(forks.items()):
            closed = all(k["closed"] for k in kids)
            groups.append(dict(fork=step, merge=max(last_step(k) for k in kids), children=[k["id"] for k in kids],
                               merged=closed))
        active, cursor = [], max(b["start_step"], 1)
        for g in groups:  # the parent emits nothing from its paths' first step to their last
            if g["fork"] > cursor:
                active.append((cursor, g["fork"] - 1))
            cursor = max(cursor, g["merge"] + 1)
        if b["end_step"] >= cursor:
            active.append((cursor, b["end_step"]))
        span = (max(b["start_step"], 1), last_step(b))
        rows.append(dict(branch=b, label=full_label(b, by_id), active=active, groups=groups, span=span,
                         block=block))
        for k, g in enumerate(groups, 1):
            for cid in g["children"]:
                # Paths of a parent's second block reuse the labels 1, 2, ...: the block number tells them apart.
                walk(by_id[cid], k if len(groups) > 1 else None)

    for root in children.get(None, []):
        walk(root)
    return rows


def active_counts(rows: list[dict], steps: int) -> list[int]:
    """Branches emitting at each step 1..steps (index 0 is step 1)."""
    diff = [0] * (steps + 2)
    for r in rows:
        for a, b in r["active"]:
            diff[min(a, steps + 1)] += 1
            diff[min(b + 1, steps + 1)] -= 1
    counts, running = [], 0
    for s in range(1, steps + 1):
        running += diff[s]
        counts.append(running)
    return counts


def _ticks(steps: int) -> list[int]:
    raw = max(steps / 8, 1)
    base = 10 ** len(str(int(raw))) // 10 or 1
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    return list(range(0, steps + 1, step))


def timeline_svg(stats: dict) -> str:
    rows = timeline_rows(stats)
    steps = max([stats.get("steps", 0)] + [r["branch"]["end_step"] for r in rows] + [1])
    x = lambda s: LABEL_W + PLOT_W * s / steps  # noqa: E731
    row_y = {r["branch"]["id"]: TOP_H + PAD + i * ROW_H + ROW_H / 2 for i, r in enumerate(rows)}
    height = TOP_H + PAD + len(rows) * ROW_H + 48
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 60}" height="{height}" '
           f'font-family="sans-serif" font-size="12">']
    counts = active_counts(rows, steps)
    peak = max(counts + [1])
    level = [TOP_H - 8 - (TOP_H - 24) * c / peak for c in counts]  # counts[i] is step i + 1: cell [i, i + 1]
    area = " ".join(f"{x(i):.1f},{h:.1f} {x(i + 1):.1f},{h:.1f}" for i, h in enumerate(level))
    out.append(f'<polygon class="band" points="{x(0):.1f},{TOP_H - 8} {area} {x(steps):.1f},{TOP_H - 8}"/>')
    out.append(f'<text x="{LABEL_W - 8}" y="{TOP_H / 2}" text-anchor="end">branches decoding</text>'
               f'<text x="{LABEL_W - 8}" y="{TOP_H / 2 + 14}" text-anchor="end" class="muted">(peak {peak})</text>')
    for t in _ticks(steps):
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP_H - 8}" y2="{height - 34}"/>'
                   f'<text x="{x(t):.1f}" y="{height - 20}" text-anchor="middle" class="muted">{t}</text>')
    out.append(f'<text x="{LABEL_W + PLOT_W / 2}" y="{height - 3}" text-anchor="middle">decode step</text>')
    for r in rows:
        b, y = r["branch"], row_y[r["branch"]["id"]]
        color = COLORS[b["depth"] % len(COLORS)]
        name = "main" if b["parent"] is None else f"Path {r['label']}"
        name += f" · block {r['block']}" if r["block"] else ""
        state = "closed" if b["closed"] else ("open" if b["parent"] is None else "cut by a budget")
        tip = f"{name}: {b['tokens']} tokens, depth {b['depth']}, steps {r['span'][0]}-{r['span'][1]}, {state}"
        out.append(f'<g class="row"><title>{html.escape(tip)}</title>'
                   f'<rect class="hit" x="0" y="{y - ROW_H / 2}" width="{LABEL_W + PLOT_W + 60}" height="{ROW_H}"/>'
                   f'<text x="{8 + 14 * b["depth"]}" y="{y + 4}">{html.escape(name)}</text>'
                   f'<text x="{LABEL_W - 10}" y="{y + 4}" text-anchor="end" class="muted">{b["tokens"]} tok</text>'
                   f'<line class="wait" x1="{x(r["span"][0] - 1):.1f}" x2="{x(r["span"][1]):.1f}" y1="{y}" y2="{y}" '
                   f'stroke="{color}"/>')
        for a, e in r["active"]:
            out.append(f'<rect x="{x(a - 1):.1f}" y="{y - BAR_H / 2}" width="{max(x(e) - x(a - 1), 1.5):.1f}" '
                       f'height="{BAR_H}" rx="3" fill="{color}"/>')
        out.append("</g>")
    for r in rows:  # after every row, so that no later bar covers a marker
        b, y = r["branch"], row_y[r["branch"]["id"]]
        color = COLORS[b["depth"] % len(COLORS)]
        for g in r["groups"]:
            bottom = max(row_y[c] for c in g["children"])
            fx, mx = x(g["fork"] - 1), x(g["merge"])
            out.append(f'<path class="link" d="M{fx:.1f},{y} V{bottom}" stroke="{color}"/>'
                       f'<circle cx="{fx:.1f}" cy="{y}" r="5" fill="#fff" stroke="{color}" stroke-width="2">'
                       f'<title>fork at step {g["fork"]}: {len(g["children"])} paths</title></circle>')
            if g["merged"]:
                out.append(f'<path class="link" d="M{mx:.1f},{y} V{bottom}" stroke="{color}"/>'
                           f'<path d="M{mx:.1f},{y - 7} l7,7 l-7,7 l-7,-7 z" fill="#fff" stroke="{color}" '
                           f'stroke-width="2"><title>merge after step {g["merge"]}: the conclusion sees all '
                           f'{len(g["children"])} paths</title></path>')
        if b["parent"] is not None and not b["closed"]:
            ex = x(r["span"][1])  # where the budget stopped it, even if it was waiting on paths of its own
            out.append(f'<path class="cut" d="M{ex - 5:.1f},{y - 5} l10,10 m0,-10 l-10,10">'
                       f'<title>cut by a budget at step {r["span"][1]}</title></path>')
    out.append("</svg>")
    return "".join(out)


def highlight(text: str) -> str:
    """The decoded text with tags set off and each path's body shaded by its depth."""
    parts, depth, last = [], 0, 0
    for m in TAG_PATTERN.finditer(text):
        parts.append(html.escape(text[last:m.start()]))
        tag = m.group()
        if tag == "</Path>" and depth:
            parts.append(f'<span class="tag">{html.escape(tag)}</span></span>')
            depth -= 1
        elif tag == "<Path>":
            depth += 1
            parts.append(f'<span class="path d{depth % len(COLORS)}"><span class="tag">{html.escape(tag)}</span>')
        else:
            parts.append(f'<span class="tag">{html.escape(tag)}</span>')
        last = m.end()
    parts.append(html.escape(text[last:]) + "</span>" * depth)  # a path cut by a budget never closed
    return "".join(parts)


CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:18px;font-weight:600} .muted{fill:#777;color:#777}
.band{fill:#2e86de;fill-opacity:.25;stroke:#2e86de;stroke-width:1}
.grid{stroke:#eee} .wait{stroke-width:2;stroke-dasharray:4 3;opacity:.55} .link{stroke-width:1.5;fill:none}
.cut{stroke:#c0392b;stroke-width:2.5;fill:none} .hit{fill:transparent} .row:hover .hit{fill:#f3f6fa}
table{border-collapse:collapse;margin:12px 0} td{padding:3px 12px 3px 0} td:first-child{color:#666}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #e5e5e5;padding:12px;font-size:12px;line-height:1.45}
.tag{color:#999;font-weight:600} .path{display:inline;border-radius:3px}
""" + "".join(f".path.d{i}{{background:{c}1f;box-shadow:inset 2px 0 0 {c}}}" for i, c in enumerate(COLORS))


def timeline_html(stats: dict, text: str, title: str | None = None) -> str:
    events = ", ".join(f"{k}: {v}" for k, v in sorted(stats.get("events", {}).items()) if v) or "none"
    facts = [("tokens", stats["tokens"]), ("decode steps", stats["steps"]),
             ("parallelism (tokens / steps)", f"{stats['parallelism']:.2f}"), ("forks", stats["forks"]),
             ("max depth", stats["max_depth"]), ("critical path", stats.get("critical_path", "")),
             ("budget", stats.get("budget", "")),
             ("wall time", f"{stats.get('seconds', 0):.2f} s"), ("events", events),
             ("repairs", "; ".join(stats.get("repairs", [])) or "none")]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    title = title or "Multiverse generation"
    heading = html.escape(title if len(title) <= 200 else title[:200] + "…")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title[:80])}</title><style>{CSS}</style>'
            f'</head><body><h1>{heading}</h1>{timeline_svg(stats)}'
            '<p class="muted">Bars: a branch emitting tokens. Dashed: waiting for its paths. '
            '&#9675; fork, &#9670; merge, &#10005; cut by a budget. Hover a row for its numbers.</p>'
            f'<table>{table}</table><h2 style="font-size:15px">Decoded text</h2><pre>{highlight(text)}</pre>'
            '</body></html>')


def write_timeline(path: str | Path, stats: dict, text: str, title: str | None = None) -> Path:
    """Write the timeline page of one generation (``out.multiverse[b]`` and its decoded completion)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(timeline_html(stats, text, title), encoding="utf-8")
    return path

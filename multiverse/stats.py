"""Structure statistics of model output files: blocks, depth, paths, critical path, ideal parallelism."""

from .modeling_multiverse.parser import parse
from .modeling_multiverse.tags import tag_token_ids
from .transcripts import read_transcript


def file_stats(path, tokenizer=None) -> dict:
    return {"file": str(path), **text_stats(read_transcript(path).completion, tokenizer)}


def text_stats(completion: str, tokenizer=None) -> dict:
    """The structure of one completion, in tokens of ``tokenizer`` or else in characters."""
    if tokenizer is not None:
        result = parse(tokenizer.encode(completion, add_special_tokens=False), tag_token_ids(tokenizer),
                       decode=tokenizer.decode)
    else:
        result = parse(completion)
    return {
        "ok": result.ok,
        "repairs": [str(r) for r in result.repairs],
        "blocks": len(result.all_blocks),
        "max_depth": result.max_depth,
        "paths_per_block": [len(b.paths) for b in result.all_blocks],
        "units": result.units,
        "length": result.length,
        "critical_path": result.critical_path,
        "ideal_parallelism": round(result.ideal_parallelism, 4),
    }


def total_stats(rows: list) -> dict:
    length = sum(r["length"] for r in rows)
    critical = sum(r["critical_path"] for r in rows)
    return {"total": True, "files": len(rows), "parsed": sum(r["ok"] for r in rows), "length": length,
            "critical_path": critical, "ideal_parallelism": round(length / critical, 4) if critical else 1.0}

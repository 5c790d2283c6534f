"""The one visibility relation between streams, and its three forms.

Two streams see each other unless they sit in different paths of one block; a block's conclusion is its
parent stream's, so it sees every path. The relation is symmetric; causality (a key no later than its query) is
applied apart. It takes three forms, one per reader, each tested against ``visibility.sees``:
- ``Stream.siblings_from``: a new stream sees what its parent sees, less its block's earlier paths and their
  subtrees (the streams opened from the block's first path on). The engine and the cached layout grow their
  rows by it, one per stream as it opens (``kv_cache.LayoutBuffers.add_stream``).
- ``layout.segment_order``: two depth-first ranks per stream, walked over the block records; linear in the
  streams, for the parser's layout and the training collator.
- ``sees_every_stream``: whether a stream sees all streams so far (cached decoding skips the mask then).
"""

from .structure import Stream


def sees(a: Stream, b: Stream) -> bool:
    """Whether streams ``a`` and ``b`` see each other. Addresses list (block, path index) from the root down, so
    the first block they differ in decides: same block, other path means siblings."""
    for (block_a, path_a), (block_b, path_b) in zip(a.address, b.address):
        if block_a != block_b:
            return True
        if path_a != path_b:
            return False
    return True


def sees_every_stream(stream: Stream) -> bool:
    """Whether ``stream`` sees every stream opened so far: no block on its way down from the root has a second
    path yet (streams under other blocks are never hidden from it). O(depth)."""
    while stream.block is not None:
        if len(stream.block.paths) > 1:
            return False
        stream = stream.parent
    return True

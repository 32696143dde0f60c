"""Deterministic test payloads, shared by the test backends and the tests (never by limpet).

The stream is made of 64 KiB blocks, block k drawn from random.Random(k): nothing repeats with a
short period, so a dropped, duplicated or reordered buffer anywhere in a proxy changes the sha256.
"""
import hashlib
import random

BLOCK = 64 * 1024


def blocks(size, chunk=BLOCK):
    """Yield `size` bytes of the pattern, in pieces of at most `chunk` bytes."""
    sent = 0
    k = 0
    while sent < size:
        block = random.Random(k).randbytes(BLOCK)
        k += 1
        block = block[: size - sent]
        for i in range(0, len(block), chunk):
            yield block[i : i + chunk]
        sent += len(block)


def data(size):
    return b"".join(blocks(size))


def sha256(size):
    h = hashlib.sha256()
    for piece in blocks(size):
        h.update(piece)
    return h.hexdigest()

"""Hostile inputs for the loader fuzz tests (tests/unit/test_fuzz_*.py).

Each strategy yields the bytes of a whole file: random bytes, a valid file with
hostile pieces inserted, deep nesting, alias bombs, surrogates and NULs.
Sizes stay small so every test runs in a few seconds; the file-size limit has
its own plain test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Bounded: a few seconds per test on a shared 2-core machine."""

# Pieces that broke or could break a loader: bytes that are not UTF-8 (a lone
# surrogate as CESU-8, a code point past U+10FFFF, a stray continuation byte),
# NUL, a BOM, YAML syntax (anchors, aliases, tags, merge keys, flow brackets),
# template braces, a date YAML reads as one, a number too long for int().
HOSTILE = [
    b"\xff",
    b"\x80",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\t",
    b"\r",
    b"\n",
    b"\n---\n",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"- ",
    b"? ",
    b"&a ",
    b"*a",
    b"!!int ",
    b"!!binary ",
    b"!!timestamp ",
    b"!!python/object:os.system ",
    b"!custom ",
    b"<<: ",
    b"'",
    b'"',
    b"\\",
    b"\\x",
    b"{{",
    b"}}",
    b"{{ $value | humanizeTimestamp }}",
    b'{{ "\\q" }}',
    b"2026-13-45",
    b"9" * 4400,
    b".nan",
    b"-.inf",
    b"%YAML 1.1\n",
    b"\xf0\x9f\x98\x80",
    b"#",
    b"|",
    b">",
]


def surrogate_text() -> st.SearchStrategy[bytes]:
    """Text with lone surrogates and NULs, encoded the way a broken writer would."""
    chars = st.one_of(st.characters(), st.characters(categories=["Cs", "Cc"]))
    return st.text(chars, max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with hostile pieces inserted, bytes overwritten or a tail cut off."""

    def apply(edits: list[tuple[int, bytes, bool]], cut: int | None) -> bytes:
        data = bytearray(valid)
        for position, piece, replace in edits:
            at = position % (len(data) + 1)
            data[at : at + (len(piece) if replace else 0)] = piece
        return bytes(data[:cut] if cut is not None else data)

    piece = st.one_of(st.sampled_from(HOSTILE), st.binary(min_size=1, max_size=6))
    edit = st.tuples(st.integers(0, 1 << 20), piece, st.booleans())
    return st.builds(
        apply,
        st.lists(edit, min_size=1, max_size=6),
        st.one_of(st.none(), st.integers(0, len(valid))),
    )


def deep_nesting() -> st.SearchStrategy[bytes]:
    """Lists, mappings or indented blocks nested up to thousands of levels."""
    depth = st.integers(1, 3000)
    flow_list = depth.map(lambda n: b"a: " + b"[" * n + b"]" * n)
    flow_map = depth.map(lambda n: b"{a: " * n + b"1" + b"}" * n)
    unclosed = depth.map(lambda n: b"groups: " + b"[{x: " * n)
    block = st.integers(1, 400).map(
        lambda n: b"".join(b"  " * i + b"k%d:\n" % i for i in range(n)) + b"  " * n + b"v\n"
    )
    return st.one_of(flow_list, flow_map, unclosed, block)


def alias_bomb() -> st.SearchStrategy[bytes]:
    """ "Billion laughs": each level lists the previous one ``width`` times."""

    def build(levels: int, width: int, top: str) -> bytes:
        lines = ['l0: &l0 ["lol", "lol"]']
        for i in range(1, levels + 1):
            lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
        lines.append(f"{top}: *l{levels}")
        return "\n".join(lines).encode()

    return st.builds(
        build,
        st.integers(2, 12),
        st.integers(2, 12),
        st.sampled_from(["groups", "steps", "shop", "data_dir", "rules"]),
    )


def recursive_alias() -> st.SearchStrategy[bytes]:
    """An anchor whose own content refers to it."""
    return st.sampled_from([b"a: &x [*x]", b"&x {a: *x}", b"groups: &g [{name: g, rules: *g}]"])


def hostile_files(valid: bytes) -> st.SearchStrategy[bytes]:
    """Every kind above, plus random bytes."""
    return st.one_of(
        st.binary(max_size=400),
        surrogate_text(),
        mutated(valid),
        deep_nesting(),
        alias_bomb(),
        recursive_alias(),
    )

"""The canonical tar encoding: sizes computed without building headers match
the headers, and the strict reader reads back what the writer wrote."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from nwcache.archive import tarfmt

paths = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
).map(lambda part: "pkg/" + part + "/" + part[::-1] + ".py")
sizes = st.one_of(st.integers(0, 5000), st.sampled_from([8**11 - 1, 8**11, 2**40]))


@given(paths, sizes)
def test_member_size_is_the_header_length(path: str, size: int) -> None:
    header = tarfmt.member_header(path, size, 0o644, 315532800)
    assert tarfmt.member_size(path, size) == len(header) + size + len(tarfmt.padding(size))


@given(
    st.lists(
        st.tuples(paths, st.binary(max_size=2000), st.booleans()),
        min_size=1,
        max_size=8,
        unique_by=lambda m: m[0],
    )
)
def test_reader_reads_what_the_writer_wrote(members: list[tuple[str, bytes, bool]]) -> None:
    stream = bytearray()
    for path, data, executable in members:
        stream += tarfmt.member_header(path, len(data), 0o755 if executable else 0o644, 315532800)
        stream += data + tarfmt.padding(len(data))
    stream += tarfmt.END_OF_ARCHIVE
    reader = tarfmt.TarReader(io.BytesIO(bytes(stream)), archive="a", member="m")
    seen = []
    for member in reader.members():
        seen.append((member.path, b"".join(reader.data(member, 1024)), member.executable))
    assert seen == members

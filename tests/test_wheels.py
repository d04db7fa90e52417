"""The one wheel-member reader: a named member streamed out of a real zip, and every unsafe or
damaged archive refused with a one-line BenchError."""

import hashlib
import io
import stat
import zipfile

import pytest
from wheelfiles import write_wheel

from bench.errors import BenchError
from bench.models.wheels import copy_wheel_member, extract_wheel_member

pytestmark = pytest.mark.fast

DATA = bytes(range(256)) * 40_000  # 10 MB: several 4 MiB chunks


@pytest.fixture()
def wheel(tmp_path):
    return write_wheel(tmp_path / "w", "pkg", "1.0", {"pkg/data/model.bin": DATA, "pkg/__init__.py": b""})


def test_member_is_streamed_hashed_and_counted(wheel):
    out, chunks = io.BytesIO(), []
    copied = copy_wheel_member(wheel, "pkg/data/model.bin", out, label="t", on_bytes=chunks.append,
                               sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    assert out.getvalue() == DATA and copied.size == len(DATA)
    assert len(chunks) >= 3 and sum(chunks) == len(DATA)  # in chunks, never one read of the whole member


def test_extract_leaves_only_the_checked_file(wheel, tmp_path):
    target = tmp_path / "model.bin"
    extract_wheel_member(wheel, "pkg/data/model.bin", target, label="t")
    assert target.read_bytes() == DATA
    with pytest.raises(BenchError, match="has sha256 .*, expected 0{64}"):
        extract_wheel_member(wheel, "pkg/data/model.bin", tmp_path / "bad.bin", label="t", sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "w"]  # no bad.bin, no bad.bin.part


@pytest.mark.parametrize("member", ["../evil.bin", "/etc/passwd", "pkg/../../x", "pkg\\..\\x", "", "pkg/"])
def test_unsafe_member_names_are_refused(wheel, member):
    with pytest.raises(BenchError, match="unsafe path"):
        copy_wheel_member(wheel, member, io.BytesIO(), label="t")


def test_missing_member_names_what_the_wheel_has(wheel):
    with pytest.raises(BenchError, match=r"no 'pkg/data/other.bin' in pkg-1.0-py3-none-any.whl \(it has: .*model.bin"):
        copy_wheel_member(wheel, "pkg/data/other.bin", io.BytesIO(), label="t")


def test_links_duplicates_and_broken_zips_are_refused(tmp_path):
    odd = tmp_path / "odd.whl"
    with zipfile.ZipFile(odd, "w") as zf:
        link = zipfile.ZipInfo("pkg/link.bin")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("pkg/twice.bin", b"a")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("pkg/twice.bin", b"b")
    with pytest.raises(BenchError, match="not a regular file"):
        copy_wheel_member(odd, "pkg/link.bin", io.BytesIO(), label="t")
    with pytest.raises(BenchError, match="more than once"):
        copy_wheel_member(odd, "pkg/twice.bin", io.BytesIO(), label="t")
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BenchError, match="not a readable wheel"):
        copy_wheel_member(broken, "pkg/x.bin", io.BytesIO(), label="t")


def test_corrupt_member_data_fails_its_crc(wheel, tmp_path):
    data = bytearray(wheel.read_bytes())
    at = data.find(b"pkg/data/model.bin") + len("pkg/data/model.bin") + 5000  # inside the deflated data
    data[at] ^= 0xFF
    bad = tmp_path / "bad.whl"
    bad.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="not a readable wheel"):
        copy_wheel_member(bad, "pkg/data/model.bin", io.BytesIO(), label="t")

"""core.store.files: the one zip guard and the one atomic write."""
from __future__ import annotations

import os
import zipfile

import pytest

from core.store import files


def _zip(path, entries):
    """entries: (name or ZipInfo, bytes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16          # a symbolic link entry
    return info


MALICIOUS = [
    "../evil.txt",
    "../../evil.txt",
    "a/../../evil.txt",
    "/etc/passwd",
    "//server/share/evil.txt",
    "C:/Windows/evil.txt",
    "C:evil.txt",
    "c:\\evil.txt",
    "..\\evil.txt",
    "a\\..\\..\\evil.txt",
    "\\abs.txt",
    "..",
]


@pytest.mark.parametrize("name", MALICIOUS)
def test_unsafe_names_are_refused_and_nothing_is_written(tmp_path, name):
    archive = _zip(tmp_path / "evil.zip", [("ok.txt", b"fine"), (name, b"x")])
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        keep, refused = files.plan_zip(zf, dest, 1 << 20, 1 << 20)
        assert [n for n, _ in refused] == [zipfile.ZipInfo(name).filename], refused
        assert "zip-slip" in refused[0][1]
        assert files.extract_entries(zf, keep, 1 << 20) == []
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["evil.zip", os.path.join("out", "dest", "ok.txt")]


def test_a_name_through_a_symlinked_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    archive = _zip(tmp_path / "a.zip", [("sub/evil.txt", b"x")])
    with zipfile.ZipFile(archive) as zf:
        keep, refused = files.plan_zip(zf, dest)
    assert keep == [] and "zip-slip" in refused[0][1]


def test_symlink_duplicate_and_file_folder_clash_are_refused(tmp_path):
    with pytest.warns(UserWarning):                        # zipfile itself warns about the duplicate
        archive = _zip(tmp_path / "a.zip", [(_link("link"), b"/etc"), ("twice.txt", b"a"), ("twice.txt", b"b"),
                                            ("both", b"file"), ("both/inner.txt", b"x"), ("fine/ok.txt", b"ok")])
    with zipfile.ZipFile(archive) as zf:
        keep, refused = files.plan_zip(zf, tmp_path / "dest")
    why = dict(refused)
    assert "symbolic link" in why["link"]
    assert "twice" in why["twice.txt"]
    assert "both a file and a folder" in why["both"]
    assert [info.filename for info, _ in keep] == ["twice.txt", "both/inner.txt", "fine/ok.txt"]


def test_size_limits_per_entry_and_in_total(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("big.bin", bytes(3000)), ("a.bin", bytes(600)), ("b.bin", bytes(600))])
    with zipfile.ZipFile(archive) as zf:
        keep, refused = files.plan_zip(zf, tmp_path / "dest", max_entry_bytes=1000, max_total_bytes=1000)
    why = dict(refused)
    assert "over the" in why["big.bin"] and "expands to more than" in why["b.bin"]
    assert [info.filename for info, _ in keep] == ["a.bin"]


def test_zip_budget_scales_with_the_archive(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("a", b"x")])
    assert files.zip_budget(archive, 10) == files.ZIP_MAX_RATIO * archive.stat().st_size
    assert files.zip_budget(archive, 10**9) == 10**9


# -- atomic writes ---------------------------------------------------------------------------------------

def test_atomic_write_replaces_in_one_step_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "sub" / "data.flac"
    with files.atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".flac" and files.is_temp(tmp)
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), files.atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["data.flac"]


def test_temp_name_can_leave_out_the_suffix(tmp_path):
    tmp = files.temp_beside(tmp_path / "a.npz", "")
    assert files.is_temp(tmp) and not tmp.match("*.npz")
    files.write_bytes_atomic(tmp_path / "a.npz", b"x", suffix="")
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_atomic_dir_swaps_a_whole_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    (tmp_path / "model.tmp").mkdir()                        # left by a killed writer: started afresh
    (tmp_path / "model.tmp" / "stale.txt").write_text("stale")
    with files.atomic_dir(folder) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_copy_dir_atomic_leaves_out_ignored_files(tmp_path):
    import shutil
    src = tmp_path / "last"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w")
    (src / "trainer_state.pt").write_bytes(b"s")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "older.txt").write_text("old")
    files.copy_dir_atomic(src, tmp_path / "best", ignore=shutil.ignore_patterns("trainer_state.pt"))
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]

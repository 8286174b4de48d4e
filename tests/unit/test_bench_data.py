"""benchmarks/bench_data.py: the search order, the instructions for a missing data set, --download
of an archive (a local file:// archive here; CI has no internet), and the recorded checksums
against the copies in ../shared/data and the installed wheels."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "benchmarks" / "bench_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_data"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["bench_data"]
    return module


bd = load_bench_data()
TEXT = b"alpha\tbeta\n"
DOC = b"read me\n"


def toy_data_set(**changes: object) -> object:
    fields = {
        "key": "toy",
        "title": "Toy data",
        "folder": "toy",
        "files": (
            bd.DataFile("toy.tsv", len(TEXT), hashlib.sha256(TEXT).hexdigest()),
            bd.DataFile("README", len(DOC), hashlib.sha256(DOC).hexdigest(), read=False),
        ),
        "source": "https://example.org/toy",
        "licence": "CC0",
        "archive_url": "https://example.org/toy.tar.gz",
        **changes,
    }
    return bd.DataSet(**fields)


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every search place under tmp_path, empty; the toy data set registered."""
    places = {"env": tmp_path / "env", "shared": tmp_path / "shared", "cache": tmp_path / "cache"}
    monkeypatch.setenv(bd.ENV, str(places["env"]))
    monkeypatch.setattr(bd, "SHARED", places["shared"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(places["cache"]))
    monkeypatch.setitem(bd.DATA_SETS, "toy", toy_data_set())
    return places


def lay_out(folder: Path, text: bytes = TEXT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.tsv").write_bytes(text)
    return folder


def test_search_order_env_then_shared_then_cache(roots: dict[str, Path]) -> None:
    assert bd.find("toy") is None
    cache = lay_out(roots["cache"] / "object2vec" / "bench-data" / "toy")
    assert bd.find("toy") == cache
    shared = lay_out(roots["shared"] / "toy")
    assert bd.find("toy") == shared
    env = lay_out(roots["env"] / "toy")
    assert bd.find("toy") == env


def test_a_file_of_the_wrong_size_does_not_count(roots: dict[str, Path]) -> None:
    lay_out(roots["env"] / "toy", TEXT + b"more\n")
    shared = lay_out(roots["shared"] / "toy")
    assert bd.find("toy") == shared


def test_missing_data_stops_with_source_layout_and_checksums(
    roots: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bd.require("toy")
    message = str(exit_.value.code)
    assert "Toy data: not found" in message
    assert str(roots["env"] / "toy") in message and str(roots["shared"] / "toy") in message
    assert "https://example.org/toy.tar.gz" in message and "--download" in message
    assert hashlib.sha256(TEXT).hexdigest() in message and "toy.tsv" in message
    # missing_ok: the same text as a note on stderr, and no folder
    assert bd.require("toy", missing_ok=True) is None
    assert "Toy data: not found" in capsys.readouterr().err


def tar_archive(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path.as_uri()


def test_download_unpacks_and_checks_the_files(roots: dict[str, Path], tmp_path: Path) -> None:
    url = tar_archive(tmp_path / "toy.tar.gz", {"toy-1.0/toy.tsv": TEXT, "toy-1.0/README": DOC, "toy-1.0/x": b"?"})
    bd.DATA_SETS["toy"] = toy_data_set(archive_url=url)
    folder = bd.require("toy", download=True)
    assert folder == roots["env"] / "toy"  # $OBJECT2VEC_BENCH_DATA is where downloads go when set
    assert sorted(p.name for p in folder.iterdir()) == ["README", "toy.tsv"]
    assert bd.verify(folder, bd.DATA_SETS["toy"]) == []


def test_download_goes_to_the_cache_without_the_variable(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(bd.ENV)
    path = tmp_path / "toy.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("toy.tsv", TEXT)
    bd.DATA_SETS["toy"] = toy_data_set(archive_url=path.as_uri())
    assert bd.require("toy", download=True) == roots["cache"] / "object2vec" / "bench-data" / "toy"


def test_download_rejects_a_file_that_differs(roots: dict[str, Path], tmp_path: Path) -> None:
    url = tar_archive(tmp_path / "toy.tar.gz", {"toy.tsv": b"tampered\n"})
    with pytest.raises(bd.FetchError, match=r"toy.tsv: sha256 \w+, expected"):
        bd.unpack_archive(toy_data_set(), roots["env"] / "toy", url)
    assert not (roots["env"] / "toy" / "toy.tsv").exists()


def test_a_failed_download_stops_with_the_reason_and_the_instructions(roots: dict[str, Path], tmp_path: Path) -> None:
    bd.DATA_SETS["toy"] = toy_data_set(archive_url=(tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(SystemExit) as exit_:
        bd.require("toy", download=True)
    assert str(exit_.value.code).startswith("--download failed: ") and "Toy data: not found" in str(exit_.value.code)


def test_verify_names_a_changed_file(roots: dict[str, Path]) -> None:
    folder = lay_out(roots["shared"] / "toy", b"ALPHA\tbeta\n")
    (problem,) = bd.verify(folder, bd.DATA_SETS["toy"])
    assert problem.startswith(f"{folder / 'toy.tsv'}: sha256 ")


@pytest.mark.parametrize("key", ["ml-100k", "glove"])
def test_wheel_data_sets_are_found_in_the_installed_package(
    roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """Found inside their wheel when no folder holds them; OBJECT2VEC_BENCH_HIDE hides the wheel."""
    package = bd.installed_package_dir(bd.DATA_SETS[key])
    if package is None:
        pytest.skip(f"{bd.DATA_SETS[key].wheel} is not installed (benchmarks/requirements-nodeps.txt)")
    assert bd.find(key) == package
    monkeypatch.setenv("OBJECT2VEC_BENCH_HIDE", bd.DATA_SETS[key].package_dir.split("/")[0])
    assert bd.find(key) is None


@pytest.mark.parametrize("key", ["sts", "reuters", "ml-100k", "glove"])
def test_recorded_checksums_match_the_copies_here(key: str) -> None:
    """The sums in bench_data.py are those of ../shared/data and the wheels, where present."""
    folder = bd.find(key)
    if folder is None:
        pytest.skip(f"{key} is not on this machine: {bd.instructions(bd.DATA_SETS[key]).splitlines()[0]}")
    assert bd.verify(folder, bd.DATA_SETS[key]) == []


def test_command_line_lists_each_data_set(roots: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    lay_out(roots["shared"] / "toy")
    assert bd.main(["toy", "--verify"]) == 0
    assert capsys.readouterr().out == f"toy: {roots['shared'] / 'toy'} (SHA-256 checked)\n"
    with pytest.raises(SystemExit):
        bd.main(["nope"])

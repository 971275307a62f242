"""Hostile packs and lying registries (issue #16): every one is refused in one line (a PackError, and one
`error:` line with exit status 1 at the CLI), with bounded memory and disk, and nothing is installed or
written outside $TAGCLI_HOME.

Each case runs the real loader or puller: packs are loaded from disk (`load_pack`, `tagcli pack info`,
`pack list`, the lax manifest peeks of `ensure_packs` and listings), pulls go through `tagcli pack pull`
in-process against a registry folder or a loopback HTTP server (`serve` from registry_server.py, with
handlers here that lie: stall, flood, stream). After every refusal the test compares a snapshot of its
whole tmp_path (TAGCLI_HOME, the registry, the redirected temp dir) with the one taken before.

Decisions the suite pins down:
- unknown top-level manifest keys are ignored (forward compatibility); unknown keys inside `input` are not;
- a stray pickle (`*.pkl`, `*.bin`, `pytorch_model.bin`) beside a hand-placed or --pack-dir pack is ignored,
  never opened; beside a pulled pack it refuses the pack (it is not in the install record); in an archive it
  refuses the archive. Bait pickles would create MARKER when unpickled; it never appears.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import tarfile
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import registry_server as registry_tests
from helpers import domain_pack, function_pack, regression_head
from registry_server import RegistryHandler, cli, entry_of, hub_cache, index_url, installed, serve, set_entry
from tagcli.errors import PackError
from tagcli.home import packs_dir, tagcli_home
from tagcli.packs import listing
from tagcli.packs.archive import extract_archive
from tagcli.packs.format import load_pack, save_pack
from tagcli.packs.install import ensure_packs, pull
from tagcli.packs.registries import parse_registry

# registry_server.py's fixtures, here too: no configured registries (autouse), a registry folder per test
# (`reg`: smiles 0.2.0, protein, logp and alien, exported from `sources`)
no_configured_registries = registry_tests.no_configured_registries
reg, sources = registry_tests.reg, registry_tests.sources

MIB = 1 << 20
MEMORY_BOUND = 100 * MIB  # peak growth allowed around a refusal that a size cap is meant to bound
TIMEOUT = "1"  # $TAGCLI_NETWORK_TIMEOUT (seconds) for the stalling servers
# A stalling server keeps silent this long (or until the test ends); a refusal must come well before, so
# the client's timeout ended it, while a loaded 2-core machine still has room (a pull took >10 s there).
STALL_SECONDS = 120


# --------------------------------------------------------------------------- checks shared by all cases


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder inside tmp_path, so the before/after snapshot sees temporary files too."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TAGCLI_NETWORK_TIMEOUT", TIMEOUT)
    return folder


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: folders by kind, files by size and mtime, links by target."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = ("dir",)
            else:
                found[key] = ("file", st.st_size, st.st_mtime_ns)
    return found


def assert_nothing_written(before: dict, after: dict, root: Path, unfinished_below: int | None = None) -> None:
    """After a refusal: all outside $TAGCLI_HOME as it was, $TAGCLI_HOME/packs as it was, and in
    downloads/ at most an unfinished `.part` (only where the case allows one, and smaller than declared)."""
    home = tagcli_home().relative_to(root).as_posix() + "/"
    outside = lambda snap: {k: v for k, v in snap.items() if not k.startswith(home)}  # noqa: E731
    assert outside(after) == outside(before), "something was written outside $TAGCLI_HOME"
    packs = lambda snap: {k: v for k, v in snap.items() if k.startswith(home + "packs/")}  # noqa: E731
    assert packs(after) == packs(before), "$TAGCLI_HOME/packs changed"
    new = {k: v for k, v in after.items() if k not in before and k not in (home + "packs", home + "downloads")}
    for key, value in new.items():
        assert key.startswith(home + "downloads/") and key.endswith(".tagpack.part"), f"unexpected {key}"
        assert unfinished_below is not None, f"a download was left behind: {key}"
        assert value[1] < unfinished_below, f"{key} holds {value[1]} bytes: a finished archive"


@contextmanager
def bounded_memory(limit: int = MEMORY_BOUND) -> Iterator[None]:
    """Peak memory growth inside the block: Python allocations (tracemalloc) and resident memory
    (ru_maxrss, its high-water mark first reset to the current size where Linux allows it)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then ru_maxrss growth only shows a new process-wide peak
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        yield
    finally:
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert traced < limit, f"Python allocations peaked at {traced / MIB:.0f} MiB"
    assert grown < limit, f"resident memory grew by {grown / MIB:.0f} MiB"


def refused_cli(capsys: pytest.CaptureFixture, *args: str) -> str:
    """`tagcli ARGS` in-process: exit status 1, nothing on stdout, one `error:` line on stderr."""
    code, out, err = cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in err and len(lines[0]) < 600, lines[0]
    return lines[0]


def one_line(exc: PackError) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 600, text
    return text


class Bait:
    """Pickled, it unpickles to open(path, "w"): a file that appears if anything ever unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "UNPICKLED"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Bait(control)))  # the bait works: unpickling creates its file,
    assert control.exists()
    control.unlink()
    torch.load(io.BytesIO(torch_bait(tmp_path / "control.pt", control)), weights_only=False)  # also torch.save's
    assert control.exists()
    control.unlink()
    (tmp_path / "control.pt").unlink()
    yield path
    assert not path.exists(), "a pickle was unpickled"


def torch_bait(path: Path, marker: Path) -> bytes:
    """What torch.save writes for a dict holding the bait (a zip with a pickle inside)."""
    buffer = io.BytesIO()
    torch.save({"mol": Bait(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def sparse_file(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk: `head`, then a hole."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


# --------------------------------------------------------------------------- hostile packs on disk


@pytest.fixture(scope="module")
def library(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good packs, mol (domain, SMILES) and prop (regression on mol); no built-in has their names."""
    root = tmp_path_factory.mktemp("hostile-library")
    mol = domain_pack(base, "mol", kind="smiles", seed=11)
    prop = function_pack(base, "prop", [mol], regression_head(base.hidden_size, ["y"], seed=12), seed=12)
    save_pack(mol, root / "mol")
    save_pack(prop, root / "prop")
    return root


def edit(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    """A case that changes the parsed manifest and writes it back as JSON (NaN and Infinity as Python writes them)."""

    def apply(pack: Path) -> None:
        data = json.loads((pack / "manifest.json").read_text())
        change(data)
        (pack / "manifest.json").write_text(json.dumps(data))

    return apply


def put(**fields: Any) -> Callable[[Path], None]:
    return edit(lambda m: m.update(fields))


def raw_manifest(text: str | bytes) -> Callable[[Path], None]:
    def apply(pack: Path) -> None:
        (pack / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())

    return apply


def huge_int_field(field: str) -> Callable[[Path], None]:
    """A manifest whose `field` is a 5000-digit integer (json.dumps cannot even write one)."""

    def apply(pack: Path) -> None:
        data = json.loads((pack / "manifest.json").read_text())
        data[field] = "HUGE"
        text = json.dumps(data).replace('"HUGE"', "9" * 5000)
        (pack / "manifest.json").write_text(text)

    return apply


def big_manifest(pack: Path) -> None:
    """A valid manifest padded to 50 MB with an unknown key: only its size can refuse it."""
    text = (pack / "manifest.json").read_text().rstrip().rstrip("}")
    with open(pack / "manifest.json", "w") as f:
        f.write(text + ', "padding": "')
        for _ in range(50):
            f.write("x" * MIB)
        f.write('"}')


def nested_field(depth: int) -> Callable[[Path], None]:
    return edit(lambda m: m.update(training={"history": functools.reduce(lambda inner, _: [inner], range(depth), 0)}))


def tags(change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    def apply(pack: Path) -> None:
        file = pack / "tags.safetensors"
        save_file(change(load_file(file)), file)

    return apply


def heads(change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    def apply(pack: Path) -> None:
        file = pack / "heads.safetensors"
        save_file(change(load_file(file)), file)

    return apply


def tags_bytes(make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(pack: Path) -> None:
        file = pack / "tags.safetensors"
        file.write_bytes(make(file.read_bytes()))

    return apply


def lying_header(data: bytes) -> bytes:
    """A safetensors header whose offsets reach far beyond the file."""
    header = json.dumps({"mol": {"dtype": "F32", "shape": [3, 32], "data_offsets": [0, 10**9]}}).encode()
    return len(header).to_bytes(8, "little") + header + data[-384:]


def linear_probe_bomb(pack: Path) -> None:
    """A function pack without its own tag whose manifest asks for a 20000 x 131072 head (10 GB) while
    its heads file is the small one: building the head from the manifest alone would allocate it."""
    data = json.loads((pack / "manifest.json").read_text())
    data.update(tag_length=0, hidden_size=131072, template="{tag:mol}{input:mol}")
    data["head"]["targets"] = [{"name": f"t{i}"} for i in range(20000)]
    (pack / "manifest.json").write_text(json.dumps(data, separators=(",", ":")))
    save_file({}, pack / "tags.safetensors")


def many_tensors(pack: Path) -> None:
    save_file(
        {f"extra{i:05d}": torch.zeros(1) for i in range(5000)} | load_file(pack / "tags.safetensors"),
        pack / "tags.safetensors",
    )


@dataclass
class PackCase:
    id: str
    pack: str  # mol (domain) or prop (function)
    change: Callable[[Path], None]
    expect: str  # in the one-line refusal
    bounded: bool = False  # a size cap is the point: measure peak memory


NAMES = {  # case id → manifest name
    "dotdot": "../evil",
    "absolute": "/etc/passwd",
    "fullwidth": "ｍol",
    "cyrillic-o": "mоl",
    "zero-width-space": "mol\u200b",
    "newline": "mol\n",
    "uppercase": "MOL",
    "empty": "",
    "65-chars": "a" * 65,
    "number": 123,
    "null": None,
}
BAD_NUMBERS = {  # case id → value, for kind, tag_length and hidden_size
    "true": True,
    "float": 3.0,
    "negative": -3,
    "zero": 0,
    "10**30": 10**30,
    "string": "3",
    "nan": float("nan"),
    "infinity": float("inf"),
    "list": [3],
    "null": None,
}
PACK_CASES = [
    PackCase("manifest-not-json", "mol", raw_manifest("{not json"), "manifest.json is not valid JSON"),
    PackCase("manifest-binary", "mol", raw_manifest(b"\xff\xfe\x00garbage"), "manifest.json is not valid JSON"),
    PackCase("manifest-array", "mol", raw_manifest("[1, 2]"), "manifest must be a JSON object"),
    PackCase("manifest-50MB", "mol", big_manifest, "more than the 1 MiB it may be", bounded=True),
    PackCase("manifest-recursion-bomb", "mol", raw_manifest("[" * 100_000), "nests deeper than 32 levels"),
    PackCase("manifest-nested-field", "mol", nested_field(200), "nests deeper than 32 levels"),
    *[PackCase(f"name-{k}", "mol", put(name=v), "bad pack name") for k, v in NAMES.items()],
    PackCase("version-traversal", "mol", put(version="../../../../tmp/evil"), "bad version"),
    PackCase("version-number", "mol", put(version=1.0), "bad version"),
    PackCase("kind-capitalised", "mol", put(kind="Domain"), "kind must be 'domain' or 'function'"),
    *[PackCase(f"kind-{k}", "mol", put(kind=v), "kind must be 'domain' or 'function'") for k, v in BAD_NUMBERS.items()],
    *[
        PackCase(f"tag_length-{k}", "mol", put(tag_length=v), "tag_length must be a positive integer")
        for k, v in BAD_NUMBERS.items()
    ],
    PackCase("tag_length-5000-digits", "mol", huge_int_field("tag_length"), "manifest.json is not valid JSON"),
    *[
        PackCase(f"hidden_size-{k}", "mol", put(hidden_size=v), "hidden_size must be a positive integer")
        for k, v in BAD_NUMBERS.items()
    ],
    PackCase("head-allocation-bomb", "prop", linear_probe_bomb, "expected (20000,)", bounded=True),
    PackCase("base_model-list", "prop", put(base_model=["x"]), "base_model needs an id and a sha256"),
    PackCase("base_model-id-list", "mol", edit(lambda m: m["base_model"].update(id=["x"])), "base_model needs"),
    PackCase("requires-list", "prop", put(requires=["mol"]), "requires must map domain names"),
    PackCase(
        "requires-bad-name",
        "prop",
        edit(lambda m: m.update(requires={"../x": m["requires"]["mol"]})),
        "requires must map domain names",
    ),
    PackCase("domains-objects", "prop", put(domains=[{"a": 1}]), "domains must be a list of pack names"),
    PackCase("input-max_tokens-string", "mol", edit(lambda m: m["input"].update(max_tokens="64")), "max_tokens"),
    PackCase("input-max_tokens-negative", "mol", edit(lambda m: m["input"].update(max_tokens=-1)), "max_tokens"),
    PackCase("input-unknown-key", "mol", edit(lambda m: m["input"].update(shell="rm -rf /")), "bad input spec"),
    PackCase("metrics-list", "prop", put(metrics=[1]), "metrics must be a dict"),
    *[
        PackCase(
            f"head-statistic-{k}-{v}",
            "prop",
            edit(lambda m, k=k, v=v: m["head"]["targets"][0].update({k: v})),
            "needs a finite mean and a positive std",
        )
        for k, v in [("mean", float("nan")), ("std", float("inf")), ("mean", float("-inf")), ("std", -1.0)]
    ],
    # adversarial safetensors
    PackCase("tags-nan", "mol", tags(lambda t: {"mol": t["mol"].fill_(float("nan"))}), "contains NaN or infinite"),
    PackCase("tags-inf", "mol", tags(lambda t: {"mol": t["mol"].fill_(float("inf"))}), "contains NaN or infinite"),
    PackCase("tags-shape", "mol", tags(lambda t: {"mol": torch.zeros(4, 7)}), "has shape (4, 7), manifest says"),
    PackCase("tags-int", "mol", tags(lambda t: {"mol": torch.zeros(3, 32, dtype=torch.int32)}), "dtype torch.int32"),
    PackCase("tags-many-names", "mol", many_tensors, "(5001 in all)"),
    PackCase("head-int", "prop", heads(lambda h: {k: v.long() for k, v in h.items()}), "dtype torch.int64"),
    PackCase("head-inf", "prop", heads(lambda h: {k: v.fill_(float("inf")) for k, v in h.items()}), "infinite"),
    PackCase(
        "head-target_std-nan",
        "prop",
        heads(lambda h: h | {"prop.target_std": torch.tensor([float("nan")])}),
        "head tensor 'target_std' contains NaN or infinite values",
    ),
    PackCase(
        "header-2**60",
        "mol",
        tags_bytes(lambda d: (2**60).to_bytes(8, "little") + d[8:]),
        "its header length field says 1,152,921,504,606,846,976 bytes",
    ),
    PackCase(
        "header-offsets-beyond-file",
        "mol",
        tags_bytes(lying_header),
        "tags.safetensors is not a readable safetensors file",
    ),
    PackCase("tags-truncated", "mol", tags_bytes(lambda d: d[: len(d) // 2]), "not a readable safetensors file"),
    PackCase("tags-empty", "mol", tags_bytes(lambda d: b""), "it is too short"),
    PackCase(
        "tags-300MB-sparse",
        "mol",
        lambda p: sparse_file(p / "tags.safetensors", 300 * MIB, b"\x40"),
        "tags.safetensors is 314,572,800 bytes, more than the 256 MiB it may be",
        bounded=True,
    ),
]


@pytest.mark.parametrize("case", PACK_CASES, ids=[c.id for c in PACK_CASES])
def test_hostile_pack_is_refused_in_one_line(
    case: PackCase, library: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.copytree(library, packs_dir())  # hand-placed under $TAGCLI_HOME/packs, like a built-in
    target = packs_dir() / case.pack
    case.change(target)
    before = snapshot(tmp_path)
    with bounded_memory() if case.bounded else nullcontext():
        with pytest.raises(PackError) as info:
            load_pack(target)
    message = one_line(info.value)
    assert case.expect in message, message
    assert refused_cli(capsys, "pack", "info", str(target)) == f"error: {message}"
    # the lax readers (predict's auto-pull planning, listings) never trip over it either
    ensure_packs([case.pack], None, offline=True)
    listing.list_packs(base_model="some/model")
    code, out, _ = cli(capsys, "pack", "list", "--format", "json")
    assert code == 0
    assert {"name": case.pack, "kind": "broken", "status": "broken", "error": message} in json.loads(out)
    assert_nothing_written(before, snapshot(tmp_path), tmp_path)


def test_unknown_top_level_manifest_keys_are_ignored(library: Path) -> None:
    """Forward compatibility: a newer tagcli's fields load in this one (nested `input` keys do not)."""
    pack = packs_dir() / "mol"
    shutil.copytree(library / "mol", pack)
    put(signature={"alg": "ed25519", "sig": "…"}, x_vendor=[1, 2, 3])(pack)
    loaded = load_pack(pack)
    assert loaded.name == "mol" and not hasattr(loaded.manifest, "signature")


@pytest.mark.parametrize("where", ["pack-dir", "hand-placed"])
def test_stray_pickles_beside_a_pack_are_never_opened(
    where: str, library: Path, tmp_path: Path, marker: Path, base, capsys: pytest.CaptureFixture
) -> None:
    """Decision: beside a pack without an install record, other files are ignored; nothing opens them."""
    from tagcli.scoring.scorer import TagScorer

    root = tmp_path / "packdir" if where == "pack-dir" else packs_dir()
    shutil.copytree(library, root)
    for pack in ("mol", "prop"):
        (root / pack / "evil.pkl").write_bytes(pickle.dumps(Bait(marker)))
        torch_bait(root / pack / "pytorch_model.bin", marker)
        torch_bait(root / pack / "weights.bin", marker)
    dirs = ["--pack-dir", str(root)] if where == "pack-dir" else []
    scorer = TagScorer("prop", base_model=base, pack_dirs=[str(root)] if dirs else [])
    assert scorer.plans[0].domains["mol"].path == (root / "mol").resolve()
    for args in (["pack", "info", "prop"], ["pack", "list"], ["pack", "verify", "prop"]):
        code, _, err = cli(capsys, *args, *dirs)
        assert code == 0, err
    exported = listing.export("prop", tmp_path / "out", pack_dirs=[str(root)] if dirs else [])
    with tarfile.open(exported["archive"]) as tar:
        assert sorted(tar.getnames()) == ["heads.safetensors", "manifest.json", "tags.safetensors"]


def test_a_stray_pickle_beside_a_pulled_pack_refuses_it(reg: Path, marker: Path) -> None:
    pull(["protein"], [parse_registry(str(reg))])
    torch_bait(packs_dir() / "protein" / "pytorch_model.bin", marker)
    with pytest.raises(PackError) as info:
        load_pack(packs_dir() / "protein")
    assert "pytorch_model.bin is not part of the pack" in one_line(info.value)


def test_a_pickle_named_tags_safetensors_is_never_unpickled(
    library: Path, marker: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.copytree(library, packs_dir())
    pack = packs_dir() / "mol"
    for make in (lambda f: torch_bait(f, marker), lambda f: f.write_bytes(pickle.dumps({"mol": Bait(marker)}))):
        make(pack / "tags.safetensors")
        with pytest.raises(PackError) as info:
            load_pack(pack)
        assert "tags.safetensors is not a readable safetensors file" in one_line(info.value)
        refused_cli(capsys, "pack", "info", str(pack))


# --------------------------------------------------------------------------- hostile .tagpack archives


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], tail: bytes = b"", **options: Any) -> bytes:
    """A tar of `members`, then raw `tail` blocks, then the end-of-archive blocks."""
    buffer = io.BytesIO()
    tar = tarfile.open(fileobj=buffer, mode="w", **options)
    for info, data in members:
        if data is not None:
            info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    body = buffer.getvalue()  # the members, before close() writes the end blocks
    tar.close()
    return body + tail + bytes(1024)


def pack_members(pack: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(tarfile.TarInfo(p.name), p.read_bytes()) for p in sorted(pack.iterdir())]


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes | None = b"x") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, (data if kind == tarfile.REGTYPE else None)


def gnu_sparse_header(name: str, realsize: int) -> bytes:
    """A GNU sparse member: 512 bytes stored, `realsize` bytes once extracted (then its data block)."""
    info = tarfile.TarInfo(name)
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 512
    buf = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    itn = functools.partial(tarfile.itn, digits=12, format=tarfile.GNU_FORMAT)
    buf[386:398], buf[398:410], buf[483:495] = itn(0), itn(512), itn(realsize)
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % tarfile.calc_chksums(bytes(buf))[0]
    return bytes(buf) + b"\x40" * 512


def pax_sparse(name: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(300 * MIB)}
    return info, b"99999999\n" + bytes(503)


def huge_pax(name: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.pax_headers = {"comment": "x" * 100_000}
    return info, b"{}"


def zero_filled_archive(pack: Path, path: Path, size: int = 300 * MIB) -> Path:
    """A real (uncompressed) tar whose tags.safetensors member is `size` zero bytes: a sparse file on disk."""
    header = tarfile.TarInfo("tags.safetensors")
    header.size = size
    manifest = [m for m in pack_members(pack) if m[0].name == "manifest.json"]
    head = tar_bytes(manifest)[:-1024] + header.tobuf(format=tarfile.PAX_FORMAT)
    return sparse_file(path, len(head) + size + 1024, head)


@dataclass
class ArchiveCase:
    id: str
    build: Callable[[Path, Path], None]  # (honest pack dir, archive path to write)
    expect: str
    bounded: bool = False


def archive_of(*extra: tuple, tail: bytes = b"", drop: tuple[str, ...] = (), **options: Any) -> Callable:
    def build(pack: Path, path: Path) -> None:
        members = [m for m in pack_members(pack) if m[0].name not in drop]
        path.write_bytes(tar_bytes(members + list(extra), tail, **options))

    return build


def compressed(pack: Path, path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for p in sorted(pack.iterdir()):
            tar.add(p, arcname=p.name)


ARCHIVE_CASES = [
    ArchiveCase(
        "symlink",
        archive_of(member("tags.safetensors", tarfile.SYMTYPE, "/etc/passwd"), drop=("tags.safetensors",)),
        "unexpected member 'tags.safetensors' (a symbolic link)",
    ),
    ArchiveCase(
        "hardlink",
        archive_of(member("heads.safetensors", tarfile.LNKTYPE, "/etc/passwd")),
        "unexpected member 'heads.safetensors' (a hard link)",
    ),
    ArchiveCase("absolute", archive_of(member("/tmp/evil")), "unexpected member '/tmp/evil'"),
    ArchiveCase("dotdot", archive_of(member("../../evil")), "unexpected member '../../evil'"),
    ArchiveCase("dot-slash", archive_of(member("./manifest.json")), "unexpected member './manifest.json'"),
    ArchiveCase(
        "directory",
        archive_of(member("heads.safetensors", tarfile.DIRTYPE)),
        "unexpected member 'heads.safetensors' (a directory)",
    ),
    ArchiveCase("fifo", archive_of(member("heads.safetensors", tarfile.FIFOTYPE)), "(a FIFO)"),
    ArchiveCase(
        "duplicate",
        archive_of(member("manifest.json", data=b'{"format": "tagcli.pack"}')),
        "member 'manifest.json' appears twice",
    ),
    ArchiveCase(
        "pickle-member",
        archive_of(member("pytorch_model.bin", data=pickle.dumps(0))),
        "unexpected member 'pytorch_model.bin'",
    ),
    ArchiveCase(
        "manifest-2MB",
        archive_of(member("manifest.json", data=b" " * 2 * MIB), drop=("manifest.json",)),
        "member 'manifest.json' is 2,097,152 bytes, more than the 1 MiB it may be",
    ),
    ArchiveCase(
        "gnu-sparse-300MB",
        archive_of(tail=gnu_sparse_header("heads.safetensors", 300 * MIB)),
        "member 'heads.safetensors' is a sparse file",
    ),
    ArchiveCase("pax-sparse", archive_of(pax_sparse("heads.safetensors")), "a sparse member (pax GNU.sparse header)"),
    ArchiveCase(
        "pax-header-100KB",
        archive_of(huge_pax("heads.safetensors")),
        "an extended tar header of 100,016 bytes (at most 8,192)",
    ),
    ArchiveCase("gzip", compressed, "is gzip-compressed; a .tagpack is a plain tar file"),
    ArchiveCase(
        "zero-filled-300MB-member",
        zero_filled_archive,
        "member 'tags.safetensors' is 314,572,800 bytes, more than the 256 MiB it may be",
        bounded=True,
    ),
    ArchiveCase("not-a-tar", lambda pack, path: path.write_bytes(os.urandom(4096)), "not a readable tar file"),
    ArchiveCase(
        "truncated",
        lambda pack, path: path.write_bytes(tar_bytes(pack_members(pack))[:1500]),
        "not a readable tar file",
    ),
]


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=[c.id for c in ARCHIVE_CASES])
def test_hostile_archive_is_refused_before_anything_is_extracted(
    case: ArchiveCase, library: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    archive = tmp_path / "evil.tagpack"
    case.build(library / "mol", archive)
    before = snapshot(tmp_path)
    with bounded_memory() if case.bounded else nullcontext():
        with pytest.raises(PackError) as info:
            load_pack(archive)
    assert case.expect in one_line(info.value), info.value
    assert refused_cli(capsys, "pack", "info", str(archive)) == f"error: {info.value}"
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PackError):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == []  # refused before the first member was written
    dest.rmdir()
    assert_nothing_written(before, snapshot(tmp_path), tmp_path)


# --------------------------------------------------------------------------- lying registries


class LyingHandler(RegistryHandler):
    """RegistryHandler, except that the paths in server.lies are answered by the lie registered there."""

    def do_GET(self) -> None:
        lie = self.server.lies.get(self.path.lstrip("/"))  # type: ignore[attr-defined]
        if lie is None:
            return super().do_GET()
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        lie(self)
        self.close_connection = True


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `serve` (registry_server.py) for the module: stopping a server takes half a second."""
    with serve(tmp_path_factory.mktemp("empty")) as server:
        yield server


@contextmanager
def lying_server(server: Any, folder: Path) -> Iterator[Any]:
    """The loopback server, serving `folder` with LyingHandler; stalled handlers are released at the end."""
    server.RequestHandlerClass = functools.partial(LyingHandler, directory=str(folder))
    server.lies, server.release, server.requests = {}, threading.Event(), []
    try:
        yield server
    finally:
        server.release.set()


def stall(length: int | None = None, first: bytes = b"") -> Callable:
    """Nothing at all (or headers promising `length` bytes, then `first`), then silence for up to STALL_SECONDS."""

    def lie(handler: LyingHandler) -> None:
        if length is not None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
            handler.wfile.write(first)
            handler.wfile.flush()
        handler.server.release.wait(STALL_SECONDS)  # type: ignore[attr-defined]

    return lie


@functools.cache
def gzip_zeros(megabytes: int) -> bytes:
    """`megabytes` MiB of zeros, gzip-compressed (about 1000:1)."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(gzip.compress(bytes(MIB)) for _ in range(megabytes)) + gzip.flush()


def gzip_bomb(megabytes: int = 100) -> Callable:
    """A small body with `Content-Encoding: gzip` that the HTTP client inflates to `megabytes` MiB."""

    body = gzip_zeros(megabytes)  # made now, not while the client waits

    def lie(handler: LyingHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            handler.wfile.write(body)
        except OSError:
            pass

    return lie


def flood(head: bytes, total: int, filler: bytes = bytes(MIB)) -> Callable:
    """`head`, then `filler` up to `total` bytes, without a Content-Length; stops when the client hangs up."""

    def lie(handler: LyingHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            handler.wfile.write(head)
            for _ in range(total // len(filler)):
                handler.wfile.write(filler)
        except OSError:
            pass

    return lie


@dataclass
class Ctx:
    reg: Path  # the registry folder (sources from registry_server.py: smiles 0.2.0, protein, logp, alien)
    server: Any
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    sources: Path

    @property
    def url(self) -> str:
        return index_url(self.server)

    def archive(self, name: str = "protein") -> str:
        return entry_of(self.reg, name)["url"]

    def publish(self, data: bytes, name: str = "protein") -> None:
        """Replace an archive with `data`; its index entry then tells the truth about size and sha256."""
        (self.reg / self.archive(name)).write_bytes(data)
        set_entry(self.reg, name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@dataclass
class RegistryCase:
    id: str
    setup: Callable[[Ctx], str]  # makes the lie, returns the --registry to pull protein from
    expect: str
    unfinished: bool = False  # a .part shorter than declared may stay (an interrupted download, to resume)
    bounded: bool = False


def lie_in_index(**changes: Any) -> Callable[[Ctx], str]:
    def setup(ctx: Ctx) -> str:
        set_entry(ctx.reg, "protein", **changes)
        return ctx.url

    return setup


def resize(delta: int) -> Callable[[Ctx], str]:
    def setup(ctx: Ctx) -> str:
        set_entry(ctx.reg, "protein", size=entry_of(ctx.reg, "protein")["size"] + delta)
        return ctx.url

    return setup


def index_bytes(data: bytes, folder: bool = False) -> Callable[[Ctx], str]:
    def setup(ctx: Ctx) -> str:
        (ctx.reg / "index.json").write_bytes(data)
        return str(ctx.reg) if folder else ctx.url

    return setup


def big_index_file(ctx: Ctx) -> str:
    with open(ctx.reg / "index.json", "wb") as f:
        f.write(b'{"format": "tagcli.index", "format_version": 1, "packs": []')
        for _ in range(20):
            f.write(b" " * MIB)
        f.write(b"}")
    return str(ctx.reg)


def lie_on(path: Callable[[Ctx], str], lie: Callable[[Ctx], Callable]) -> Callable[[Ctx], str]:
    def setup(ctx: Ctx) -> str:
        ctx.server.lies[path(ctx)] = lie(ctx)
        return ctx.url

    return setup


def evil_archive(case: ArchiveCase) -> Callable[[Ctx], str]:
    def setup(ctx: Ctx) -> str:
        path = ctx.tmp_path / "evil.tagpack"
        case.build(ctx.sources / "protein", path)
        ctx.publish(path.read_bytes())
        path.unlink()
        return ctx.url

    return setup


def hub_zero_filled_member(ctx: Ctx) -> str:
    """A hub registry (read from the local HF cache) whose protein archive has a 300 MB member."""
    from huggingface_hub import constants

    ctx.monkeypatch.setattr(constants, "HF_HUB_CACHE", str(ctx.tmp_path / "hf"))
    commit = hub_cache(ctx.tmp_path / "hf", ctx.reg)
    snapshot_dir = ctx.tmp_path / "hf" / "models--org--packs" / "snapshots" / commit
    archive = zero_filled_archive(ctx.sources / "protein", snapshot_dir / ctx.archive())
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    set_entry(snapshot_dir, "protein", size=archive.stat().st_size, sha256=digest.hexdigest())
    return "hf://org/packs"


OUTSIDE = "points outside the registry"
REGISTRY_ARCHIVE_CASES = [c for c in ARCHIVE_CASES if c.id != "zero-filled-300MB-member"]
REGISTRY_CASES = [
    RegistryCase("size-too-small", resize(-1), "the server sent more than the "),
    RegistryCase("size-too-large", resize(+100), "ended early at ", unfinished=True),
    RegistryCase("sha256-wrong", lie_in_index(sha256="0" * 64), "failed its integrity check (sha256 "),
    RegistryCase("size-a-terabyte", lie_in_index(size=10**12), "size 1,000,000,000,000 is more than a pack archive"),
    RegistryCase("size-bool", lie_in_index(size=True), "size must be a positive integer"),
    *[
        RegistryCase(f"url-{i}", lie_in_index(url=url), expect)
        for i, (url, expect) in enumerate(
            [
                ("../../etc/passwd", OUTSIDE),
                ("sub/../../protein-0.1.0.tagpack", OUTSIDE),
                ("/etc/passwd", OUTSIDE),
                ("file:///etc/passwd", OUTSIDE),
                ("file:/etc/passwd", OUTSIDE),
                ("//127.0.0.1:9/protein-0.1.0.tagpack", OUTSIDE),
                ("data:application/octet-stream;base64,AAAA", OUTSIDE),
                ("memory://protein-0.1.0.tagpack", OUTSIDE),
                ("zip://manifest.json::file:///etc/passwd", "a backslash or '::'"),
                ("..\\..\\etc\\passwd", "a backslash or '::'"),
            ]
        )
    ],
    RegistryCase("folder-url-dotdot", lambda ctx: lie_in_index(url="../../etc/passwd")(ctx) and str(ctx.reg), OUTSIDE),
    RegistryCase(
        "folder-url-absolute-path",
        lambda ctx: lie_in_index(url=str(ctx.reg / ctx.archive()))(ctx) and str(ctx.reg),
        OUTSIDE,
    ),
    RegistryCase(
        "index-100k-entries",
        index_bytes(json.dumps({"format": "tagcli.index", "format_version": 1, "packs": [{}] * 100_000}).encode()),
        "index lists 100,000 packs, more than the 10,000 tagcli reads",
        bounded=True,
    ),
    RegistryCase(
        "index-container-bomb",
        index_bytes(b'{"format": "tagcli.index", "format_version": 1, "packs": [' + b"{}," * 1_300_000 + b"{}]}"),
        "holds more than 200,000 JSON objects and lists",
        bounded=True,
    ),
    RegistryCase("index-recursion-bomb", index_bytes(b"[" * 100_000), "index.json nests deeper than 32 levels"),
    RegistryCase("index-not-json", index_bytes(b"<html>gateway timeout</html>"), "index.json is not valid JSON"),
    RegistryCase(
        "index-20MB-folder", big_index_file, "index.json is more than 4 MiB; refusing to read it", bounded=True
    ),
    RegistryCase(
        "index-20MB-streamed",
        lie_on(lambda ctx: "index.json", lambda ctx: flood(b'{"packs": [', 20 * MIB, b" " * MIB)),
        "index.json is more than 4 MiB; refusing to read it",
        bounded=True,
    ),
    RegistryCase(
        "archive-flood-200MB",
        lie_on(Ctx.archive, lambda ctx: flood((ctx.reg / ctx.archive()).read_bytes(), 200 * MIB)),
        "the server sent more than the ",
        bounded=True,
    ),
    RegistryCase(
        "index-gzip-bomb",
        lie_on(lambda ctx: "index.json", lambda ctx: gzip_bomb()),
        "index.json is more than 4 MiB; refusing to read it",
        bounded=True,
    ),
    RegistryCase(
        "archive-gzip-bomb",
        lie_on(Ctx.archive, lambda ctx: gzip_bomb()),
        "the server sent more than the ",
        bounded=True,
    ),
    RegistryCase("stall-on-index", lie_on(lambda ctx: "index.json", lambda ctx: stall()), "cannot read http://"),
    RegistryCase("stall-before-archive", lie_on(Ctx.archive, lambda ctx: stall()), "cannot download http://"),
    RegistryCase(
        "stall-mid-archive",
        lie_on(Ctx.archive, lambda ctx: stall(entry_of(ctx.reg, "protein")["size"], b"x" * 100)),
        "stopped at 100 of ",
        unfinished=True,
    ),
    *[RegistryCase(f"archive-{c.id}", evil_archive(c), c.expect) for c in REGISTRY_ARCHIVE_CASES],
    RegistryCase(
        "hub-zero-filled-300MB-member",
        hub_zero_filled_member,
        "member 'tags.safetensors' is 314,572,800 bytes, more than the 256 MiB it may be",
        bounded=True,
    ),
]


@pytest.mark.parametrize("case", REGISTRY_CASES, ids=[c.id for c in REGISTRY_CASES])
def test_lying_registry_is_refused_and_nothing_is_installed(
    case: RegistryCase,
    reg: Path,
    sources: Path,
    loopback: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    pull(["smiles"], [parse_registry(str(reg))])  # something installed before, which must stay as it is
    with lying_server(loopback, reg) as server:
        spec = case.setup(Ctx(reg, server, tmp_path, monkeypatch, sources))
        before = snapshot(tmp_path)
        started = time.monotonic()
        with bounded_memory() if case.bounded else nullcontext():
            line = refused_cli(capsys, "pack", "pull", "protein", "--registry", spec)
        assert time.monotonic() - started < STALL_SECONDS / 2
    assert case.expect in line, line
    declared = entry_of(reg, "protein")["size"] if case.unfinished else None
    assert_nothing_written(before, snapshot(tmp_path), tmp_path, unfinished_below=declared)
    assert installed() == {"smiles": "0.2.0"}

"""``overlap verify OUT``: read every byte under an output root and compare it to the manifests."""

from __future__ import annotations

import argparse
import posixpath
from collections.abc import Callable

from storage.embedding_store import store_manifests
from storage.escape import terminal
from storage.fs import TMP_MARKER, Location
from storage.manifest import MANIFEST_NAME, read_manifest


def add_verify_parser(commands: argparse._SubParsersAction) -> None:
    """The ``verify`` subcommand and its flags."""
    parser = commands.add_parser(
        "verify",
        help="check every byte of an output root against its manifests",
        description="Hash every file every stage manifest lists and name the ones that are "
        "missing or changed; exit 1 when any is. Runs check their cached inputs cheaply on every "
        "cache hit; this reads everything.",
    )
    parser.add_argument("out", help="output root: a folder or an fsspec URL (e.g. s3://b/p)")


def stage_folders(root: Location) -> list[Location]:
    """Every ``OUT/<dataset>/<stage>/<key>/`` folder that holds a manifest, sorted (the
    embedding store's folders are ``store_manifests``)."""
    base = root.path.rstrip("/")
    found = root.fs.glob(posixpath.join(base, "*", "*", "*", MANIFEST_NAME))
    parts = sorted(p.removeprefix(base).strip("/").split("/")[:3] for p in found)
    return [root.child(*p) for p in parts]


def leftovers(root: Location) -> list[str]:
    """Temporary files of interrupted writes anywhere under ``root``, sorted (full paths)."""
    return sorted(
        path for path in root.fs.find(root.path) if TMP_MARKER in posixpath.basename(path)
    )


def verify_root(url: str, emit: Callable[[str], None] = print) -> int:
    """Check every manifest's files under ``url``; emit one line per damaged file and per
    temporary file an interrupted write left (the next run of its stage removes it, a leftover
    alone does not fail the check); exit code."""
    root = Location(url)
    if not root.exists():
        raise FileNotFoundError(f"no output root at {url!r}; pass the --out of a run")
    folders = stage_folders(root) + store_manifests(root)
    if not folders:
        raise FileNotFoundError(f"{url!r} holds no stage manifests; is it an output root?")
    checked = damaged = 0
    for folder in folders:
        manifest = read_manifest(folder)
        if manifest is None:
            emit(terminal(f"damaged: {folder.url}/{MANIFEST_NAME} (unreadable)"))
            damaged += 1
            continue
        manifest = manifest.model_copy(update={"url": folder.url})  # the root may have moved
        checked += len(manifest.files)
        for name, reason in manifest.verify_hashes():
            damaged += 1
            emit(terminal(f"damaged: {folder.child(name).url} ({reason})"))
    for path in leftovers(root):  # harmless to results: no manifest lists them
        emit(terminal(f"leftover: {path} (temporary file of an interrupted write)"))
    if damaged:
        emit(
            f"{damaged} of {checked} files damaged; "
            "the next run recomputes the stages that wrote them"
        )
        return 1
    emit(f"{checked} files in {len(folders)} stage folders: every byte matches its manifest")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    """Entry of ``overlap verify``."""
    return verify_root(args.out)

"""A stage's code version, derived from the modules it imports: no list of modules to forget.

The version hashes the code of every project module (under ``flows``, ``tasks``, ``storage``)
that a stage module imports, transitively, found by reading their ``import`` statements (lazy
imports inside functions included; type-only ones not), so nothing is imported to compute it:
a stage whose code loads torch can be keyed without loading torch. A module's code is its
tokens without comments, blank lines and docstrings, so rewording or reformatting recomputes
nothing. The version also folds in the installed versions of the third-party packages that the
computing code (``tasks.algorithms``, ``tasks.models``) imports: an upgrade of numpy, FAISS or
timm can change the numbers. Packages that only orchestrate or store (Prefect, imported by
every stage) are left out, or any upgrade would recompute everything, embeddings included.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

from storage.fingerprint import SCHEMA_VERSION

PROJECT_PACKAGES = ("flows", "tasks", "storage")
COMPUTING = "tasks"  # third-party imports of modules under here count, bar the machinery's
MACHINERY = "tasks.core"
ROOT = Path(__file__).resolve().parent.parent  # the folder holding the project's packages


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """Source file of a project module (package: its ``__init__.py``), None for any other."""
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports a type checker reads and a run
    never executes."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` a run may execute: ``ast.walk`` without ``if TYPE_CHECKING``
    bodies (their ``else`` kept)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if _type_checking_only(node):
            pending.extend([node.test, *node.orelse])  # type: ignore[attr-defined]
        else:
            pending.extend(ast.iter_child_nodes(node))


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name an import statement a run may execute loads (``from a import b``: ``a``
    and ``a.b``). Type-only imports are left out: they cannot change what the code computes."""
    package = module if is_package else module.rpartition(".")[0]
    for node in _run_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up from this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _with_parents(name: str) -> Iterator[str]:
    """Importing ``a.b.c`` runs ``a`` and ``a.b`` first."""
    parts = name.split(".")
    yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _third_party(imported: str) -> str | None:
    top = imported.partition(".")[0]
    is_own = top in PROJECT_PACKAGES or top in sys.stdlib_module_names
    return None if is_own or not top else top


def imports_of(module: str, root: Path = ROOT) -> tuple[dict[str, Path], dict[str, set[str]]]:
    """The project modules ``module`` loads, transitively (name -> file), and the top-level
    third-party modules each of them imports (name -> set)."""
    found: dict[str, Path] = {}
    external: dict[str, set[str]] = {}
    pending = list(_with_parents(module))
    while pending:
        name = pending.pop()
        path = module_file(name, root)
        if name in found or path is None:
            continue
        found[name], external[name] = path, set()
        for imported in _read_module(path, name, _stamp(path)).imports:
            if (top := _third_party(imported)) is not None:
                external[name].add(top)
            elif imported.partition(".")[0] in PROJECT_PACKAGES:
                pending.extend(_with_parents(imported))
    return found, external


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def computing_packages(external: dict[str, set[str]]) -> set[str]:
    """Third-party packages of the computing modules, less those of the stage machinery."""
    machinery = set().union(*(tops for n, tops in external.items() if _under(n, MACHINERY)))
    computing = (t for n, tops in external.items() if _under(n, COMPUTING) for t in tops)
    return set(computing) - machinery


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed package's metadata once: ~0.2 s


def package_versions(top_level: set[str]) -> dict[str, str]:
    """Installed distribution versions of these top-level modules (not installed: left out)."""
    versions: dict[str, str] = {}
    for name in sorted(top_level):
        for distribution in _distributions().get(name, []):
            try:
                versions[distribution] = version(distribution)
            except PackageNotFoundError:
                continue
    return versions


def _docstring_spans(tree: ast.AST) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Start and end (line, column) of every module, class and function docstring."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                spans.append(
                    ((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset))
                )
    return spans


@dataclass(frozen=True)
class _Module:
    """What the code versions need of one module file: the names it imports, its code."""

    imports: tuple[str, ...]
    code: bytes


def _stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a file edited since it was read is read again."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.cache
def _read_module(path: Path, name: str, stamp: tuple[int, int]) -> _Module:
    """One module file parsed once per process (every stage's version reads the shared ones)."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    imports = tuple(_imported_names(tree, name, path.name == "__init__.py"))
    return _Module(imports, code_tokens(source, tree))


def code_tokens(source: str, tree: ast.AST | None = None) -> bytes:
    """What a module's code says, for hashing: its tokens with comments, blank lines and
    docstrings left out, so only an edit of what runs changes the version (``tree``: the
    source's syntax tree, when already parsed)."""
    spans = _docstring_spans(ast.parse(source) if tree is None else tree)
    kept = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL):
            continue
        if token.type == tokenize.STRING and any(a <= token.start <= b for a, b in spans):
            continue
        kept.append(f"{token.type} {token.string}")
    return "\n".join(kept).encode()


def code_version_of(module: str, root: Path = ROOT) -> str:
    """Fingerprint of ``module``'s code: every project module it loads, the versions of the
    packages its computing code uses, and the storage schema version."""
    files, external = imports_of(module, root)
    digest = hashlib.sha256(SCHEMA_VERSION.encode())
    for name in sorted(files):
        code = _read_module(files[name], name, _stamp(files[name])).code
        digest.update(name.encode() + b"\0" + code + b"\0")
    for distribution, installed in sorted(package_versions(computing_packages(external)).items()):
        digest.update(f"{distribution}=={installed}\0".encode())
    return digest.hexdigest()[:16]

"""Code versions derived from imports: an edit re-runs exactly the stages that load the module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storage.code_version import ROOT, code_version_of, computing_packages, imports_of

STAGES = sorted(
    path.stem for path in (ROOT / "tasks").glob("*.py") if "STAGE = Stage(" in path.read_text()
)


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for package in ("flows", "tasks", "storage"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    return tmp_path


def _versions(root: Path) -> dict[str, str]:
    return {stage: code_version_of(f"tasks.{stage}", root) for stage in STAGES}


def _changed_by_edit(root: Path, module_path: str, edit: str = "\nEDITED = 1\n") -> set[str]:
    before = _versions(root)
    with (root / module_path).open("a") as handle:
        handle.write(edit)
    after = _versions(root)
    return {stage for stage in STAGES if before[stage] != after[stage]}


def test_every_stage_declares_its_module_and_the_copy_versions_as_the_package() -> None:
    from tasks.core.stage import Stage

    assert len(STAGES) == 11
    for stage in STAGES:
        module = __import__(f"tasks.{stage}", fromlist=["STAGE"])
        declared: Stage = module.STAGE
        assert declared.module == f"tasks.{stage}"
        assert declared.code == code_version_of(f"tasks.{stage}")


@pytest.mark.parametrize(
    ("module_path", "expected"),
    [
        # similarity_matrices: class similarity and confusion use it (the old lists missed one)
        (
            "tasks/algorithms/overlap_rules.py",
            {"class_similarity", "overlap", "confusion", "report", "analyze_predictions"},
        ),
        ("tasks/algorithms/correlation.py", {"report", "analyze_predictions"}),
        ("tasks/reporting/report_artifacts.py", {"report"}),
        ("tasks/algorithms/centroids.py", {"class_similarity", "overlap"}),
        ("tasks/class_similarity.py", {"class_similarity"}),
        ("tasks/models/fast_vit.py", {"embeddings"}),
        ("tasks/sources/webdataset.py", {"images", "embeddings", "subset"}),
    ],
)
def test_an_edit_changes_exactly_the_stages_that_load_the_module(
    project_copy: Path, module_path: str, expected: set[str]
) -> None:
    assert _changed_by_edit(project_copy, module_path) == expected


def test_an_edit_of_the_stage_machinery_changes_every_stage(project_copy: Path) -> None:
    assert _changed_by_edit(project_copy, "tasks/core/stage.py") == set(STAGES)


def test_a_lazy_import_inside_a_function_counts(project_copy: Path) -> None:
    body = "\ndef later():\n    from tasks.algorithms import correlation\n    return correlation\n"
    with (project_copy / "tasks/images.py").open("a") as handle:
        handle.write(body)
    assert _changed_by_edit(project_copy, "tasks/algorithms/correlation.py") >= {"images"}


def test_the_computing_code_s_packages_count_the_machinery_s_do_not() -> None:
    embeddings = computing_packages(imports_of("tasks.embeddings")[1])
    assert {"torch", "timm", "numpy"} <= embeddings
    assert not embeddings & {"prefect", "pyarrow", "pydantic"}
    assert "faiss" in computing_packages(imports_of("tasks.neighbours")[1])


def test_computing_a_version_loads_nothing_heavy() -> None:
    probe = (
        "import sys; from storage.code_version import code_version_of; "
        "[code_version_of(f'tasks.{s}') for s in ('embeddings', 'report', 'neighbours')]; "
        "print(sorted(m for m in ('torch', 'timm', 'faiss', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_embedding_store_keeps_its_vectors_across_edits_outside_the_model(
    project_copy: Path,
) -> None:
    def model_code() -> str:
        return code_version_of("tasks.models.extractor", project_copy)

    before = model_code()
    outside_the_model = (
        "tasks/sources/webdataset.py",
        "tasks/embeddings.py",
        "storage/registry.py",
        "tasks/core/params.py",  # a new option or help line keeps the stored vectors
        "tasks/core/dataset_kinds.py",
    )
    for outside in outside_the_model:
        (project_copy / outside).write_text((project_copy / outside).read_text() + "\nX = 1\n")
    assert model_code() == before
    (project_copy / "tasks/models/fast_vit.py").write_text("\nX = 1\n", encoding="utf-8")
    assert model_code() != before


def test_an_import_only_a_type_checker_reads_does_not_count(project_copy: Path) -> None:
    body = (
        "\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tasks.algorithms import correlation\n"
        "else:\n    from tasks.algorithms import duplicates\n"
    )
    with (project_copy / "tasks/images.py").open("a") as handle:
        handle.write(body)
    assert "images" not in _changed_by_edit(project_copy, "tasks/algorithms/correlation.py")
    assert "images" in _changed_by_edit(project_copy, "tasks/algorithms/duplicates.py")


def test_rewording_a_docstring_or_a_comment_recomputes_nothing(project_copy: Path) -> None:
    path = project_copy / "tasks/models/fast_vit.py"
    source = path.read_text()
    before = _versions(project_copy)
    docstring_end = source.index('"""', 3)
    reworded = source[:3] + "Reworded." + source[docstring_end:] + "\n# a new comment\n\n"
    path.write_text(reworded)
    assert _versions(project_copy) == before
    assert _changed_by_edit(project_copy, "tasks/models/fast_vit.py") == {"embeddings"}

"""The report's "Inside each overlap" section: duplicates, leaks and label suspects per pair."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure as MplFigure

from storage import registry
from storage.layout import class_folders
from tasks.core.results import RunStages
from tasks.reporting import figures_pairs
from tasks.reporting.report_data import read_image_bytes
from tasks.reporting.report_render import Block, Figure, Heading, Text, arrow_table
from tasks.reporting.report_sections import key_values

PAIR_DUPLICATES = 6  # cross-class duplicate pairs drawn per class pair
PAIR_SUSPECTS = 6  # suspects drawn per class pair, each with its nearest neighbours
SHOWN_NEIGHBOURS = 5
COUNT_COLUMNS = ["class_a", "class_b", "cosine", "cross_class_duplicates"]
COUNT_COLUMNS += ["suspects_a_to_b", "suspects_b_to_a", "leaked_test"]
SUSPECT_COLUMNS = ["sample_id", "split", "class_name", "majority_class", "majority_share"]
SUSPECT_COLUMNS += ["expected_share", "score"]
Draw = Callable[[str, str, MplFigure], Figure]


def dataset_summary(info: Mapping[str, Any]) -> list[Block]:
    """Duplicates by kind, the test split's leak rate and suspects per class, from the manifest."""
    values: dict[str, Any] = {
        "neighbours per image (k)": info.get("k"),
        "index (recall@k against exact search)": f"{info.get('index')} ({info.get('recall_at_k')})",
        "near-duplicate threshold (cosine)": info.get("duplicate_threshold"),
        "near-duplicate pairs by kind": info.get("duplicates"),
        "test images with a near-copy in train": f"{info.get('leaked_test_images')} of "
        f"{info.get('test_images')} (leak rate {info.get('leak_rate') or 0:.2%})",
        "label suspects": f"{info.get('suspects')} ({info.get('suspect_rate', 0):.2%} of images)",
        "classes with the most suspects": info.get("suspects_per_class"),
    }
    if "planted" in info:
        values["against the planted defects (precision, recall)"] = info["planted"]
    return key_values("Inside each overlap: duplicates, leaks and label suspects", values)


def between(table: pa.Table, a: int, b: int, first: str, second: str) -> pa.Table:
    """Rows whose (first, second) labels are (a, b) or (b, a)."""
    x, y = table.column(first), table.column(second)
    forward = pc.and_(pc.equal(x, a), pc.equal(y, b))
    return table.filter(pc.or_(forward, pc.and_(pc.equal(x, b), pc.equal(y, a))))


def grid_rows(
    pairs: pa.Table, suspects: pa.Table, neighbours: pa.Table
) -> list[tuple[str, list[int]]]:
    """(caption, sample ids) rows: each duplicate pair side by side (cross-class copies and
    leaks), each suspect then its nearest neighbours."""
    rows = [
        (
            f"{r['class_a']} ({r['split_a']}) | {r['class_b']} ({r['split_b']})\n"
            f"{r['kind']}, cosine {r['cosine']:.4f}",
            [r["sample_id_a"], r["sample_id_b"]],
        )
        for r in pairs.slice(0, PAIR_DUPLICATES).to_pylist()
    ]
    near = dict(
        zip(
            neighbours["sample_id"].to_pylist(),
            neighbours["neighbour_ids"].to_pylist(),
            strict=True,
        )
    )
    for r in suspects.slice(0, PAIR_SUSPECTS).to_pylist():
        share = f"{r['majority_share']:.0%}"
        caption = f"labelled {r['class_name']}\nneighbours: {r['majority_class']} ({share})"
        rows.append((caption, [r["sample_id"], *near.get(r["sample_id"], [])[:SHOWN_NEIGHBOURS]]))
    return rows


def pair_blocks(
    rank: int,
    row: Mapping[str, Any],
    suspects: pa.Table,
    images: Mapping[int, bytes],
    rows: list[tuple[str, list[int]]],
    draw: Draw,
) -> list[Block]:
    """One flagged pair: its counts in words, its suspects and the image grid."""
    a, b = row["class_a"], row["class_b"]
    blocks: list[Block] = [
        Heading(f"{rank}. {a} / {b}", level=3),
        Text(
            f"{row['cross_class_duplicates']} cross-class near-duplicate pair(s); "
            f"{row['suspects_a_to_b']} image(s) labelled {a} whose neighbours say {b}, "
            f"{row['suspects_b_to_a']} labelled {b} whose neighbours say {a}; "
            f"{row['leaked_test']} test image(s) of the two classes with a near-copy in train."
        ),
    ]
    if suspects.num_rows:
        blocks.append(arrow_table(suspects, SUSPECT_COLUMNS, limit=PAIR_SUSPECTS))
    if rows:
        grid = figures_pairs.image_grid(
            [(caption, [images[i] for i in ids if i in images]) for caption, ids in rows],
            per_row=SHOWN_NEIGHBOURS + 1,
            title=f"{a} / {b}: cross-class copies, leaks, suspects and their neighbours",
        )
        folders = class_folders([a, b], 30)  # names build a path only through this mapping
        stem = f"inside-{rank:02d}-{folders[a]}-{folders[b]}"
        caption = f"Cross-class duplicates, train/test leaks and label suspects of {a} and {b}"
        blocks.append(draw(stem, caption, grid))
    return blocks


def pair_duplicates(duplicates: pa.Table, a: int, b: int) -> pa.Table:
    """The near-duplicates behind pair (a, b): copies under its two labels, and test images of
    either class with a copy in train (what ``leaked_test`` counts)."""
    labels = pa.array([a, b])
    touches = pc.or_(
        pc.is_in(duplicates["label_a"], labels), pc.is_in(duplicates["label_b"], labels)
    )
    leak = pc.and_(pc.not_equal(duplicates["split_a"], duplicates["split_b"]), touches)
    both = pc.and_(pc.is_in(duplicates["label_a"], labels), pc.is_in(duplicates["label_b"], labels))
    cross = pc.and_(pc.equal(duplicates["kind"], "cross_class"), both)
    return duplicates.filter(pc.or_(cross, leak))


def inside_section(
    stages: RunStages, overlap_pairs: pa.Table, max_pairs: int, draw: Draw
) -> list[Block]:
    """Dataset summary, the per-pair counts table, then one block per flagged overlap pair."""
    neighbours = stages.neighbours
    blocks = dataset_summary(neighbours.info)
    if not overlap_pairs.num_rows or "cross_class_duplicates" not in overlap_pairs.column_names:
        return blocks
    blocks += [
        Text(
            "How much of each flagged overlap pair defects explain (`overlap_pairs` columns; "
            "`confusion_pairs` has the same counts per True/Pred pair)."
        ),
        arrow_table(overlap_pairs, COUNT_COLUMNS),
    ]
    duplicates = registry.table("near_duplicates").read(neighbours.location)
    suspects = registry.table("label_suspects").read(neighbours.location)
    knn = registry.table("neighbours").read(neighbours.location, ["sample_id", "neighbour_ids"])
    per_pair = []
    for row in overlap_pairs.slice(0, max_pairs).to_pylist():
        a, b = row["label_a"], row["label_b"]
        mine = between(suspects, a, b, "label", "majority_label")
        near = knn.filter(pc.is_in(knn["sample_id"], mine["sample_id"].combine_chunks()))
        per_pair.append((row, mine, grid_rows(pair_duplicates(duplicates, a, b), mine, near)))
    wanted = {i for *_, rows in per_pair for _, ids in rows for i in ids}
    images = read_image_bytes(stages.images, sorted(wanted)) if wanted else {}
    for rank, (row, mine, rows) in enumerate(per_pair, start=1):
        blocks += pair_blocks(rank, row, mine, images, rows, draw)
    return blocks

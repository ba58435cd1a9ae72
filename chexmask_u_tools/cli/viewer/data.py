"""The viewer's data side: a small in-memory index of the table, rules over it, and single rows on demand.

Nothing here imports Gradio.  :class:`ViewerData` opens an input the way the
command line does and keeps in memory only the :data:`INDEX_COLUMNS` of every
row (ids, sizes, Dice and the stored uncertainty summaries: about 120 bytes a
row, 80 MB for the 657,566 rows of the release) plus any metadata joined with
``--metadata``.  Rules on those columns are answered from the index; rules on
per-node or latent data (``image.q0.9``, ``node.*``, ``organ.*.max``,
``latent.max``) read ``landmarks_std`` / ``latent_sigma`` from the input for that
rule only.  A row's landmarks and std are read on demand, one row at a time
(from a cache: the 1,024-row group holding it).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from chexmask_u_tools.errors import FileReadError, InputError, RecordError
from chexmask_u_tools.images.resolver import ImageResolver, check_image_id
from chexmask_u_tools.schema import CANONICAL_SCHEMA, RLE_COLUMNS
from chexmask_u_tools.select.rules import LABEL_PREFIX, AnyRule, ColumnRule, apply_rules, parse_rules
from chexmask_u_tools.sources import canonical_source

__all__ = [
    "INDEX_COLUMNS",
    "metadata_spec",
    "ROW_COLUMN",
    "SORTS",
    "Browse",
    "ViewerData",
    "rules_from_text",
]

INDEX_COLUMNS: tuple[str, ...] = tuple(
    name for name, dtype in CANONICAL_SCHEMA.items() if not isinstance(dtype, pl.Array) and name not in RLE_COLUMNS.values()
)
"""The canonical columns the viewer keeps in memory for every row: the scalars (no arrays, no masks).

Examples
--------
>>> INDEX_COLUMNS[:7]
('source', 'image_id', 'frame', 'height', 'width', 'dice_rca_mean', 'dice_rca_max')
"""

ROW_COLUMN = "viewer_row"
"""The index column holding each row's 0-based position in the input (UInt32)."""

SORTS: dict[str, str] = {
    "sigma": "worst σ first (mean node σ, descending)",
    "dice": "best Dice first (Dice RCA mean, descending)",
    "random": "random, with a seed",
    "table": "table order",
}
"""Page orders: key -> what it means (nulls last in the first two)."""

BROWSE_CACHE = 4
"""Rule sets whose kept rows stay in memory (a page turn or a new sort reuses them)."""


def rules_from_text(text: str | Sequence[str] | None) -> list[AnyRule]:
    """The rules of the page's rules box: one rule per line (blank lines skipped), read by the toolkit's parser.

    Raises :class:`~chexmask_u_tools.errors.InputError` for a rule the parser
    cannot read (the same message as ``--rule`` and ``apply_rules``).

    Examples
    --------
    >>> [str(rule) for rule in rules_from_text("image.mean<6\\n\\n  organ.heart.mean<=10 ")]
    ['image.mean<6.0', 'organ.heart.mean<=10.0']
    """
    if text is None:
        return []
    lines = text.splitlines() if isinstance(text, str) else list(text)
    return parse_rules([line.strip() for line in lines if line.strip()])


def _threshold(rule: AnyRule) -> float | None:
    """The number a rule compares with (None for a text comparison)."""
    if isinstance(rule, ColumnRule):
        return float(rule.values[0]) if rule.op in ("<=", ">=", "<", ">") else None
    return rule.threshold


@dataclass(frozen=True)
class Browse:
    """The rows a set of rules keeps, out of the rows of the chosen sources.

    Attributes
    ----------
    rules:
        The parsed rules, in the order given.
    sources:
        The sources looked at (empty: every source).
    kept:
        The index rows (:data:`INDEX_COLUMNS`, metadata, :data:`ROW_COLUMN`) kept, in table order.
    total:
        Rows of the chosen sources before the rules.
    """

    rules: tuple[AnyRule, ...]
    sources: tuple[str, ...]
    kept: pl.DataFrame
    total: int

    def thresholds(self, column: str) -> list[float]:
        """The thresholds of the rules that compare ``column`` (to mark them on its histogram)."""
        marks = []
        for rule in self.rules:
            if isinstance(rule, ColumnRule):
                reads = {rule.column}
            else:
                reads = {rule.stored_column(organ) for organ in rule.organs} | {rule.stored_column(), rule.needs}
            value = _threshold(rule)
            if column in reads and value is not None:
                marks.append(value)
        return marks

    def page(self, sort: str = "sigma", *, seed: int = 0, page: int = 1, size: int = 50) -> pl.DataFrame:
        """Rows ``(page - 1) * size`` to ``page * size`` of the kept rows in the order ``sort`` (:data:`SORTS`).

        ``"random"`` is ``kept.sample(fraction=1.0, shuffle=True, seed=seed)``,
        the order the page's Python snippet gives.

        Examples
        --------
        >>> data = ViewerData.open("sample")
        >>> data.browse("image.mean<8").page("sigma", size=2)["node_sigma_mean"].cast(pl.Float64).round(2).to_list()
        [7.99, 7.98]
        """
        if sort not in SORTS:
            raise InputError(f"sort must be one of {tuple(SORTS)}, got {sort!r}")
        if isinstance(page, bool) or int(page) < 1 or isinstance(size, bool) or int(size) < 1:
            raise InputError(f"page and page size must be positive whole numbers, got page {page!r}, size {size!r}")
        rows = self.kept
        if sort == "sigma":
            rows = rows.sort("node_sigma_mean", descending=True, nulls_last=True, maintain_order=True)
        elif sort == "dice":
            rows = rows.sort("dice_rca_mean", descending=True, nulls_last=True, maintain_order=True)
        elif sort == "random":
            rows = rows.sample(fraction=1.0, shuffle=True, seed=int(seed))
        return rows.slice((int(page) - 1) * int(size), int(size))


class ViewerData:
    """An input (file, cache, mirror, Hub id or ``"sample"``) opened for browsing.

    Use :meth:`open`; the constructor takes what it prepared.

    Attributes
    ----------
    spec:
        The input as the user named it (shown in the page and in the equivalent commands).
    index:
        One row per table row: :data:`INDEX_COLUMNS`, the joined metadata and :data:`ROW_COLUMN`.
    images:
        The image roots (:class:`~chexmask_u_tools.images.resolver.ImageResolver`) or None.
    metadata:
        The ``--metadata`` specs joined to the index, as given.
    options:
        ``revision``, ``cache_dir`` and ``columns`` as given (for the equivalent commands).

    Examples
    --------
    >>> data = ViewerData.open("sample")
    >>> result = data.browse("image.mean<6")
    >>> result.kept.height, result.total
    (22, 200)
    >>> row = data.row("CheXpert", result.kept.filter(pl.col("source") == "CheXpert")["image_id"][0])
    >>> row["landmarks"].shape, row["frame"]
    ((120, 2), 'preprocessed')
    """

    def __init__(
        self,
        spec: str,
        parts: Sequence[tuple[int, pl.LazyFrame]],
        index: pl.DataFrame,
        *,
        images: ImageResolver | None = None,
        metadata: Sequence[str] = (),
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.parts = list(parts)
        self.index = index
        self.images = images
        self.metadata = tuple(metadata)
        self.options = dict(options or {})
        self.sources: list[str] = index["source"].unique(maintain_order=True).to_list()
        self._starts = [start for start, _ in self.parts]
        self._browsed: OrderedDict[tuple, Browse] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        spec: str | os.PathLike = "sample",
        *,
        images: Mapping[str, str | os.PathLike] | None = None,
        metadata: Sequence[str] = (),
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        columns: dict[str, str] | None = None,
        progress: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> ViewerData:
        """Open an input for the viewer.

        Parameters
        ----------
        spec:
            What ``open_table`` takes: ``"sample"``, a data file, a cache folder,
            a local mirror folder or a Hub dataset id.  A mirror or a Hub id is
            first converted into its parquet cache (or its complete cache is
            reused) exactly as ``chexmask-u cache`` does, also under
            ``HF_HUB_OFFLINE=1``; the viewer then reads the cache.
        images:
            Source -> image root folder (``--images SOURCE=DIR``).
        metadata:
            ``[SOURCE=]PATH`` specs of the sources' metadata (``--metadata``),
            joined to the index as ``chexmask-u export --metadata`` does.
        revision, cache_dir, columns:
            As for ``chexmask-u cache`` / ``filter`` (``--revision``, ``--cache-dir``, ``--column``).
        progress, say:
            Progress bars while a cache is built; ``say(text)`` receives the
            build's messages (the discovery report, a reused offline cache).

        Raises
        ------
        InputError, FileReadError, HubError
            As the readers do for a bad input, image root or metadata file.
        """
        from chexmask_u_tools.hub.cache import build_cache, read_manifest, shard_files
        from chexmask_u_tools.hub.inputs import input_kind, open_table
        from chexmask_u_tools.hub.location import open_location

        text = os.fspath(spec)
        kind = input_kind(text)
        if kind in ("mirror", "hub"):

            def event(what: str, detail: str) -> None:
                if say is not None and what in ("plan", "reuse", "wait"):
                    say(detail)

            place = open_location(text, revision=revision)
            cache = build_cache(place, cache_dir, progress=progress, on_event=event, columns=columns)
        elif revision is not None:
            raise InputError(f"revision= (--revision) applies to a Hub dataset id, but {text!r} is a {kind}")
        else:
            cache = Path(text) if kind == "cache" else None
        if cache is not None:
            shards = shard_files(cache)
            manifest = read_manifest(cache)
            parts, start = [], 0
            for shard in shards:
                parts.append((start, pl.scan_parquet(shard, schema=CANONICAL_SCHEMA)))
                start += manifest.shards[Path(shard).name].rows
        else:
            parts = [(0, open_table(text, columns=columns))]
        index = pl.concat([lf.select(INDEX_COLUMNS) for _, lf in parts]).with_row_index(ROW_COLUMN).collect()
        if metadata:
            index = _join_metadata(index, metadata)
        resolver = None
        if images:
            resolver = ImageResolver(dict(images))
            resolver.check_labels(index["source"].unique().to_list())
        options = {"revision": revision, "cache_dir": None if cache_dir is None else os.fspath(cache_dir), "columns": columns}
        return cls(text, parts, index, images=resolver, metadata=metadata, options=options)

    # ------------------------------------------------------------------ rules
    def browse(self, rules: str | Sequence[str | AnyRule] | None = None, sources: Sequence[str] | None = None) -> Browse:
        """Apply ``rules`` (text, one per line, or a list) to the rows of ``sources`` (None or empty: all).

        The kept rows are those :func:`~chexmask_u_tools.select.rules.apply_rules`
        keeps on the same table (``drop_image`` rules remove rows; the other
        actions keep them).  The last few results are kept in memory.

        Raises
        ------
        InputError, RecordError
            A rule the parser cannot read, a rule on a column the input lacks
            (metadata without ``--metadata``), rows lacking a rule's data under
            ``missing=raise``, or a source the input does not have: the
            messages of ``apply_rules``.
        """
        parsed = tuple(rules_from_text(rules) if isinstance(rules, str) or rules is None else parse_rules(rules))
        chosen = tuple(self._check_sources(sources))
        key = (tuple(str(rule) for rule in parsed), chosen)
        with self._lock:
            if key in self._browsed:
                self._browsed.move_to_end(key)
                return self._browsed[key]
        frame = self.index if not chosen else self.index.filter(pl.col("source").is_in(list(chosen)))
        stand_ins = self._stand_ins(parsed, set(frame.columns))
        table = frame.lazy()
        for outcome in self._raw_outcomes(stand_ins):
            table = table.join(outcome.lazy(), on=ROW_COLUMN, how="left", maintain_order="left")
        judged = [stand_ins.get(k, (rule, None))[0] for k, rule in enumerate(parsed)]
        try:
            kept = apply_rules(table, judged).select(frame.columns).collect()
        except RecordError as error:
            raise _named_after(error, stand_ins.values()) from None
        result = Browse(parsed, chosen, kept, frame.height)
        with self._lock:
            self._browsed[key] = result
            while len(self._browsed) > BROWSE_CACHE:
                self._browsed.popitem(last=False)
        return result

    def _stand_ins(self, rules: Sequence[AnyRule], present: set[str]) -> dict[int, tuple[ColumnRule, AnyRule]]:
        """Rule number -> (stand-in, rule) for each rule on per-node or latent data, which the index lacks.

        The stand-in is a rule on a number column holding the rule's outcome per
        row (1 passes, 0 fails, null: the row lacks the data), with the rule's
        action (``drop_organ`` becomes ``weight``: neither removes rows) and
        missing-data policy, so ``apply_rules`` keeps the same rows and reports
        missing data the same way.
        """
        out = {}
        for k, rule in enumerate(rules):
            column = rule.reads(present)
            if column in present or column not in CANONICAL_SCHEMA:
                continue  # answered from the index, or an absent column apply_rules reports
            action = "drop_image" if rule.action == "drop_image" else "weight"
            stand_in = ColumnRule(f"{LABEL_PREFIX}viewer outcome {k}", "==", 1.0, action=action, missing=rule.missing)
            out[k] = (stand_in, rule)
        return out

    def _raw_outcomes(self, stand_ins: Mapping[int, tuple[ColumnRule, AnyRule]]) -> list[pl.DataFrame]:
        """Each stand-in's column (Float32 outcome per row), computed one input part at a time.

        Reading ``landmarks_std`` part by part bounds the memory to one part (a
        cache shard); a single query over every shard made polars hold all of
        them (2 GB for the release).
        """
        if not stand_ins:
            return []
        needed = sorted({rule.needs for _, rule in stand_ins.values()})
        outcomes = [
            rule.passes(columns=set(needed)).cast(pl.Float32).alias(stand_in.column) for stand_in, rule in stand_ins.values()
        ]
        parts = [lf.select(needed).with_row_index(ROW_COLUMN, offset=start).select(ROW_COLUMN, *outcomes).collect() for start, lf in self.parts]
        return [pl.concat(parts)]

    def _check_sources(self, sources: Sequence[str] | None) -> list[str]:
        chosen = []
        for name in sources or ():
            match = name if name in self.sources else canonical_source(name)
            if match not in self.sources:
                raise InputError(f"source {name!r} is not in {self.spec!r}; its sources are {self.sources}")
            chosen.append(match)
        return sorted(set(chosen), key=self.sources.index)

    # ------------------------------------------------------------------ rows
    def locate(self, source: str, image_id: str) -> int:
        """The row number of ``(source, image_id)``.

        Raises
        ------
        InputError
            An unsafe id (absolute, ``..``, NUL ...: see
            :func:`~chexmask_u_tools.images.resolver.check_image_id`), a source
            the input lacks, or an id not in it (with ids that contain it).
        """
        check_image_id(image_id)
        (name,) = self._check_sources([source])
        hits = self.index.filter((pl.col("source") == name) & (pl.col("image_id") == image_id))
        if hits.height == 0:
            near = (
                self.index.filter((pl.col("source") == name) & pl.col("image_id").str.contains(image_id, literal=True))
                .get_column("image_id")
                .head(3)
                .to_list()
            )
            hint = f"; ids containing it: {near}" if near else ""
            raise InputError(f"no {name} row has image id {image_id!r} in {self.spec!r}{hint}")
        return int(hits[ROW_COLUMN][0])

    def row(self, source: str, image_id: str) -> dict[str, Any]:
        """One row: its index values (metadata included) plus ``landmarks`` and ``landmarks_std``.

        ``landmarks`` is (120, 2) float32 pixels of the row's frame (x, y);
        ``landmarks_std`` the same shape, or None when the row has no std.  The
        row is read from the input on demand and checked against the index.

        Raises
        ------
        InputError
            As :meth:`locate`.
        FileReadError
            The input no longer holds the row the index recorded (it changed
            while the viewer ran: restart the viewer).
        """
        number = self.locate(source, image_id)
        part = bisect_right(self._starts, number) - 1
        start, lf = self.parts[part]
        read = lf.slice(number - start, 1).select("source", "image_id", "landmarks", "landmarks_std").collect()
        values = self.index.row(number, named=True)
        if read.select("source", "image_id").rows() != [(values["source"], values["image_id"])]:
            raise FileReadError(f"{self.spec!r} changed since the viewer opened it (row {number} is not {image_id!r}); restart the viewer")
        values["landmarks"] = read["landmarks"].to_numpy()[0]
        std = read["landmarks_std"]
        values["landmarks_std"] = None if std.is_null()[0] else std.to_numpy()[0]
        return values

    def rows_of(self, kept: pl.DataFrame) -> list[tuple[int, pl.LazyFrame]]:
        """The input's canonical rows whose row numbers ``kept`` lists, as one lazy part per input part.

        Each part reads its shard (or the whole input) once; the rows keep table order.
        """
        numbers = kept[ROW_COLUMN]
        out = []
        for k, (start, lf) in enumerate(self.parts):
            stop = self.parts[k + 1][0] if k + 1 < len(self.parts) else self.index.height
            inside = numbers.filter((numbers >= start) & (numbers < stop))
            if inside.len():
                selected = lf.with_row_index(ROW_COLUMN, offset=start).filter(pl.col(ROW_COLUMN).is_in(inside.implode()))
                out.append((inside.len(), selected.select(list(CANONICAL_SCHEMA))))
        return out


def _named_after(error: RecordError, stand_ins) -> RecordError:
    """``error`` about a stand-in, told about the user's rule (see :meth:`ViewerData._stand_ins`)."""
    for stand_in, rule in stand_ins:
        said = f"rule {stand_in.name!r} needs {stand_in.needs}"
        if said in error.reason:
            return RecordError(error.reason.replace(said, f"rule {rule.name!r} needs {rule.needs}"), image_id=error.image_id, column=rule.needs)
    return error


def metadata_spec(spec: str) -> tuple[str | None, str]:
    """``[SOURCE=]PATH`` (``--metadata``) -> ``(source or None, path)``, read as ``chexmask-u export`` reads it.

    Examples
    --------
    >>> metadata_spec("nih=/data/nih"), metadata_spec("/data/a=b")
    (('nih', '/data/nih'), (None, '/data/a=b'))
    """
    name, equals, path = spec.partition("=")
    return (name, path) if equals and canonical_source(name) is not None else (None, spec)


def _join_metadata(index: pl.DataFrame, specs: Sequence[str]) -> pl.DataFrame:
    """``index`` with the ``--metadata`` tables joined as ``chexmask-u export`` joins them (prints the join report)."""
    import argparse

    from chexmask_u_tools.cli._args import apply_cohort_arguments

    cohort = argparse.Namespace(
        metadata=list(specs),
        duplicates="raise",
        matched_only=False,
        patient_split=False,
        official_split=False,
        per_image=False,
        fractions=None,
        seed=0,
    )
    return apply_cohort_arguments(index, cohort)


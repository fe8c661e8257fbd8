"""What ``tempo-lens analyze`` may write, and how: a manifest of its own output, never anyone else's files.

``analyze`` writes run folders ``OUT/runs/NAME`` and the report files ``OUT/report/{FINDINGS.md,
report.html, metrics.json}``, and records each one's checksum in ``OUT/.tempo-lens-analyze.json``.
On a later run it replaces what it wrote before (unchanged since), refuses anything else that
stands where it would write (a run folder from ``tempo-lens run``, an edited FINDINGS.md) unless
``--overwrite``, and never removes a file it did not write: other files in ``OUT/report`` (notes,
``screenshot.png``) stay, and a run folder holding foreign files is refused even with ``--overwrite``.
All checks happen before any model is loaded, and again at commit time under the folder's lock
(:func:`~tempo_lens.io.atomic.folder_lock`): a target that another process wrote after the check is
never replaced, and the manifest is re-read and updated under the lock, so concurrent writers neither
overwrite each other nor lose manifest entries. A run folder it wrote, still intact, from the same
config, model, dtype and backend is kept as it is (:meth:`OutputPlan.finished_run`): a rerun after an
interruption generates only what is missing. Files are written through
:func:`~tempo_lens.io.atomic.write_files` (fresh files in a temporary folder of ours, renamed into place).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..capture import CapturedRun
from ..errors import ExperimentFileError
from ..experiment import METADATA, Experiment, ExperimentConfig, check_can_write
from ..experiment.storage import intact_metadata, is_experiment_folder, save_runs
from ..io.atomic import Fingerprint, changed_since, fingerprint, folder_lock, write_files
from ..io.checksums import sha256_of
from ..io.records import MAX_RECORD_BYTES, clean, read_json, read_record
from ..io.writable import check_writable
from ..models.identity import fingerprint_of

MANIFEST = ".tempo-lens-analyze.json"
REPORT_FILES = ("FINDINGS.md", "report.html", "metrics.json")
MANIFEST_FIX = "delete it and run `tempo-lens analyze --overwrite` (analyze then rewrites its outputs)"


@dataclass
class Manifest:
    """The schema of ``.tempo-lens-analyze.json``: what analyze wrote (run digests, report file checksums)."""

    runs: dict[str, str | None] = field(default_factory=dict)
    report: dict[str, list[str]] = field(default_factory=dict)
    model: str | None = None  # the model a ``models/NAME`` folder's runs were made with


def run_digest(folder: Path) -> str | None:
    """The checksum an experiment folder's metadata records of itself (None when unreadable)."""
    try:
        data = read_json(folder / METADATA, METADATA, "re-run the experiment")
    except ExperimentFileError:
        return None
    digest = data.get("metadata_sha256") if isinstance(data, dict) else None
    return digest if isinstance(digest, str) else None


class OutputPlan:
    """The outputs of one ``analyze`` into ``out``: checks first (:meth:`check`), then writes that update the manifest."""

    def __init__(self, out: Path, overwrite: bool = False, model: str | None = None):
        self.out, self.overwrite, self.model = Path(out), overwrite, model
        self.path = self.out / MANIFEST
        self.manifest = self._read()
        self.seen: dict[Path, Fingerprint] = {}  # what stood at each target when it was checked

    def _read(self) -> Manifest:
        if not (self.path.exists() or self.path.is_symlink()):
            return Manifest()
        if self.path.is_symlink() or not self.path.is_file():
            raise ExperimentFileError(f"{self.path} is not a plain file; {MANIFEST_FIX}")
        return read_record(Manifest, self.path, "analyze manifest", MANIFEST_FIX, MAX_RECORD_BYTES)[0]

    def _update(self, change: Callable[[Manifest], None]) -> None:
        """Apply ``change`` to the manifest on disk, read again under the folder's lock (concurrent analyzes keep theirs)."""
        with folder_lock(self.out):
            fresh = self._read()
            change(fresh)
            write_files(self.out, {MANIFEST: json.dumps(clean(fresh), indent=1, sort_keys=True).encode("utf-8")})
            self.manifest = fresh

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    def run_folder(self, name: str) -> Path:
        return self.out / "runs" / name

    def _refuse(self, path: Path, what: str) -> ExperimentFileError:
        return ExperimentFileError(
            f"{path} already exists and {what}; pass --overwrite to replace it, or move it away "
            "(analyze replaces only what it wrote itself, and never deletes other files)"
        )

    def check_model(self) -> None:
        """A ``models/NAME`` folder holds one model's runs: another model's are not replaced without ``--overwrite``."""
        recorded = self.manifest.model
        if self.model is not None and recorded is not None and recorded != self.model and not self.overwrite:
            raise ExperimentFileError(
                f"{self.out} holds the runs of model {recorded!r}, not {self.model!r}; pass --overwrite to replace them, "
                "or move that folder away"
            )

    def _check_layout_folder(self, folder: Path) -> None:
        """One rule for ``OUT/runs`` and ``OUT/report``: a folder, or a link to one (followed, e.g. to another disk);
        a link that leads nowhere or to a file, and a file, are refused. What goes inside is never a link."""
        if folder.is_symlink() and not folder.is_dir():
            raise ExperimentFileError(f"{folder} is a link that does not lead to a folder; fix or remove the link")
        if folder.exists() and not folder.is_dir():
            raise ExperimentFileError(f"{folder} exists and is not a folder; move it away so analyze can write there")

    def check_run(self, name: str) -> None:
        self._check_layout_folder(self.out / "runs")
        target = self.run_folder(name)
        if not (target.exists() or target.is_symlink()):
            self.seen.setdefault(target, None)
            return
        recorded = self.manifest.runs.get(name)
        digest = run_digest(target)
        # ours: the digest analyze recorded; or a folder analyze recorded whose metadata is now unreadable (truncated,
        # deleted): damaged, so it is generated again, as any damaged run folder of ours is
        ours = recorded is not None and (digest == recorded or (digest is None and is_experiment_folder(target)))
        if not ours and not self.overwrite:
            raise self._refuse(target, "was not written by `tempo-lens analyze` (or was changed since)")
        seen = check_can_write(target, overwrite=True)  # an experiment folder only: foreign files are refused even now
        self.seen.setdefault(target, seen)

    def _report_problems(self) -> dict[Path, Fingerprint]:
        folder = self.report_dir
        self._check_layout_folder(folder)
        if (folder / METADATA).exists():
            raise ExperimentFileError(
                f"{folder} holds a saved experiment ({METADATA}), where the report goes; move it to runs/ under another name"
            )
        seen = {}
        for name in REPORT_FILES:
            path = folder / name
            seen[path] = fingerprint(path)
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file():
                raise ExperimentFileError(f"{path} exists and is not a plain file; move it away so the report can be written")
            if sha256_of(path) not in self.manifest.report.get(name, []) and not self.overwrite:
                raise self._refuse(path, "was not written by `tempo-lens analyze` (or was edited since)")
        return seen

    def check_report(self) -> None:
        for path, seen in self._report_problems().items():
            self.seen.setdefault(path, seen)

    def check(self, run_names: Sequence[str] = (), report: bool = True) -> None:
        targets = [self.path, *(self.run_folder(n) for n in run_names), *([self.report_dir / "FINDINGS.md"] if report else [])]
        for target in targets:  # before any model loads: a read-only output is refused now, not after the generation
            check_writable(target)
        self.check_model()
        for name in run_names:
            self.check_run(name)
        if report:
            self.check_report()

    def _conflict(self, path: Path) -> ExperimentFileError:
        return ExperimentFileError(
            f"{path} was written by another process while this analyze ran; nothing was replaced. Check what is "
            "there now, then run analyze again (with --overwrite to replace it)"
        )

    def finished_run(self, name: str, config: ExperimentConfig, backend: str, automatic_batch: bool = False) -> Path | None:
        """``runs/NAME`` when an earlier analyze wrote it (unchanged since, both checksums intact) from this config,
        model, dtype and backend, and the model's files are still the ones it was made with (the same fingerprint):
        its runs are kept instead of generated again. None otherwise, also when either fingerprint is unknown (runs
        saved before fingerprints, a model only the hub serves): they are regenerated. ``automatic_batch``: a config
        without a ``batch_size`` matches runs made at any batch size (the study runner picks one from free memory)."""
        target = self.run_folder(name)
        recorded = self.manifest.runs.get(name)
        if recorded is None or target.is_symlink() or not target.is_dir():
            return None
        data = intact_metadata(target)
        if data is None or data.get("metadata_sha256") != recorded or data.get("shard") is not None:
            return None
        wanted = json.loads(json.dumps(config.to_dict())), backend
        saved = data["config"]
        if automatic_batch and config.batch_size is None:  # the batch size the runner chose from free memory then
            saved = {**saved, "batch_size": None}
        if (saved, data["model"].get("backend")) != wanted:
            return None

        recorded_model = data["model"].get("fingerprint")  # None: saved before fingerprints, or of a model not on disk
        return target if recorded_model is not None and recorded_model == fingerprint_of(config.model) else None

    def save_run(self, experiment: Experiment, name: str) -> Path:
        experiment.path = self.save_runs(experiment, [experiment.runs], name)
        return experiment.path

    def save_runs(self, header: Experiment, groups: Iterable[Iterable[CapturedRun]], name: str) -> Path:
        """Write ``header`` with the runs of ``groups`` (one group in memory at a time) into ``runs/NAME``, and record it."""
        target = self.run_folder(name)
        if target not in self.seen:
            self.check(run_names=[name], report=False)
        if changed_since(target, self.seen[target]):  # early, with analyze's words; save_runs repeats it under the lock
            raise self._conflict(target)
        path = save_runs(header, groups, target, overwrite=True, expect=self.seen[target])
        self.seen[target] = fingerprint(path)
        digest = run_digest(path)

        def record(manifest: Manifest) -> None:
            manifest.runs[name] = digest
            if self.model is not None:
                manifest.model = self.model

        self._update(record)
        return path

    def write_report(self, files: dict[str, str]) -> Path:
        """Write ``files`` (name -> text) into the report folder, each atomically; other files there are kept."""
        folder = self.report_dir
        with folder_lock(self.out):
            self.manifest = self._read()
            now = self._report_problems()  # again, under the lock
            for path, fp in now.items():
                if self.seen.setdefault(path, fp) != fp:
                    raise self._conflict(path)
            folder.mkdir(parents=True, exist_ok=True)
            data = {name: text.encode("utf-8") for name, text in files.items()}
            new = {name: hashlib.sha256(blob).hexdigest() for name, blob in data.items()}
            # a kill between the renames leaves files the manifest still recognises (old and new checksums)
            self._update(lambda m: m.report.update({n: [*m.report.get(n, []), new[n]] for n in files}))
            write_files(folder, data)
            self._update(lambda m: m.report.update({n: [new[n]] for n in files}))
            for name in files:
                self.seen[folder / name] = fingerprint(folder / name)
        return folder

"""What ``tempo-lens analyze`` may write, and how: a manifest of its own output, never anyone else's files.

``analyze`` writes run folders ``OUT/runs/NAME`` and the report files ``OUT/report/{FINDINGS.md,
report.html, metrics.json}``, and records each one's checksum in ``OUT/.tempo-lens-analyze.json``.
On a later run it replaces what it wrote before (unchanged since), refuses anything else that
stands where it would write (a run folder from ``tempo-lens run``, an edited FINDINGS.md) unless
``--overwrite``, and never removes a file it did not write: other files in ``OUT/report`` (notes,
``screenshot.png``) stay, and a run folder holding foreign files is refused even with ``--overwrite``.
All checks happen before any model is loaded. Each file is written to a temporary name and renamed
into place (atomic per file).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from ..checksums import sha256_of
from ..errors import ExperimentFileError
from ..experiment import METADATA, Experiment, check_can_write, save_experiment

MANIFEST = ".tempo-lens-analyze.json"
REPORT_FILES = ("FINDINGS.md", "report.html", "metrics.json")
TMP_MARK = ".tmp-"


def run_digest(folder: Path) -> str | None:
    """The checksum an experiment folder's metadata records of itself (None when unreadable)."""
    try:
        return json.loads((folder / METADATA).read_text(encoding="utf-8")).get("metadata_sha256")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputPlan:
    """The outputs of one ``analyze`` into ``out``: checks first (:meth:`check`), then writes that update the manifest."""

    def __init__(self, out: Path, overwrite: bool = False):
        self.out, self.overwrite = Path(out), overwrite
        self.path = self.out / MANIFEST
        self.manifest = self._read()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return {"runs": {}, "report": {}}
        if not isinstance(data, dict):
            return {"runs": {}, "report": {}}
        return {"runs": dict(data.get("runs") or {}), "report": dict(data.get("report") or {})}

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{MANIFEST}{TMP_MARK}{os.getpid()}")
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

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

    def check_run(self, name: str) -> None:
        target = self.run_folder(name)
        if not (target.exists() or target.is_symlink()):
            return
        ours = self.manifest["runs"].get(name) is not None and run_digest(target) == self.manifest["runs"][name]
        if not ours and not self.overwrite:
            raise self._refuse(target, "was not written by `tempo-lens analyze` (or was changed since)")
        check_can_write(target, overwrite=True)  # an experiment folder only: foreign files are refused even now

    def check_report(self) -> None:
        folder = self.report_dir
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise ExperimentFileError(f"{folder} exists and is not a folder; move it away so the report can be written there")
        for name in REPORT_FILES:
            path = folder / name
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file():
                raise ExperimentFileError(f"{path} exists and is not a plain file; move it away so the report can be written")
            if sha256_of(path) not in self.manifest["report"].get(name, []) and not self.overwrite:
                raise self._refuse(path, "was not written by `tempo-lens analyze` (or was edited since)")

    def check(self, run_names: Sequence[str] = (), report: bool = True) -> None:
        for name in run_names:
            self.check_run(name)
        if report:
            self.check_report()

    def save_run(self, experiment: Experiment, name: str) -> Path:
        path = save_experiment(experiment, self.run_folder(name), overwrite=True)
        self.manifest["runs"][name] = run_digest(path)
        self._save()
        return path

    def _remove_dead_temporaries(self) -> None:
        """Temporary files a killed earlier write of ours left (their process is gone); live ones are left alone."""
        for name in REPORT_FILES:
            for leftover in self.report_dir.glob(f".{name}{TMP_MARK}*"):
                pid = leftover.name.rsplit(TMP_MARK, 1)[-1].split("-")[0]
                if pid.isdigit() and not _pid_alive(int(pid)) and leftover.is_file():
                    leftover.unlink(missing_ok=True)

    def write_report(self, files: dict[str, str]) -> Path:
        """Write ``files`` (name -> text) into the report folder, each atomically; other files there are kept."""
        folder = self.report_dir
        folder.mkdir(parents=True, exist_ok=True)
        self._remove_dead_temporaries()
        staged = {}
        try:
            for name, text in files.items():
                tmp = folder / f".{name}{TMP_MARK}{os.getpid()}"
                tmp.write_text(text, encoding="utf-8")
                staged[name] = tmp
            new = {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in files.items()}
            old = {name: self.manifest["report"].get(name, []) for name in files}
            self.manifest["report"].update({name: [*old[name], new[name]] for name in files})
            self._save()  # a kill between the renames leaves files the manifest still recognises
            for name, tmp in staged.items():
                os.replace(tmp, folder / name)
            self.manifest["report"].update({name: [new[name]] for name in files})
            self._save()
        finally:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
        return folder

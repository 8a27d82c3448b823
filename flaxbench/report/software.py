"""The software the report's runs used, from results.json's `flaxbench_version` and `versions`: what a methods
section names beside the hardware."""

from __future__ import annotations

from typing import Any

from flaxbench.report.collect import Run, RunGroup


def run_versions(run: Run) -> dict[str, str] | None:
    """{package: version} of one run, flaxbench first; None where its results.json does not record them."""
    versions = run.results.get("versions")
    if not isinstance(versions, dict) or not versions:
        return None
    recorded = {"flaxbench": run.results.get("flaxbench_version"), **versions}
    return {str(package): str(version) for package, version in recorded.items() if version is not None}


def software(groups: list[RunGroup]) -> dict[str, Any]:
    """{"versions": {package: {version: [row names]}}, "unrecorded": [row names]} over every run of `groups`.

    A package appears in the order runs first name it; a row is listed under each version one of its runs used.
    """
    versions: dict[str, dict[str, list[str]]] = {}
    unrecorded: list[str] = []
    for group in groups:
        for run in group.runs:
            found = run_versions(run)
            if found is None:
                unrecorded += [] if group.name in unrecorded else [group.name]
                continue
            for package, version in found.items():
                rows = versions.setdefault(package, {}).setdefault(version, [])
                rows += [] if group.name in rows else [group.name]
    return {"versions": versions, "unrecorded": unrecorded}


def _names(rows: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in rows)


def software_lines(groups: list[RunGroup]) -> list[str]:
    """A Markdown paragraph naming each package's version, and which rows used which where the runs differ."""
    used = software(groups)
    if not used["versions"]:
        return ["", "Software: not recorded (results.json files written before flaxbench recorded versions)."]
    same, differing = [], []
    for package, by_version in used["versions"].items():
        if len(by_version) == 1:
            same.append(f"{package} {next(iter(by_version))}")
        else:
            differing.append(f"{package} " + " or ".join(f"{version} ({_names(rows)})"
                                                           for version, rows in by_version.items()))
    text = "Software (results.json's `versions`): " + ", ".join(same + differing) + "."
    if differing:
        text += (" The runs used different versions of " + ", ".join(d.split(" ", 1)[0] for d in differing)
                 + ": numbers and times may differ with them as well as with the models.")
    if used["unrecorded"]:
        text += f" Not recorded by {_names(used['unrecorded'])} (runs from before flaxbench recorded versions)."
    return ["", text]

"""`fp4bench merge A.json B.json ... -o ALL.json`: join the documents of a sharded sweep into one.

The shards of one sweep (`run --shard I/N` on several machines, e.g. a Slurm job array) come from the same
GPU model and the same fp4bench commit; documents that differ in either are refused with the reason unless
`--force` (a mixed document would compare every case against the wrong baseline). Cases keep the order of
the unsharded plan (each shard records where its cases stand in it); a case present in two documents is an
error, since one sweep runs each case once. The result is an ordinary results document that `report` and
`compare` accept.
"""

from __future__ import annotations

import click

from ..case import hashable_key
from ..compare import environment_summary
from ..errors import InputError
from ..results import ResultsFileError, load_results, make_document, write_results


def _identity(doc: dict) -> dict:
    env = environment_summary(doc)
    return {"GPU": env["gpu"], "commit": env["commit"]}


def merge_documents(docs: list[tuple[str, dict]], force: bool = False) -> dict:
    """One document from several shard documents (path, loaded document); raises InputError on conflicts."""
    first_path, first = docs[0]
    reference = _identity(first)
    for path, doc in docs[1:]:
        ident = _identity(doc)
        for what in ("GPU", "commit"):
            if ident[what] != reference[what] and not force:
                raise InputError(f"{path} has {what} {ident[what]}, {first_path} has {reference[what]}: "
                                 f"not shards of one sweep (--force to merge anyway)")
    positions, cases, seen = {}, [], {}
    for path, doc in docs:
        for pos, key in ((doc.get("settings") or {}).get("shard") or {}).get("positions", []):
            positions[hashable_key(key)] = pos
        for case in doc["cases"]:
            if case.key in seen:
                raise InputError(f"case {case.kernel} {case.format} {case.shape} is in both {seen[case.key]} "
                                 f"and {path}")
            seen[case.key] = path
            cases.append(case)
    order = {id(c): i for i, c in enumerate(cases)}
    cases.sort(key=lambda c: (positions.get(c.key, len(positions) + order[id(c)]),))
    settings = dict(first.get("settings") or {})
    settings["shard"] = None
    settings["merged_from"] = [path for path, _ in docs]
    env = dict(first.get("environment") or {})
    env["gpus"] = [g for _, d in docs for g in (d.get("environment") or {}).get("gpus") or []]
    return make_document(env, settings, cases)


@click.command()
@click.argument("documents", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The merged document.")
@click.option("--force", is_flag=True, help="Merge documents from different GPU models or commits anyway.")
def merge(documents, output, force):
    """Join the results documents of a sharded sweep (run --shard I/N) into one."""
    docs = []
    for path in documents:
        try:
            docs.append((path, load_results(path)))
        except ResultsFileError as e:
            raise InputError(str(e)) from None
    merged = merge_documents(docs, force)
    write_results(output, merged)
    click.echo(f"{len(merged['cases'])} case(s) from {len(docs)} document(s) in {output}")

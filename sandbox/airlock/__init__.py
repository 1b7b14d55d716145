"""The export airlock's automated checks: what an applicant asks to take out of a
sandbox is checked before a human reviews it.

One entry point, :func:`check_export`, takes the files and an :class:`ExportContext`
(the security level's :class:`AirlockRules`, an index of the granted views' rows built
with :func:`build_row_index`, names from the source data, the privacy budget left) and
returns a :class:`CheckReport`: every :class:`Finding` with its check, place and reason,
and what each file was understood as. Nothing here imports the control plane; the
caller records the report and routes the export.

Once an export is released, :func:`released_tables` gives its frequency tables as
:class:`ReleasedTable` records for the gateway to keep; given back in
``ExportContext.releases``, later exports are compared with them
(:func:`differencing_findings`).

::

    files.py         what a file is (content, not name) and its text encoding
    tables.py        CSV, Parquet, Arrow, Excel, JSON and tables written in text
    documents.py     notebooks, HTML, SVG, the non-pixel parts of PNG and JPEG
    archives.py      zip, tar and gzip within depth, count and expansion limits
    encodings.py     base64 and hex runs inside text and cells
    normalise.py     canonical values and their hashes
    rowindex.py      fingerprints of the granted views' rows
    checks.py        identifiers, names, pseudonyms, row-level data
    cells.py         small cells, dominance, zero and full cells, degrees of freedom
    differencing.py  released frequency tables, and exports compared with them
    policy.py        policies/airlock.yaml, merged with policies/disclosure.yaml
    export.py        check_export and the DP budget
"""

from sandbox.airlock.contracts import (
    CheckName,
    CheckReport,
    FileKind,
    FileSummary,
    Finding,
    Severity,
)
from sandbox.airlock.differencing import ReleasedTable, differencing_findings, released_tables
from sandbox.airlock.export import ExportContext, check_export, dp_budget_findings
from sandbox.airlock.policy import AirlockPolicy, AirlockPolicyError, AirlockRules, load_airlock
from sandbox.airlock.rowindex import RowIndex, RowIndexError, build_row_index

__all__ = [
    "AirlockPolicy",
    "AirlockPolicyError",
    "AirlockRules",
    "CheckName",
    "CheckReport",
    "ExportContext",
    "FileKind",
    "FileSummary",
    "Finding",
    "ReleasedTable",
    "RowIndex",
    "RowIndexError",
    "Severity",
    "build_row_index",
    "check_export",
    "differencing_findings",
    "dp_budget_findings",
    "load_airlock",
    "released_tables",
]

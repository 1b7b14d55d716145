"""Use, feedback and reporting (R14).

- :mod:`gateway.reports.feedback`: applicants' feedback after using a grant's data
  (quality, use, effect), for their organization, the operator, the regulators and the
  providers whose data it is about;
- :mod:`gateway.reports.operations`: the operator's periodic operation report, counted
  with SQL aggregates over a period of China-time days;
- :mod:`gateway.reports.files`: the report as CSV and PDF;
- :mod:`gateway.reports.service`: who may read the report, and the ledger entry of every
  report handed out as a file.
"""

"""Use, feedback and reporting (R14), and the evaluations (R15).

- :mod:`gateway.reports.feedback`: applicants' feedback after using a grant's data
  (quality, use, effect), for their organization, the operator, the regulators and the
  providers whose data it is about;
- :mod:`gateway.reports.operations`: the operator's periodic operation report, counted
  with SQL aggregates over a period of China-time days;
- :mod:`gateway.reports.contributions`: the providers' and datasets' data contribution
  (quality, use, value) over a period, with transparent scores;
- :mod:`gateway.reports.evaluation`: the operator's annual evaluation (the operation
  report's figures for a year, month by month) and the rules of the authority's verdict;
- :mod:`gateway.reports.charts`: bar and line charts, as inline SVG and in the PDFs;
- :mod:`gateway.reports.files`: the reports as CSV and PDF (:mod:`gateway.reports.fonts`:
  the PDFs' Chinese font, parsed once per process);
- :mod:`gateway.reports.service`: who may read the reports and give the verdict, the
  ledger entry of every report handed out as a file and of every verdict.
"""

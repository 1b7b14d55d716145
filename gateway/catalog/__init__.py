"""The data catalog: entries (R4) and their reviewed revisions (R5), uploads with their
quality reports, and quality objections with working-day deadlines (R6)."""

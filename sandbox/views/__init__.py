"""The view builder: what an applicant may see of raw data (desensitized, aggregated, or
differentially private views), under the treatments ``policies/treatments.yaml`` allows."""

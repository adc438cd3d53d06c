"""What a run produces for a reader: official scores, lesion measurements, the evaluation summary, the HTML report,
run comparisons and pictures."""

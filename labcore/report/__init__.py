"""Pages from the store: building the reports (papermill, nbconvert), rendering, provenance shown, diff and
verify of builds, the browser check."""

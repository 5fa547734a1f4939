-- Held-out predicted probability of an above-median immune marker per patient, from one sequence's 45 DRFs, with the label it is scored against, per evaluation (the rows the Fig. 5 AUCs are computed from).
CREATE OR REPLACE VIEW results_marker_scores AS SELECT * FROM {{source:results_marker_scores}};

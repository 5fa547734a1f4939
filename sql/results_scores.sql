-- Held-out predicted probability of long survival per patient and feature set (Fig. 4b, 4c).
CREATE OR REPLACE VIEW results_scores AS SELECT * FROM {{source:results_scores}};

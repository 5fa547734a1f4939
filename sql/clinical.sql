-- Clinical data per patient (seed 000, Table 1): age, gender, grade, overall survival.
CREATE OR REPLACE VIEW clinical AS SELECT * FROM {{source:clinical}};

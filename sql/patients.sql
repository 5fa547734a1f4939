-- One row per ingested patient: where its volume lives in the lake, its grid and where it came from.
CREATE OR REPLACE VIEW patients AS SELECT * FROM {{source:patients}};

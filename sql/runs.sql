-- The run log: one row per stage run, so every number in the lake can be traced to how it was made.
CREATE OR REPLACE VIEW runs AS SELECT * FROM {{source:runs}};

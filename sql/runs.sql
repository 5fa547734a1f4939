-- The run log: one row per stage run (its latest status: running, ok, failed or dead), so every number in the lake can be traced to how it was made.
CREATE OR REPLACE VIEW runs AS
SELECT * FROM {{source:runs}}
QUALIFY row_number() OVER (PARTITION BY run_id
                           ORDER BY (status <> 'running') DESC, ended_at DESC NULLS LAST) = 1;

-- The feature catalogue (schemas/features.csv): name, family, IBSI code, unit, paper name, presets.
CREATE OR REPLACE VIEW feature_catalogue AS SELECT * FROM {{catalogue}};

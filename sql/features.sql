-- Feature values, long: patient, sequence, encoder, layer, map, feature, value, run id.
CREATE OR REPLACE VIEW features AS SELECT * FROM {{source:features}};

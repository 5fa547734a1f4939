-- depends: genomic_expression
-- Gene expression, long: sample, patient, sample type, gene, TPM.
CREATE OR REPLACE VIEW expression AS
SELECT sample_id, patient_id, sample_type, gene, tpm FROM genomic_expression;

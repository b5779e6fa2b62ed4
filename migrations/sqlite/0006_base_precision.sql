-- The precision a job holds its frozen base model in (fp32, or the projections block-quantized: nf4, int4, int8), and
-- the one each fine-tuned model is served on: an adapter is fitted to the base it was trained with. Older rows: fp32.

ALTER TABLE fine_tuning_jobs ADD COLUMN base_precision TEXT NOT NULL DEFAULT 'fp32' CHECK (base_precision IN ('fp32', 'nf4', 'int4', 'int8'));
ALTER TABLE fine_tuned_models ADD COLUMN base_precision TEXT NOT NULL DEFAULT 'fp32' CHECK (base_precision IN ('fp32', 'nf4', 'int4', 'int8'));

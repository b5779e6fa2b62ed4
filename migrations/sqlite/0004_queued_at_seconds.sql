-- queued_at was written in milliseconds while every other *_at is in seconds: store seconds, as the code now writes.
-- Only values too large to be seconds (past the year 5000) are converted, so running this on seconds changes nothing.
UPDATE fine_tuning_jobs SET queued_at = queued_at / 1000 WHERE queued_at > 100000000000;

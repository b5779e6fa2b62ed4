-- Which node (a `serve` or `worker` process) holds a job it validates or trains, and until when (unix ms): the holder
-- renews the lease while it lives; another node takes over a job whose lease ended (its holder died) from the last
-- resume point. NULL while nobody holds the job (queued, paused, finished).

ALTER TABLE fine_tuning_jobs ADD COLUMN owner TEXT;
ALTER TABLE fine_tuning_jobs ADD COLUMN lease_expires_at INTEGER;
CREATE INDEX fine_tuning_jobs_by_owner ON fine_tuning_jobs (owner) WHERE owner IS NOT NULL;

-- API keys (stored as sha256 hashes) and uploaded files, each owned by a project.

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,
  -- The first characters of the key, shown by `keys list` so a user can tell keys apart.
  key_prefix TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
) STRICT;

CREATE TABLE files (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  filename TEXT NOT NULL,
  purpose TEXT NOT NULL,
  status TEXT NOT NULL,
  status_details TEXT
) STRICT;

-- Listing is per project by created_at; every index entry also holds the rowid, which breaks ties.
CREATE INDEX files_by_project ON files (project, created_at);

-- Uploads (the Uploads API): a file sent in parts, assembled into an ordinary File on completion.

CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  -- The size the client announced; the parts named at completion must add up to it.
  bytes INTEGER NOT NULL,
  filename TEXT NOT NULL,
  mime_type TEXT NOT NULL,
  purpose TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  -- A pending upload past this time is expired: it takes no parts and cannot complete.
  expires_at INTEGER NOT NULL,
  -- `expires_after.seconds` of the File it becomes, counted from that File's creation.
  file_expires_after INTEGER,
  -- 'completing' is internal (the wire says 'pending'): one completion at a time, and neither cancel nor expiry
  -- may remove parts that are being assembled. A crash mid-completion is set back to 'pending' at start-up.
  status TEXT NOT NULL CHECK (status IN ('pending', 'completing', 'completed', 'cancelled', 'expired'))
) STRICT;

-- Parts live only while their upload is pending: completion, cancel and expiry remove them (and their blobs).
CREATE TABLE upload_parts (
  id TEXT PRIMARY KEY,
  upload_id TEXT NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX upload_parts_by_upload ON upload_parts (upload_id);
-- The expiry sweep finds pending uploads by status and time.
CREATE INDEX uploads_by_status ON uploads (status, expires_at);

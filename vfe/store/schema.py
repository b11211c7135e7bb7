"""The database schemas: each back-end's ordered migrations, and SQL both use.

A migration is applied once, in order, and never edited after it is released; a change
is a new one at the end. The SQLite and PostgreSQL lists differ in number (PostgreSQL came
later and starts at SQLite's fourth state) but leave the same tables and columns.
"""

from __future__ import annotations

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs and frames.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        video_source TEXT NOT NULL,
        source_type TEXT NOT NULL,
        source_path TEXT NOT NULL,
        interval REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        total_frames INTEGER NOT NULL DEFAULT 0,
        processed_frames INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        finished_at REAL,
        error_message TEXT,
        duration REAL,
        fps REAL,
        width INTEGER,
        height INTEGER,
        codec TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE TABLE frames (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        timestamp REAL NOT NULL,
        target_time REAL NOT NULL,
        filename TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE INDEX frames_by_job_time ON frames (job_id, timestamp);
    CREATE UNIQUE INDEX frames_by_job_name ON frames (job_id, filename);
    CREATE INDEX frames_by_created ON frames (created_at);
    """,
    # 2: sampling/output options and the chosen plan, as JSON.
    """
    ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE jobs ADD COLUMN plan TEXT;
    """,
    # 3: progress of jobs whose frames are not known ahead (scene mode), 0-1.
    """
    ALTER TABLE jobs ADD COLUMN progress REAL;
    """,
    # 4: Idempotency-Key of POST /video-job: the job it made and a digest of its request.
    """
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        created_at REAL NOT NULL
    );
    CREATE INDEX idempotency_by_job ON idempotency (job_id);
    """,
    # 5: stored objects (frames by SHA-256, sources), the jobs that hold them, reuse keys.
    # Frames made before are held by their jobs (their files are moved by the app).
    """
    ALTER TABLE jobs ADD COLUMN reuse_key TEXT;
    CREATE INDEX jobs_by_reuse ON jobs (reuse_key, finished_at) WHERE reuse_key IS NOT NULL;
    CREATE TABLE blobs (key TEXT PRIMARY KEY, size INTEGER NOT NULL, released_at REAL);
    CREATE INDEX blobs_released ON blobs (released_at) WHERE released_at IS NOT NULL;
    CREATE TABLE holds (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE INDEX holds_by_key ON holds (key);
    INSERT OR IGNORE INTO holds (job_id, key)
        SELECT job_id, 'frames/' || substr(checksum, 1, 2) || '/' || checksum || '.' ||
               substr(filename, instr(filename, '.') + 5) FROM frames;
    INSERT OR IGNORE INTO blobs (key, size)
        SELECT 'frames/' || substr(checksum, 1, 2) || '/' || checksum || '.' ||
               substr(filename, instr(filename, '.') + 5), size_bytes FROM frames;
    """,
    # 6: each frame's quality metrics and how it was chosen, as JSON.
    """
    ALTER TABLE frames ADD COLUMN quality TEXT;
    """,
    # 7: the webhook outbox (see WEBHOOKS).
    """
    CREATE TABLE webhooks (
        job_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        job TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL NOT NULL,
        leased_until REAL,
        last_error TEXT,
        delivered_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX webhooks_due ON webhooks (due_at) WHERE status = 'pending';
    """,
    # 8: settled webhooks of deleted jobs, which earlier versions kept, go (see WEBHOOKS).
    """
    DELETE FROM webhooks WHERE status <> 'pending'
        AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = webhooks.job_id);
    """,
)

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, frames and idempotency keys, as SQLite's migrations 1-4 leave them.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        video_source TEXT NOT NULL,
        source_type TEXT NOT NULL,
        source_path TEXT NOT NULL,
        interval DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        total_frames INTEGER NOT NULL DEFAULT 0,
        processed_frames INTEGER NOT NULL DEFAULT 0,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        error_message TEXT,
        duration DOUBLE PRECISION,
        fps DOUBLE PRECISION,
        width INTEGER,
        height INTEGER,
        codec TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        options TEXT NOT NULL DEFAULT '{}',
        plan TEXT,
        progress DOUBLE PRECISION
    );
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE TABLE frames (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL,
        target_time DOUBLE PRECISION NOT NULL,
        filename TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        checksum TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE INDEX frames_by_job_time ON frames (job_id, timestamp);
    CREATE UNIQUE INDEX frames_by_job_name ON frames (job_id, filename);
    CREATE INDEX frames_by_created ON frames (created_at);
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX idempotency_by_job ON idempotency (job_id);
    """,
    # 2: stored objects (frames by SHA-256, sources), the jobs that hold them, reuse keys.
    # Frames made before are held by their jobs (their files are moved by the app).
    """
    ALTER TABLE jobs ADD COLUMN reuse_key TEXT;
    CREATE INDEX jobs_by_reuse ON jobs (reuse_key, finished_at) WHERE reuse_key IS NOT NULL;
    CREATE TABLE blobs (key TEXT PRIMARY KEY, size BIGINT NOT NULL, released_at DOUBLE PRECISION);
    CREATE INDEX blobs_released ON blobs (released_at) WHERE released_at IS NOT NULL;
    CREATE TABLE holds (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE INDEX holds_by_key ON holds (key);
    INSERT INTO holds (job_id, key)
        SELECT job_id, 'frames/' || substr(checksum, 1, 2) || '/' || checksum || '.' ||
               substr(filename, strpos(filename, '.') + 5) FROM frames
        ON CONFLICT DO NOTHING;
    INSERT INTO blobs (key, size)
        SELECT 'frames/' || substr(checksum, 1, 2) || '/' || checksum || '.' ||
               substr(filename, strpos(filename, '.') + 5), size_bytes FROM frames
        ON CONFLICT DO NOTHING;
    """,
    # 3: each frame's quality metrics and how it was chosen, as JSON.
    """
    ALTER TABLE frames ADD COLUMN quality TEXT;
    """,
    # 4: the webhook outbox (see WEBHOOKS).
    """
    CREATE TABLE webhooks (
        job_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        job TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at DOUBLE PRECISION NOT NULL,
        leased_until DOUBLE PRECISION,
        last_error TEXT,
        delivered_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX webhooks_due ON webhooks (due_at) WHERE status = 'pending';
    """,
    # 5: settled webhooks of deleted jobs, which earlier versions kept, go (see WEBHOOKS).
    """
    DELETE FROM webhooks WHERE status <> 'pending'
        AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = webhooks.job_id);
    """,
)

# The webhook outbox: one row per job that ended with a webhook URL, written in the
# transaction of its final status. No foreign key to ``jobs``: a job deleted right after
# it was cancelled is still announced, from ``job`` (its columns as it ended, JSON). A
# settled row goes with its job; one still pending goes when it settles after.
# ``attempts`` counts the attempts claimed; ``leased_until`` is when a claimed attempt's
# owner is taken for dead and the attempt may be claimed again.
WEBHOOKS = "job_id, url, job, status, attempts, due_at, created_at, last_error, delivered_at"

# A frame's columns after its job id, as a copy for another job (created with it); the
# copy's creation time comes between them and ``quality``, a parameter in each driver's
# own style.
COPIED = "idx, timestamp, target_time, filename, size_bytes, checksum, width, height"

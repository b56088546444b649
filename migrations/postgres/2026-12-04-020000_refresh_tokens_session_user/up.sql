-- SQLite only: PostgreSQL's planner has statistics and picks the session index.
SELECT 1;

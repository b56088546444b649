-- PostgreSQL only: one SQLite process keeps its brute-force state in memory.
SELECT 1;

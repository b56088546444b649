-- Statements on one session's refresh tokens name the session and its user.
-- Without planner statistics SQLite may pick the user_id index for them and
-- read every token of the user (a logout took 20 ms at 200,000 tokens); an
-- index on both is the better match for both terms, whatever the data.
CREATE INDEX refresh_tokens_session_user ON refresh_tokens(session_id, user_id);
DROP INDEX refresh_tokens_session_id;

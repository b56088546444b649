DROP INDEX account_tokens_used_at;

-- The index that lets deleting a webhook find each message's attempts. It was added to
-- 0003_webhooks.sql after that migration had shipped, so databases migrated in between never got
-- it; this creates it where it is missing, and every database converges on the same schema.
CREATE INDEX IF NOT EXISTS webhook_attempts_by_message ON webhook_attempts (message_seq);

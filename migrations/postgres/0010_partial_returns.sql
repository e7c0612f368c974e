-- Partial returns: an allocation or a redemption may be returned in several parts, each under
-- its own request id, so the one-reversal-per-original index gives way to a plain index that
-- finds an original's returns. Concurrent returns of one original are serialised by the ledger
-- transaction (the user's row is locked before the original's record is read), not by an index.
DROP INDEX requests_one_reversal;
CREATE INDEX requests_returns ON requests (company_id, original_request_id) WHERE kind = 'REVERSE';

-- An order's allocations that are no longer live, instead of all of them. Every allocation under
-- an order id (cashback on a purchase) wrote an entry into two indexes over order ids, each on a
-- random page: the unique `requests_live_order` (the one live allocation of an order) and
-- `requests_by_order` (every allocation of the order, with its aliases). The second is read only
-- to find an order's latest allocation once none is live, and an allocation's aliases. A live
-- allocation is found through `requests_live_order`; so this index keeps only the rest: those
-- reversed or canceled (a row enters it when its state changes) and aliases (no state). The
-- condition is written without an IN list (SQLite builds a temporary B-tree for a list of three).
DROP INDEX requests_by_order;
CREATE INDEX requests_ended_by_order ON requests (company_id, event, order_id, created_at)
 WHERE order_id IS NOT NULL AND (state IS NULL OR NOT (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO'));

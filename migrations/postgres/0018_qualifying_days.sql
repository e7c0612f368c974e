-- A rolling tier window counted by day: a member's qualifying coins kept as one sum per UTC day
-- (days since 1970-01-01) instead of one row per credit and per return. Every allocation of a
-- company with a ROLLING scheme inserted a row into `qualifying_coins`, and summing a member's
-- window read every credit they had in it. Now an allocation adds to the member's row for the
-- day (one row per member and active day) and a window sums at most its days. The window counts
-- whole days, today included, so a day's sum is all it needs. Existing moves are carried forward
-- in place, summed by member and day (a day before 1970 rounded down, as the application does).
-- The old table is locked first, so no move an older process writes meanwhile is left behind
-- between the copy and the drop: such a process waits, then fails on the dropped table.
LOCK TABLE qualifying_coins IN ACCESS EXCLUSIVE MODE;

CREATE TABLE qualifying_days (
    user_id     TEXT NOT NULL,
    day         BIGINT NOT NULL,
    company_id  TEXT NOT NULL,
    coins       BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);

INSERT INTO qualifying_days (user_id, day, company_id, coins)
SELECT user_id, floor(earned_at / 86400000.0)::BIGINT AS day, MIN(company_id), SUM(coins)::BIGINT
  FROM qualifying_coins
 GROUP BY user_id, floor(earned_at / 86400000.0)::BIGINT;

DROP TABLE qualifying_coins;

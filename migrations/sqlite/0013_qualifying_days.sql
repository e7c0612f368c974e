-- A rolling tier window counted by day: a member's qualifying coins kept as one sum per UTC day
-- (days since 1970-01-01) instead of one row per credit and per return. Every allocation of a
-- company with a ROLLING scheme wrote a row into `qualifying_coins`, a table clustered by member
-- (a random page per allocation), and summing a member's window read every credit they had in
-- it. Now an allocation adds to the member's row for the day (one row per member and active day)
-- and a window sums at most its days. The window counts whole days, today included, so a day's
-- sum is all it needs. Existing moves are carried forward in place, summed by member and day
-- (the day of a move before 1970 rounded down, as the application rounds it).
CREATE TABLE qualifying_days (
    user_id     TEXT NOT NULL,
    day         INTEGER NOT NULL,
    company_id  TEXT NOT NULL,
    coins       INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
) WITHOUT ROWID;

INSERT INTO qualifying_days (user_id, day, company_id, coins)
SELECT user_id, day, MIN(company_id), SUM(coins)
  FROM (SELECT user_id, company_id, coins,
               CASE WHEN earned_at >= 0 THEN earned_at / 86400000 ELSE (earned_at + 1) / 86400000 - 1 END AS day
          FROM qualifying_coins)
 GROUP BY user_id, day;

DROP TABLE qualifying_coins;

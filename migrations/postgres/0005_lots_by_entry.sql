-- A reversal looks up the lot its allocation opened; without this index that was a scan of
-- every lot. Entry ids only grow, so each insert lands on the index's last page.
CREATE INDEX lots_by_entry ON lots (entry_id);

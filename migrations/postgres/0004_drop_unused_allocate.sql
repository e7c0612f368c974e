-- coins_allocate (0002) decided allocations item by item inside PostgreSQL. It was replaced by
-- coins_allocate_set / coins_allocate_one (0003) and nothing calls it any more; drop it so the
-- allocation rules exist only where they are used (src/domain/allocate.rs and 0003).
DROP FUNCTION IF EXISTS coins_allocate(TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[]);
